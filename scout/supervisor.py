"""The supervisor: one OS process tree per task, started, watched, limited, stopped, reaped.

Runs in the server. A task's processes (all on Linux):

    server ── zygote ── leader ── worker ── Claude CLI ── tool processes
              (warm)    (tini)    (SDK)

The zygote, leader and worker run scout/zygote.py (read its docstring for why a warm
zygote and a tini-like leader); this module is the server's side of the zygote's pipe:
it writes a WorkerSpec (scout/taskspec.py) per task and reads back pids and exit codes.
Finding, identifying and killing a task's processes is scout/proctree.py.

Worker processes follow an explicit state machine, after supervisord's ProcessStates:
STARTING (asked of the zygote) → RUNNING (pid known) → STOPPING (being killed) → EXITED,
and, for a warm session, RUNNING ⇄ IDLE (between turns, waiting for its session's next
task); changed only by WorkerProc.change_state. Task statuses live in the store (their
rules in scout/vocab.py); the worker owns the happy ending (completed, or failed with
Claude Code's own error) and the supervisor every other one.

Warm sessions: a worker that finished a turn says "idle" over the warm socket
(taskspec.warm_address; the worker's side is scout/warm.py) and stays, with its Claude
Code, as its session's warm process. The dispatcher hands the session's next task to it
when the task's options need nothing the live process lacks (taskspec.warm_key), and
starts it cold otherwise. A warm process's tree keeps the tag (and cgroup) of the task it
was started for: its run_id, which the log records for every task it runs. Idle warm
processes do not count against SCOUT_MAX_WORKERS; at most SCOUT_MAX_WARM are kept, the
least recently used ended first.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import IO, Any, Callable

import psutil

from . import containment, sandbox, workspace
from .config import Settings
from .proctree import identity_matches, kill_tree
from .store import EventLog, StoreBusy, StoreError, Task
from .taskspec import QUIT, TAG, WorkerSpec, listen_unix, same_user, warm_address, warm_key, zygote_address
from .vault import SECRET_NAMES
from .vocab import ACTIVE, CANCELLED, FAILED, NODE_LOST, PENDING, RUNNING

log = logging.getLogger("scout.supervisor")

# What Claude Code may see of Scout's environment: its own settings, credentials and
# gateways, and what any program needs. Everything else (SCOUT_API_TOKEN above all)
# stays out of reach of the agent's tools. SCOUT_WORKER_ENV adds names.
ENV_ALLOW = ("HOME", "PATH", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR",
             "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
             "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
             "IS_SANDBOX", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME")
ENV_ALLOW_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "LC_", "AWS_", "GOOGLE_", "CLOUD_ML_", "VERTEX_",
                      "DISABLE_", "MCP_", "OTEL_")


class ProcessState(StrEnum):
    """Where a task's leader process is, as the supervisor sees it (after supervisord's
    ProcessStates). Not a task status: a task can be "running" while its process is
    STOPPING."""

    STARTING = "STARTING"   # asked of the zygote, pid not known yet
    RUNNING = "RUNNING"     # pid and start time known (or adopted from the last run); a task
    IDLE = "IDLE"           # warm: its task is done, it waits for its session's next one
    STOPPING = "STOPPING"   # being killed by stop(), a limit or an eviction; they own the ending
    EXITED = "EXITED"       # gone; its ending settled


STARTING, PROC_RUNNING, IDLE = ProcessState.STARTING, ProcessState.RUNNING, ProcessState.IDLE
STOPPING, EXITED = ProcessState.STOPPING, ProcessState.EXITED

# The legal changes of a worker process's state; WorkerProc.change_state checks them.
PROCESS_TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    STARTING: frozenset({PROC_RUNNING, STOPPING, EXITED}),
    PROC_RUNNING: frozenset({IDLE, STOPPING, EXITED}),
    IDLE: frozenset({PROC_RUNNING, STOPPING, EXITED}),
    STOPPING: frozenset({EXITED}),
    EXITED: frozenset(),
}

# How long a warm worker has to take a task handed to it, and how long an interrupted
# turn has to end before the interrupt becomes a stop.
HAND_OVER_SECONDS = 5.0
INTERRUPT_SECONDS = 10.0


def worker_env(settings: Settings, source: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment every worker and its Claude Code inherit."""
    source = dict(os.environ if source is None else source)
    extra = set(settings.worker_env_pass)
    env = {k: v for k, v in source.items()
           if k in ENV_ALLOW or k in extra or k.startswith(ENV_ALLOW_PREFIXES)}
    env.pop(TAG, None)
    for name in SECRET_NAMES:  # never, not even when SCOUT_WORKER_ENV names one
        env.pop(name, None)
    return env


# ---------------------------------------------------------------------------------
# In the server process


@dataclass
class WorkerProc:
    """One task's leader process as the supervisor sees it (warm: one session's, across tasks)."""

    task_id: str  # the task it runs; while IDLE, the one it ran last
    state: ProcessState = STARTING
    pid: int | None = None
    started: float | None = None
    adopted: bool = False
    exit_code: int | None = None
    spawned: Future = field(default_factory=Future)
    stop_asked: bool = False  # a stop requested by another node is being carried out
    run_id: str = ""  # the task it was started for: its processes' tag and cgroup name
    session_id: str | None = None
    key: str | None = None  # taskspec.warm_key of the options its Claude Code was started with
    link: WarmLink | None = None  # its worker's warm socket, once the worker said hello
    idle_since: float = 0.0

    def __post_init__(self) -> None:
        self.run_id = self.run_id or self.task_id

    def change_state(self, to: ProcessState) -> bool:
        """Move to `to` if PROCESS_TRANSITIONS allows it; returns whether it moved. The one
        place a worker's state changes; callers hold the supervisor's lock."""
        if to not in PROCESS_TRANSITIONS[self.state]:
            return False
        self.state = to
        return True


@dataclass
class ZygoteLink:
    """The server's connection to its zygote (scout/zygote.py), over the zygote's unix socket.

    `child` is set when this server started the zygote, and so is its parent and can reap
    it; a zygote left by a crashed server is used as it is and never told to exit."""

    sock: socket.socket
    reader: IO[bytes]
    pid: int
    hello: dict[str, Any]
    child: subprocess.Popen | None = None
    closed: bool = False

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        self.closed = True
        _hang_up(self.sock, self.reader)


class WarmLink:
    """The server's side of one warm worker's socket (the worker's is scout/warm.py)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self._send_lock = threading.Lock()
        self.answers: dict[str, Future] = {}  # task id -> the worker's "took"/"refused"

    def send(self, message: dict[str, Any]) -> bool:
        """Tell the worker something; False if it cannot hear."""
        try:
            with self._send_lock:
                self.sock.sendall((json.dumps(message) + "\n").encode())
            return True
        except OSError:
            return False

    def hand_over(self, task_id: str) -> Future:
        """Ask the worker to run `task_id`; the future holds True (took) or an error (refused)."""
        answer: Future = Future()
        self.answers[task_id] = answer
        if not self.send({"op": "run", "task_id": task_id}):
            answer.set_exception(OSError("the warm worker is not connected"))
        return answer

    def close(self) -> None:
        for answer in self.answers.values():
            if not answer.done():
                answer.set_exception(OSError("the warm worker went away"))
        _hang_up(self.sock, self.reader)


class Supervisor:
    """Starts pending tasks up to the worker cap, watches them, stops them, enforces limits."""

    TICK = 0.2

    def __init__(self, store: EventLog, settings: Settings,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.on_change = on_change or (lambda task_id: None)
        self._workers: dict[str, WorkerProc] = {}  # task id -> the process running it
        self._warm: dict[str, WorkerProc] = {}  # session id -> its idle warm process, least recent first
        self._by_pid: dict[int, WorkerProc] = {}
        self._leaders: dict[int, dict[str, Any]] = {}  # the zygote's live leaders when we connected
        self._warm_listener: socket.socket | None = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._zygote: ZygoteLink | None = None
        self._zygote_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.last_error: str | None = None  # the dispatcher's latest tick failed: why
        self._ticks = 0
        self._tick_done = threading.Condition()
        # A cgroup per task where one can be made (SCOUT_CONTAINMENT=subreaper: never).
        self.containment = (containment.probe() if settings.containment == "auto"
                            else containment.Containment("subreaper", reason="SCOUT_CONTAINMENT=subreaper"))
        # On a shared (PostgreSQL) log this server is one node among several: it claims,
        # adopts and kills only what is its own, and hands stops of others' tasks over.
        self.node = settings.node_id
        self.mine: str | None = self.node if store.shared else None

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> dict[str, int]:
        """Reconcile what the last run left behind, then start dispatching. Returns a summary.

        The zygote comes first: one left by a crashed server still runs that server's tasks,
        and its hello says which leaders live and how the others ended."""
        with self._zygote_lock:
            link = self._zygote = self._open_zygote()
        summary = self.reconcile(ended={e["pid"] for e in link.hello.get("exited", [])},
                                 alive={e["pid"] for e in link.hello.get("leaders", [])})
        self._take_over(link)
        self.store.on_stop_request(self._stop_requested)
        # Warm workers (of this run, or left by the last one) say hello here.
        self._warm_listener = listen_unix(warm_address(self.settings.db, self.node), 16)
        for target, name in ((self._dispatch_loop, "scout-dispatch"), (self._accept_warm, "scout-warm")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return summary

    def shutdown(self, mode: str | None = None) -> None:
        """Stop dispatching. mode 'detach' leaves running tasks to be adopted at the next
        start; 'cancel' stops them first. Default: the SCOUT_SHUTDOWN setting."""
        mode = mode or self.settings.shutdown
        self._closing.set()
        self._wake.set()
        if self._warm_listener is not None:
            _close_listener(self._warm_listener)
        if mode == "cancel":
            with self._lock:
                ids = list(self._workers)
                warm = list(self._warm.values())
            threads = [threading.Thread(target=self.stop, args=(tid,)) for tid in ids]
            threads += [threading.Thread(target=self._end_warm, args=(p,)) for p in warm]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:  # detached warm workers say hello again to the next server
            links = [p.link for p in self._by_pid.values() if p.link is not None]
        for warm_link in links:
            warm_link.close()
        with self._zygote_lock:
            link, self._zygote = self._zygote, None
        if link is None:
            return
        # A zygote this server started, with nothing left to run, is told to exit and reaped.
        # Otherwise it stays: it reaps the detached tasks and tells the next server how they
        # ended (a zygote left by a crashed server is never told to exit: orphaned, it would
        # stay a zombie where init does not reap).
        if link.child is not None and not self.running_count() and not self.warm_count() and not link.closed:
            try:
                link.send(QUIT)
                link.child.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("the zygote did not exit: %s", exc)
        link.close()

    def reconcile(self, ended: set[int] | None = None, alive: set[int] | None = None) -> dict[str, int]:
        """Settle every unfinished task found in the log at start-up.

        Pending tasks simply wait for the dispatcher. A running task whose leader is
        still alive (same pid *and* start time *and* tag) is adopted; one that never got
        a process is queued again; one whose process is gone has failed. A task whose
        leader is in `ended` (pids of leaders whose exit status the zygote kept) is left to
        _take_over, which settles it with that status. A leader in `alive` (pids of live,
        unreaped children of the zygote: no other process can have their pid) is the task's
        without comparing start times, which two processes compute from a boot time that
        moves with the clock. (A task run warm has the leader of its session's first task.)
        """
        summary = {"adopted": 0, "requeued": 0, "lost": 0, "cancelled": 0}
        for task in self.store.tasks_in(ACTIVE, node=self.mine):
            if ended and task.worker_pid in ended:
                continue
            ours = alive is not None and task.worker_pid in alive
            if ours or identity_matches(task.worker_pid, task.worker_started, task.tree_id):
                if task.stop_requested:
                    self._kill(task.id, task.worker_pid, self.settings.stop_grace, task.worker_started,
                               tree=task.tree_id)
                    workspace.log_task_changes(self.store, task.id)
                    self.store.transition(task.id, CANCELLED)
                    summary["cancelled"] += 1
                    continue
                proc = WorkerProc(task.id, PROC_RUNNING, task.worker_pid, task.worker_started, adopted=True,
                                  run_id=task.tree_id, session_id=task.session_id, key=warm_key(task.options))
                proc.spawned.set_result(task.worker_pid)
                with self._lock:
                    self._workers[task.id] = proc
                    if proc.pid is not None:
                        self._by_pid[proc.pid] = proc
                summary["adopted"] += 1
                continue
            self._kill(task.id, None, self.settings.stop_grace, tree=task.tree_id)
            if task.worker_pid is None and not task.stop_requested:
                self.store.requeue(task.id)
                summary["requeued"] += 1
                continue
            workspace.log_task_changes(self.store, task.id)
            if task.stop_requested:
                self.store.transition(task.id, CANCELLED)
                summary["cancelled"] += 1
            else:
                self.store.transition(task.id, FAILED,
                                      error="worker lost: its process was gone when Scout restarted")
                summary["lost"] += 1
        return summary

    # -- queries ---------------------------------------------------------------------

    def running_count(self) -> int:
        """Processes running a task (what SCOUT_MAX_WORKERS caps)."""
        with self._lock:
            return len(self._workers)

    def warm_count(self) -> int:
        """Idle warm processes, waiting for their session's next task."""
        with self._lock:
            return len(self._warm)

    def warm_sessions(self) -> list[dict[str, Any]]:
        """Each idle warm process: its session, leader pid, and seconds idle."""
        now = time.monotonic()
        with self._lock:
            return [{"session_id": sid, "pid": p.pid, "idle_s": round(now - p.idle_since, 1)}
                    for sid, p in self._warm.items()]

    def worker(self, task_id: str) -> WorkerProc | None:
        with self._lock:
            return self._workers.get(task_id)

    def zygote_alive(self) -> bool:
        return self._zygote is not None and not self._zygote.closed

    def wake(self) -> None:
        """Tell the dispatcher there may be work (a new task, a freed slot)."""
        self._wake.set()

    # -- stopping --------------------------------------------------------------------

    def stop(self, task_id: str) -> str | None:
        """Stop a task and wait until its processes are gone. Returns its final status
        (unchanged if it had already finished), or None if there is no such task."""
        task = self.store.get_task(task_id)
        if task is None:
            return None
        if task.finished:
            return task.status
        self.store.request_stop(task_id, by=self.node)
        if self.store.transition(task_id, CANCELLED, only_from=(PENDING,)):
            self.on_change(task_id)
            return CANCELLED
        with self._lock:
            proc = self._workers.get(task_id)
            if proc is None:  # its warm process may have said "idle" a moment before the stop
                proc = next((p for p in self._warm.values() if p.task_id == task_id), None)
            if proc is not None:
                proc.change_state(STOPPING)
        if proc is None and self.mine and task.node not in (None, self.mine):
            return self._stop_elsewhere(task)
        pid = None
        if proc is not None:
            try:
                pid = proc.spawned.result(timeout=10)
            except Exception:  # noqa: BLE001 - spawning failed; nothing of it can be running
                pid = None
        self._kill(task_id, pid, self.settings.stop_grace, proc.started if proc is not None else None,
                   tree=proc.run_id if proc is not None else task.tree_id)
        workspace.log_task_changes(self.store, task_id)
        self.store.transition(task_id, CANCELLED)
        self._forget(proc)
        self.on_change(task_id)
        final = self.store.get_task(task_id)
        return final.status if final else CANCELLED

    def _kill(self, task_id: str, pid: int | None, grace: float, started: float | None = None,
              tree: str | None = None) -> None:
        """kill_tree of the process tree `tree` (by default the task's own; a warm one's is
        its first task's) with its cgroup, which then goes (it is empty by then)."""
        tree = tree or task_id
        cgroup = self.containment.task_cgroup(tree)
        kill_tree(tree, pid, grace, started, cgroup=cgroup)
        containment.remove(cgroup)
        self._sweep(task_id)

    def _sweep(self, task_id: str) -> None:
        """What a sandboxed command killed midway left in the task's directories."""
        task = self.store.get_task(task_id)
        if task is None or not task.options.get("sandboxed"):
            return
        ws = workspace.Workspace.from_dict(task.options.get("workspace"))
        cwd = task.options.get("cwd") or ""
        since = (task.started_at or task.created_at) - 1  # file times are coarser than ours
        sandbox.sweep_placeholders([workspace.run_dir(ws, cwd), ws.path or ""], since)

    def _stop_elsewhere(self, task: Task) -> str:
        """A task another node runs: its node ends it, told by the stop request's NOTIFY;
        wait for the ending to reach the log. (If that node is lost, the task fails "node
        lost" within the lease instead: only its own node may say its processes are gone.)"""
        deadline = time.monotonic() + self.settings.stop_grace + self.settings.node_lease + 10
        while time.monotonic() < deadline:
            current = self.store.get_task(task.id)
            if current is None or current.finished:
                return current.status if current else CANCELLED
            time.sleep(0.05)
        current = self.store.get_task(task.id)
        return current.status if current else CANCELLED

    def _stop_requested(self, task_id: str, by: str | None) -> None:
        """Another node asked for a stop (NOTIFY scout_stop): stop the task if it runs here."""
        with self._lock:
            proc = self._workers.get(task_id)
            if by == self.node or proc is None or proc.state == STOPPING or proc.stop_asked:
                return
            proc.stop_asked = True
        self._thread(self.stop, task_id)

    def stop_in_background(self, task_ids: list[str]) -> None:
        """Stop tasks one after another without making the caller wait."""
        def stop_all() -> None:
            for task_id in task_ids:
                self.stop(task_id)
        self._thread(stop_all)

    def interrupt_in_background(self, task_ids: list[str]) -> None:
        """on_busy=interrupt: end these tasks without making the caller wait. A turn running
        in a warm-capable worker is interrupted through the SDK (the task is cancelled and
        the process stays, warm); anything else is stopped."""
        def interrupt_all() -> None:
            for task_id in task_ids:
                if not self._interrupt(task_id):
                    self.stop(task_id)
        self._thread(interrupt_all)

    def _interrupt(self, task_id: str) -> bool:
        """Ask the worker to interrupt the task's turn and wait for the task to end; whether
        it did (False: no worker line to ask, or the turn did not end in time)."""
        with self._lock:
            proc = self._workers.get(task_id)
            link = proc.link if proc is not None and proc.state == PROC_RUNNING else None
        if link is None or not link.send({"op": "interrupt", "task_id": task_id}):
            return False
        deadline = time.monotonic() + INTERRUPT_SECONDS
        while time.monotonic() < deadline:
            task = self.store.get_task(task_id)
            if task is None or task.finished:
                return True
            time.sleep(0.05)
        return False

    def end_session(self, session_id: str) -> None:
        """End the session's warm process, if it has one (the session was deleted, its
        worktree discarded, its history lost)."""
        with self._lock:
            proc = self._warm.get(session_id)
        if proc is not None:
            self._end_warm(proc)

    def _forget(self, proc: WorkerProc | None) -> None:
        """Drop a process from every index (only where it is still the one indexed)."""
        if proc is not None:
            with self._lock:
                proc.change_state(EXITED)
                if self._workers.get(proc.task_id) is proc:
                    del self._workers[proc.task_id]
                if proc.session_id is not None and self._warm.get(proc.session_id) is proc:
                    del self._warm[proc.session_id]
                if proc.pid is not None and self._by_pid.get(proc.pid) is proc:
                    del self._by_pid[proc.pid]
                link, proc.link = proc.link, None
            if link is not None:
                link.close()
        self._wake.set()

    # -- the dispatcher --------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        last_limits = 0.0
        while not self._closing.is_set():
            self._wake.wait(self.TICK)
            self._wake.clear()
            if self._closing.is_set():
                break
            try:
                self._start_what_fits()
                self._watch_adopted()
                if time.monotonic() - last_limits > 1.0:
                    last_limits = time.monotonic()
                    self._enforce_limits()
                    self._check_warm()
                self.last_error = None
            except StoreError as exc:
                self.last_error = str(exc)
                log.error("dispatcher: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the dispatcher must survive anything
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("dispatcher failed; retrying")
            with self._tick_done:
                self._ticks += 1
                self._tick_done.notify_all()

    def fresh_error(self, wait: float = 1.0) -> str | None:
        """Why the dispatcher fails, as of a tick begun after this call (waiting up to `wait`
        seconds for one): a problem already gone (a full log that a prune has just freed,
        say) is not reported because of a tick that ran before."""
        if self.last_error is None or self._closing.is_set():
            return self.last_error
        with self._tick_done:
            target = self._ticks + 2  # the tick under way may have begun before this call
            self._wake.set()
            self._tick_done.wait_for(lambda: self._ticks >= target or self._closing.is_set(), wait)
        return self.last_error

    def _start_what_fits(self) -> None:
        free = self.settings.max_workers - self.running_count()
        if free <= 0 or self._closing.is_set():
            return
        try:
            claimed = self.store.claim(free, node=self.node)  # now running, as far as the log knows
        except StoreBusy:
            return  # another process holds the lock: the tasks stay pending, claimed at a later tick
        for task in claimed:
            if not self._hand_over(task):
                self._make_room()
                self._spawn(task)

    def _spawn(self, task: Task) -> None:
        self.on_change(task.id)
        proc = WorkerProc(task.id, session_id=task.session_id, key=warm_key(task.options))
        with self._lock:
            self._workers[task.id] = proc
        spec = WorkerSpec.from_settings(task.id, self.settings, self.log_path(task.id),
                                       cgroup=self.containment.task_cgroup(task.id))
        try:
            self._send_to_zygote(spec)
            proc.spawned.result(timeout=10)
        except Exception as exc:  # noqa: BLE001
            self._forget(proc)
            self.store.transition(task.id, FAILED, error=f"could not start worker: {exc}")
            self.on_change(task.id)

    # -- warm sessions ---------------------------------------------------------------

    def _hand_over(self, task: Task) -> bool:
        """Run a claimed task in its session's warm process, if it has one that can take it;
        whether it did. A warm process that cannot (other options; gone) is ended."""
        with self._lock:
            proc = self._warm.pop(task.session_id, None)
            if proc is None:
                return False
            link = proc.link
            if link is None or proc.key != warm_key(task.options) or not proc.change_state(PROC_RUNNING):
                usable = False  # another cwd, mode, tools...: it is ended, the task starts cold
            else:
                last, proc.task_id = proc.task_id, task.id
                self._workers[task.id] = proc
                usable = True
        if not usable:
            self._thread(self._end_warm, proc)
            return False
        assert link is not None and proc.pid is not None
        try:
            # Recorded before the worker hears of it: a crash in between leaves a task whose
            # recorded leader lives (adopted) rather than one that runs with no record.
            self.store.set_worker(task.id, proc.pid, proc.started or 0.0, run_id=proc.run_id)
            link.hand_over(task.id).result(timeout=HAND_OVER_SECONDS)
        except Exception as exc:  # noqa: BLE001 - refused, gone, or the log failed: start cold
            log.warning("warm hand-over of %s failed (%s); starting it cold", task.id, exc)
            with self._lock:
                proc.change_state(STOPPING)
                if self._workers.get(task.id) is proc:
                    del self._workers[task.id]
                proc.task_id = last  # ending it must not settle the task, which now starts cold
            self._end(proc, 0.2)  # before the cold start: a worker that took it after all must not run it too
            return False
        self.on_change(task.id)
        return True

    def _went_idle(self, proc: WorkerProc, task_id: str) -> None:
        """The worker finished `task_id` and waits, warm, for its session's next task."""
        with self._lock:
            if proc.task_id != task_id or not proc.change_state(IDLE):
                return  # being stopped, or a stale report
            if self._workers.get(task_id) is proc:
                del self._workers[task_id]
            assert proc.session_id is not None
            older = self._warm.pop(proc.session_id, None)  # a session has one warm process
            self._warm[proc.session_id] = proc
            proc.idle_since = time.monotonic()
            evict = [older] if older is not None and older is not proc else []
            if self.settings.session_idle <= 0:
                evict.append(proc)
            excess = len(self._warm) - self.settings.max_warm
            evict += [p for p in self._warm.values() if p not in evict][:max(0, excess)]
        for old in evict:
            self._thread(self._end_warm, old)
        self._wake.set()  # its slot is free
        self.on_change(task_id)

    def _make_room(self) -> None:
        """Before a cold start: end the least recently used warm process when the machine is
        short of memory (under a tenth of it, or 512 MB, available)."""
        with self._lock:
            lru = next(iter(self._warm.values()), None)
        if lru is None:
            return
        memory = psutil.virtual_memory()
        if memory.available < max(memory.total // 10, 512 * 1024 * 1024):
            self._end_warm(lru)

    def _end_warm(self, proc: WorkerProc) -> None:
        """End an idle warm process (evicted, its session gone, options changed, shutdown)."""
        with self._lock:
            if not proc.change_state(STOPPING):
                return  # handed a task, being stopped, or gone
            if proc.session_id is not None and self._warm.get(proc.session_id) is proc:
                del self._warm[proc.session_id]  # no longer counted, nor handed anything
        self._end(proc, 0.5)

    def _end(self, proc: WorkerProc, grace: float) -> None:
        """Kill a process being stopped (STOPPING) and settle the task it last ran, if that
        task never recorded its own ending."""
        self._kill(proc.task_id, proc.pid, grace, proc.started, tree=proc.run_id)
        task = self.store.get_task(proc.task_id)
        if task is not None and task.status in ACTIVE and task.worker_pid == proc.pid:
            workspace.log_task_changes(self.store, task.id)
            if task.stop_requested:
                self.store.transition(task.id, CANCELLED)
            else:
                self.store.transition(task.id, FAILED, error="its warm worker ended before the task did")
        self._forget(proc)
        self.on_change(proc.task_id)

    def _check_warm(self) -> None:
        """End warm processes whose session is gone or can no longer be continued (deleted
        by retention, say, which does not pass through end_session), or has gone on without
        them (a follow-up claimed by another node, on a shared log)."""
        with self._lock:
            warm = list(self._warm.items())
        for session_id, proc in warm:
            session = self.store.get_session(session_id)
            tasks = self.store.session_tasks(session_id) if session is not None else []
            moved_on = any(t.num > _num(tasks, proc.task_id) and t.status != PENDING and t.worker_pid != proc.pid
                           for t in tasks)
            if session is None or not session.can_continue or moved_on:
                self._thread(self._end_warm, proc)

    def _accept_warm(self) -> None:
        """Hear warm workers: each connection is read by a thread of its own."""
        listener = self._warm_listener
        assert listener is not None
        while not self._closing.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # closed by shutdown
            if not same_user(sock):
                sock.close()
                continue
            link = WarmLink(sock)
            threading.Thread(target=self._read_warm, args=(link,), name="scout-warm-line", daemon=True).start()

    def _read_warm(self, link: WarmLink) -> None:
        proc: WorkerProc | None = None
        try:
            for raw in link.reader:
                msg = json.loads(raw)
                event = msg.get("event")
                if event == "hello":
                    proc = self._warm_hello(link, msg)
                    if proc is None:
                        link.send({"op": "end"})
                        break
                elif event == "idle" and proc is not None:
                    self._went_idle(proc, msg.get("task_id") or "")
                elif event in ("took", "refused"):
                    answer = link.answers.pop(msg.get("task_id") or "", None)
                    if answer is not None and not answer.done():
                        if event == "took":
                            answer.set_result(True)
                        else:
                            answer.set_exception(RuntimeError(f"refused: {msg.get('reason')}"))
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                if proc is not None and proc.link is link:
                    proc.link = None
            link.close()
            self.store.close_thread()

    def _warm_hello(self, link: WarmLink, msg: dict[str, Any]) -> WorkerProc | None:
        """A worker said hello: its process (found, or adopted when it is an idle warm one of
        the last run's, still a child of our zygote), or None if it is not ours to keep."""
        pid, run_id = msg.get("pid"), msg.get("run_id") or ""
        if not isinstance(pid, int):
            return None
        with self._lock:
            proc = self._by_pid.get(pid)
            if proc is None and msg.get("idle") and self.settings.session_idle > 0 and not self._closing.is_set():
                leader = self._leaders.get(pid)
                if leader is None or leader.get("task_id") != run_id or not msg.get("session_id"):
                    return None
                proc = WorkerProc(msg.get("task_id") or run_id, PROC_RUNNING, pid, leader.get("started"),
                                  run_id=run_id, session_id=msg["session_id"], key=msg.get("key"))
                proc.spawned.set_result(pid)
                self._by_pid[pid] = proc
                self._workers.setdefault(proc.task_id, proc)
            if proc is None or proc.run_id != run_id:
                return None
            proc.link, proc.session_id, proc.key = link, msg.get("session_id"), msg.get("key")
        if msg.get("idle"):
            self._went_idle(proc, msg.get("task_id") or "")
        return proc

    def log_path(self, task_id: str) -> str:
        return os.path.join(self.settings.log_dir, f"{task_id}.log")

    def stderr_tail(self, task_id: str, limit: int = 2000) -> str:
        try:
            with open(self.log_path(task_id), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - limit))
                return fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def _watch_adopted(self) -> None:
        """Adopted leaders are not our children: notice their end by polling."""
        with self._lock:
            adopted = [p for p in self._by_pid.values() if p.adopted and p.state not in (STOPPING, EXITED)]
        for proc in adopted:
            if not identity_matches(proc.pid, proc.started, proc.run_id):
                self._on_exit(proc, None)

    def _enforce_limits(self) -> None:
        now = time.time()
        with self._lock:
            procs = [p for p in self._workers.values() if p.state == PROC_RUNNING]
        for proc in procs:
            task = self.store.get_task(proc.task_id)
            if task is None or task.status not in ACTIVE:
                if self.mine and task is not None and task.error == NODE_LOST:
                    # Another node took this one for lost and failed the task while its worker
                    # still runs here: nothing it does can reach the log any more.
                    self._thread(self._fail, proc, NODE_LOST)
                continue
            if task.stop_requested and self.mine:  # a stop from another node whose NOTIFY was missed
                self._stop_requested(task.id, None)
                continue
            reason = None
            if task.started_at and now - task.started_at > self.settings.task_timeout:
                reason = f"time limit reached: the task ran longer than {self.settings.task_timeout:g} s"
            elif task.status == RUNNING:
                last = self.store.last_event_time(task.id) or task.started_at or now
                if now - last > self.settings.idle_timeout:
                    reason = (f"idle timeout: Claude Code sent nothing for "
                              f"{self.settings.idle_timeout:g} s")
            if reason:
                self._thread(self._fail, proc, reason)

    def _thread(self, fn: Callable[..., object], *args: Any) -> None:
        """Run fn in a short-lived thread that closes its database connection when done."""
        def run() -> None:
            try:
                fn(*args)
            finally:
                self.store.close_thread()
        threading.Thread(target=run, daemon=True).start()

    def _fail(self, proc: WorkerProc, reason: str) -> None:
        with self._lock:
            if not proc.change_state(STOPPING):
                return  # stop() or the exit already owns this ending
        self._kill(proc.task_id, proc.pid, self.settings.stop_grace, proc.started, tree=proc.run_id)
        workspace.log_task_changes(self.store, proc.task_id)
        self.store.transition(proc.task_id, FAILED, error=reason)
        self._forget(proc)
        self.on_change(proc.task_id)

    # -- the zygote ------------------------------------------------------------------

    def _open_zygote(self) -> ZygoteLink:
        """Connect to the database's zygote: the one a crashed server left, or a new one."""
        address = zygote_address(self.settings.db, self.node)
        try:
            return self._connect(address, None)
        except (FileNotFoundError, ConnectionRefusedError):
            pass  # none there (a stale socket file is replaced by the new zygote)
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        code = (f"import sys; sys.path.insert(0, {pkg_parent!r}); "
                f"from scout.zygote import zygote_main; zygote_main({address!r})")
        # A session of its own: it outlives this server, and no terminal's signal reaches it.
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, env=worker_env(self.settings), cwd="/",
                                 start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                return self._connect(address, child)
            except (FileNotFoundError, ConnectionRefusedError):
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the zygote did not start (exit status {child.poll()})") from None
                time.sleep(0.02)

    def _connect(self, address: str, child: subprocess.Popen | None) -> ZygoteLink:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(address)
            sock.settimeout(120)  # the zygote says hello once it has imported the SDK
            reader = sock.makefile("rb")
            hello = json.loads(reader.readline() or b"{}")
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        if hello.get("event") != "hello":
            sock.close()
            raise ConnectionRefusedError("no hello from the zygote")
        return ZygoteLink(sock, reader, hello["pid"], hello, child)

    def _take_over(self, link: ZygoteLink) -> None:
        """Start hearing the zygote: the leaders it still runs are watched through it (their
        real exit statuses), and the exits it kept while no server listened are settled."""
        with self._lock:
            for leader in link.hello.get("leaders", []):
                self._leaders[leader["pid"]] = leader
                proc = self._by_pid.get(leader["pid"])
                if proc is not None:
                    proc.adopted = False  # its exit is reported; no polling
        for report in link.hello.get("exited", []):
            self._exit_reported(report)
        thread = threading.Thread(target=self._read_zygote, args=(link,), name="scout-zygote", daemon=True)
        thread.start()

    def _ensure_zygote(self) -> ZygoteLink:
        with self._zygote_lock:
            if self._zygote is not None and not self._zygote.closed:
                return self._zygote
            link = self._zygote = self._open_zygote()
        self._take_over(link)
        return link

    def _send_to_zygote(self, spec: WorkerSpec) -> None:
        link = self._ensure_zygote()
        with self._zygote_lock:
            link.send(spec.to_json())

    def _read_zygote(self, link: ZygoteLink) -> None:
        try:
            for raw in link.reader:
                msg = json.loads(raw)
                if msg["event"] == "spawned":
                    self._spawned(msg)
                elif msg["event"] == "exited":
                    self._exit_reported(msg)
        except (OSError, ValueError):
            pass
        link.closed = True
        # The zygote is gone. Its leaders live on, re-parented: watch them by polling.
        with self._lock:
            for proc in list(self._workers.values()) + list(self._warm.values()):
                if proc.pid is not None and not proc.adopted:
                    proc.adopted = True
                elif proc.pid is None and not proc.spawned.done():
                    proc.spawned.set_exception(RuntimeError("the zygote exited"))

    def _spawned(self, msg: dict[str, Any]) -> None:
        with self._lock:
            proc = self._workers.get(msg["task_id"])
            if proc is None:
                return
            proc.pid, proc.started = msg["pid"], msg["started"]
            proc.change_state(PROC_RUNNING)  # unless a stop came first
            self._by_pid[proc.pid] = proc
        try:
            self.store.set_worker(proc.task_id, proc.pid, proc.started or 0.0)
        except StoreError as exc:  # the task itself will fail on the same database (/health sees it)
            log.error("cannot record worker of %s: %s", proc.task_id, exc)
        finally:
            proc.spawned.set_result(proc.pid)

    def _exit_reported(self, msg: dict[str, Any]) -> None:
        """The zygote reaped a leader and says how it ended."""
        with self._lock:
            proc = self._by_pid.get(msg["pid"])
        if proc is None:  # a leader of an earlier server's, which ended while none listened
            task = next((t for t in self.store.tasks_in(ACTIVE, node=self.mine)
                         if t.worker_pid == msg["pid"] and t.tree_id == msg.get("task_id")), None)
            if task is None:
                return
            proc = WorkerProc(task.id, PROC_RUNNING, msg["pid"], task.worker_started, adopted=True,
                              run_id=task.tree_id)
        self._thread(self._on_exit, proc, msg["code"])

    def _on_exit(self, proc: WorkerProc, code: int | None) -> None:
        """A task's leader has exited: sweep what it left, and settle the task's status."""
        try:
            self._settle_exit(proc, code)
        except StoreError as exc:  # the database's state is /health's to report
            log.error("cannot settle the end of task %s: %s", proc.task_id, exc)
            self._kill(proc.task_id, None, 0.2, tree=proc.run_id)
            self._forget(proc)

    def _settle_exit(self, proc: WorkerProc, code: int | None) -> None:
        with self._lock:
            if proc.state in (STOPPING, EXITED):
                return  # stop(), _fail() or _end_warm() owns this ending
            proc.change_state(EXITED)
            proc.exit_code = code
        task = self.store.get_task(proc.task_id)  # an idle warm process's last task has ended
        if task is not None and task.status in ACTIVE and task.worker_pid == proc.pid:
            workspace.log_task_changes(self.store, task.id)
            if task.stop_requested:
                self.store.transition(task.id, CANCELLED)
            else:
                self.store.transition(task.id, FAILED, error=self._exit_reason(task, code))
        # Whatever the worker left behind (a CLI whose worker died, background tool
        # processes) goes now; with the worker gone there is nobody to be gentle for.
        self._kill(proc.task_id, None, 0.2, tree=proc.run_id)
        self._forget(proc)
        self.on_change(proc.task_id)

    def _exit_reason(self, task: Task, code: int | None) -> str:
        if code is None:
            how = "the worker process was lost"
        elif code >= 128:
            try:
                name = signal.Signals(code - 128).name
            except ValueError:
                name = f"signal {code - 128}"
            how = f"the worker was killed by {name}"
        else:
            how = f"the worker exited with code {code} without a final status"
        tail = self.stderr_tail(task.id, 1500)
        return f"{how}; stderr tail:\n{tail}" if tail else how



def _num(tasks: list[Task], task_id: str) -> int:
    """The place (num) of `task_id` among `tasks` (0 if it is not there)."""
    return next((t.num for t in tasks if t.id == task_id), 0)


def _hang_up(sock: socket.socket, reader: IO[bytes]) -> None:
    """Close a connection so that a thread reading it returns at once."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    reader.close()
    sock.close()


def _close_listener(sock: socket.socket) -> None:
    """Stop listening; accept() in another thread returns with an error. (The socket file
    stays: unlinking it could remove the next server's, bound at the same path.)"""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
