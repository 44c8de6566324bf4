"""The supervisor: one OS process tree per task, started, watched, limited, stopped, reaped.

How a task's processes come to be (all on Linux):

    server ── zygote ── leader ── worker ── Claude CLI ── tool processes
              (warm)    (tini)    (SDK)

* The **zygote** is a single-threaded Python process started once, with claude_agent_sdk
  already imported, and only the environment Claude Code may see. It forks a task's
  processes in about a millisecond (a fresh interpreter would spend ~0.5 s importing
  the SDK) and reports their pids and exit statuses over a pipe.
* The **leader** is the first fork: it starts a session of its own (so a server crash
  or a Ctrl-C does not reach the task), makes itself a child subreaper (so tool
  processes orphaned by a dying CLI are re-parented to it rather than to init), forks
  the worker, reaps everything until the worker exits and exits with its status.
  Its pid and start time are the task's worker identity in the log.
* Every process of a task inherits SCOUT_TASK_ID, a tag the supervisor finds them by
  when they have left the tree (Claude Code starts each Bash command in a session of
  its own; a SIGKILLed CLI leaves its tools behind).

Worker processes follow an explicit state machine, after supervisord's:
STARTING (asked of the zygote) → RUNNING (pid known) → STOPPING (being killed) → EXITED.
Task statuses live in the store; the worker owns the happy ending (completed, or
failed with Claude Code's own error) and the supervisor every other one.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil
import setproctitle

from .config import Settings
from .store import ACTIVE, CANCELLED, FAILED, PENDING, RUNNING, Store, StoreBusy, StoreError, Task

log = logging.getLogger("scout.supervisor")

TAG = "SCOUT_TASK_ID"
# Forked processes keep the zygote's /proc/PID/environ, so the leader and worker also
# carry the task id in their process title (what ps and /proc/PID/cmdline show).
LEADER_TITLE, WORKER_TITLE = "scout: leader {}", "scout: worker {}"
PR_SET_CHILD_SUBREAPER = 36

# What Claude Code may see of Scout's environment: its own settings, credentials and
# gateways, and what any program needs. Everything else (SCOUT_API_TOKEN above all)
# stays out of reach of the agent's tools. SCOUT_WORKER_ENV adds names.
ENV_ALLOW = ("HOME", "PATH", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR",
             "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
             "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
             "IS_SANDBOX", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME")
ENV_ALLOW_PREFIXES = ("ANTHROPIC_", "CLAUDE_", "LC_", "AWS_", "GOOGLE_", "CLOUD_ML_", "VERTEX_",
                      "DISABLE_", "MCP_", "OTEL_")

# Worker process states (supervisord style).
STARTING, PROC_RUNNING, STOPPING, EXITED = "STARTING", "RUNNING", "STOPPING", "EXITED"


def worker_env(settings: Settings, source: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment every worker and its Claude Code inherit."""
    source = dict(os.environ if source is None else source)
    extra = set(settings.worker_env_pass)
    env = {k: v for k, v in source.items()
           if k in ENV_ALLOW or k in extra or k.startswith(ENV_ALLOW_PREFIXES)}
    env.pop(TAG, None)
    env.pop("SCOUT_API_TOKEN", None)
    return env


# ---------------------------------------------------------------------------------
# Inside the zygote and the task processes


def _set_subreaper() -> None:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def _lower_priority(nice: int) -> None:
    """Give the task's processes less CPU than the server, which must stay responsive.

    A new session is a scheduling group of its own where the kernel groups by session
    (autogroup): there the group's nice value is what counts; elsewhere, the process's.
    """
    if nice <= 0:
        return
    try:
        with open("/proc/self/autogroup", "w") as fh:
            fh.write(str(nice))
    except OSError:
        try:
            os.nice(nice)
        except OSError:
            pass


def _exit_code(status: int) -> int:
    """A waitpid status as a shell-style exit code (128+N for death by signal N)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _lead(spec: dict[str, Any]) -> None:
    """The task leader, in the freshly forked child of the zygote. Never returns."""
    code = 1
    try:
        os.setsid()
        _lower_priority(spec.get("nice", 10))
        _set_subreaper()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.environ[TAG] = spec["task_id"]
        setproctitle.setproctitle(LEADER_TITLE.format(spec["task_id"]))
        os.makedirs(os.path.dirname(spec["log_path"]), exist_ok=True)
        logfd = os.open(spec["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        nullfd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nullfd, 0)
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        os.closerange(3, 65536)
        worker = os.fork()
        if worker == 0:
            _work(spec)
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == worker:
                code = _exit_code(status)
                if code >= 128:
                    print(f"scout: worker killed by signal {code - 128}", file=sys.stderr, flush=True)
                break
    finally:
        os._exit(code)


def _work(spec: dict[str, Any]) -> None:
    """The worker, forked by the leader. Never returns."""
    code = 1
    try:
        setproctitle.setproctitle(WORKER_TITLE.format(spec["task_id"]))
        from . import worker
        code = worker.run(spec)
    except BaseException as exc:  # noqa: BLE001 - report anything, then exit
        print(f"scout worker crashed: {exc!r}", file=sys.stderr, flush=True)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def zygote_main() -> None:
    """The zygote's loop: spawn requests in on stdin, pid and exit reports out on stdout."""
    from . import worker  # noqa: F401  the expensive import, done once and shared by every fork
    import anyio._backends._asyncio  # noqa: F401  imported lazily by anyio; do it here, once

    setproctitle.setproctitle("scout: zygote")
    _set_subreaper()  # the leaders' orphans (after a worker dies) come here to be reaped
    out = os.fdopen(os.dup(1), "w", buffering=1)
    stdin = 0
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we end
    leaders: set[int] = set()
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    buf = b""
    serving = True
    while serving or leaders:
        for key, _ in sel.select(timeout=None if serving else 1.0):
            if key.fd == wake_r:
                os.read(wake_r, 4096)
                continue
            chunk = os.read(stdin, 65536)
            if not chunk:
                # The server went away (shut down, or crashed). The tasks keep running, to
                # be adopted by the next server; we stay only to reap them as they end, so
                # no leader is left to an init that may not reap (containers without one).
                sel.unregister(stdin)
                setproctitle.setproctitle("scout: zygote (server gone, reaping)")
                serving = False
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                spec = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    _lead(spec)
                leaders.add(pid)
                try:
                    started = psutil.Process(pid).create_time()
                except psutil.Error:
                    started = None
                serving = _report(out, {"event": "spawned", "task_id": spec["task_id"], "pid": pid,
                                        "started": started}) and serving
        while True:  # reap every child that has exited: leaders, and orphans passed to us
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in leaders:
                leaders.discard(pid)
                if serving:
                    serving = _report(out, {"event": "exited", "pid": pid, "code": _exit_code(status)})
    os._exit(0)


def _report(out, message: dict[str, Any]) -> bool:
    """Tell the server something; False once it is gone (its end of the pipe closed)."""
    try:
        out.write(json.dumps(message) + "\n")
        return True
    except (BrokenPipeError, OSError):
        return False


# ---------------------------------------------------------------------------------
# In the server process


@dataclass
class WorkerProc:
    """One task's leader process as the supervisor sees it."""

    task_id: str
    state: str = STARTING
    pid: int | None = None
    started: float | None = None
    adopted: bool = False
    exit_code: int | None = None
    spawned: Future = field(default_factory=Future)


def task_processes(task_id: str, root_pid: int | None = None,
                   root_started: float | None = None) -> list[psutil.Process]:
    """Every live process of a task: the leader's descendants plus everything tagged with it.

    The leader counts when it is tagged, or when it is the very process the zygote reported
    (pid and start time): a leader forked a moment ago has not set its title yet.
    """
    found: dict[int, psutil.Process] = {}
    if root_pid:
        try:
            root = psutil.Process(root_pid)
            if _tagged(root, task_id) or _same_start(root, root_started):
                found[root.pid] = root
                for child in root.children(recursive=True):
                    found[child.pid] = child
        except psutil.Error:
            pass
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid == me:
            continue
        if _tagged(proc, task_id):
            found[proc.pid] = proc
    return [p for p in found.values() if _alive(p)]


def _tagged(proc: psutil.Process, task_id: str) -> bool:
    """Does the process belong to the task (by its inherited tag, or its title)?"""
    try:
        if proc.environ().get(TAG) == task_id:
            return True
        title = proc.cmdline()[:1]
        return bool(title) and title[0] in (LEADER_TITLE.format(task_id), WORKER_TITLE.format(task_id))
    except (psutil.Error, OSError):
        return False


def _same_start(proc: psutil.Process, started: float | None) -> bool:
    """Was the process started at `started` (so it is not another one that reused the pid)?"""
    try:
        return started is not None and abs(proc.create_time() - started) < 0.05
    except psutil.Error:
        return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_tree(task_id: str, root_pid: int | None, grace: float, root_started: float | None = None) -> int:
    """SIGTERM every process of the task, SIGKILL what is left after `grace`; returns how many.

    Sweeps again until a sweep finds nothing, so processes forked meanwhile are caught too.
    `root_started` (the leader's start time as the zygote reported it) lets a leader that
    has not yet set its title be found.
    """
    procs = task_processes(task_id, root_pid, root_started)
    total = len(procs)
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while procs and time.monotonic() < deadline:
        time.sleep(0.05)
        procs = [p for p in procs if _alive(p)]
    for _ in range(50):
        procs = task_processes(task_id, root_pid, root_started)
        if not procs:
            break
        total += len(procs)
        for proc in procs:
            _signal(proc, signal.SIGKILL)
        psutil.wait_procs(procs, timeout=0.5)
    return total


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except psutil.Error:
        pass


def identity_matches(pid: int | None, started: float | None, task_id: str) -> bool:
    """Is `pid` still the very process recorded for the task (not a reused pid)?"""
    if not pid or started is None:
        return False
    try:
        proc = psutil.Process(pid)
        return _same_start(proc, started) and _alive(proc) and _tagged(proc, task_id)
    except psutil.Error:
        return False


class Supervisor:
    """Starts pending tasks up to the worker cap, watches them, stops them, enforces limits."""

    TICK = 0.2

    def __init__(self, store: Store, settings: Settings,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.on_change = on_change or (lambda task_id: None)
        self._workers: dict[str, WorkerProc] = {}
        self._by_pid: dict[int, WorkerProc] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._zygote: subprocess.Popen | None = None
        self._zygote_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.last_error: str | None = None

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> dict[str, int]:
        """Reconcile what the last run left behind, then start dispatching. Returns a summary."""
        summary = self.reconcile()
        self._ensure_zygote()
        thread = threading.Thread(target=self._dispatch_loop, name="scout-dispatch", daemon=True)
        thread.start()
        self._threads.append(thread)
        return summary

    def shutdown(self, mode: str | None = None) -> None:
        """Stop dispatching. mode 'detach' leaves running tasks to be adopted at the next
        start; 'cancel' stops them first. Default: the SCOUT_SHUTDOWN setting."""
        mode = mode or self.settings.shutdown
        self._closing.set()
        self._wake.set()
        if mode == "cancel":
            with self._lock:
                ids = list(self._workers)
            threads = [threading.Thread(target=self.stop, args=(tid,)) for tid in ids]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        for t in self._threads:
            t.join(timeout=5)
        with self._zygote_lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            # The zygote exits once its remaining tasks (detached ones) have ended, reaping
            # them meanwhile; the next server adopts those tasks.
            zygote.stdin.close()
            if mode == "cancel":
                try:
                    zygote.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log.warning("zygote still running after shutdown")

    def reconcile(self) -> dict[str, int]:
        """Settle every unfinished task found in the log at start-up.

        Pending tasks simply wait for the dispatcher. A running task whose leader is
        still alive (same pid *and* start time *and* tag) is adopted; one that never got
        a process is queued again; one whose process is gone has failed.
        """
        summary = {"adopted": 0, "requeued": 0, "lost": 0, "cancelled": 0}
        for task in self.store.tasks_in(ACTIVE):
            if identity_matches(task.worker_pid, task.worker_started, task.id):
                if task.stop_requested:
                    kill_tree(task.id, task.worker_pid, self.settings.stop_grace, task.worker_started)
                    self.store.transition(task.id, CANCELLED, ACTIVE)
                    summary["cancelled"] += 1
                    continue
                proc = WorkerProc(task.id, PROC_RUNNING, task.worker_pid, task.worker_started, adopted=True)
                proc.spawned.set_result(task.worker_pid)
                with self._lock:
                    self._workers[task.id] = proc
                summary["adopted"] += 1
                continue
            kill_tree(task.id, None, self.settings.stop_grace)
            if task.worker_pid is None and not task.stop_requested:
                self.store.requeue(task.id)
                summary["requeued"] += 1
            elif task.stop_requested:
                self.store.transition(task.id, CANCELLED, ACTIVE)
                summary["cancelled"] += 1
            else:
                self.store.transition(task.id, FAILED, ACTIVE,
                                      error="worker lost: its process was gone when Scout restarted")
                summary["lost"] += 1
        return summary

    # -- queries ---------------------------------------------------------------------

    def running_count(self) -> int:
        with self._lock:
            return len(self._workers)

    def worker(self, task_id: str) -> WorkerProc | None:
        with self._lock:
            return self._workers.get(task_id)

    def zygote_alive(self) -> bool:
        return self._zygote is not None and self._zygote.poll() is None

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
        self.store.request_stop(task_id)
        if self.store.transition(task_id, CANCELLED, (PENDING,)):
            self.on_change(task_id)
            return CANCELLED
        with self._lock:
            proc = self._workers.get(task_id)
            if proc is not None:
                proc.state = STOPPING
        pid = None
        if proc is not None:
            try:
                pid = proc.spawned.result(timeout=10)
            except Exception:  # noqa: BLE001 - spawning failed; nothing of it can be running
                pid = None
        kill_tree(task_id, pid, self.settings.stop_grace, proc.started if proc is not None else None)
        self.store.transition(task_id, CANCELLED, ACTIVE)
        self._forget(task_id)
        self.on_change(task_id)
        final = self.store.get_task(task_id)
        return final.status if final else CANCELLED

    def stop_in_background(self, task_ids: list[str]) -> None:
        """Stop tasks one after another without making the caller wait."""
        def stop_all() -> None:
            for task_id in task_ids:
                self.stop(task_id)
        self._thread(stop_all)

    def _forget(self, task_id: str) -> None:
        with self._lock:
            proc = self._workers.pop(task_id, None)
            if proc is not None and proc.pid is not None:
                self._by_pid.pop(proc.pid, None)
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
                self.last_error = None
            except StoreError as exc:
                self.last_error = str(exc)
                log.error("dispatcher: %s", exc)
            except Exception as exc:  # noqa: BLE001 - the dispatcher must survive anything
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("dispatcher failed; retrying")

    def _start_what_fits(self) -> None:
        free = self.settings.max_workers - self.running_count()
        if free <= 0:
            return
        for task in self.store.next_startable(free):
            if self._closing.is_set():
                return
            self._spawn(task)

    def _spawn(self, task: Task) -> None:
        try:
            if not self.store.transition(task.id, RUNNING, (PENDING,)):
                return  # stopped or deleted meanwhile
        except StoreBusy:
            return  # another process holds the lock: the task stays pending, tried again later
        except StoreError as exc:
            self.store.transition(task.id, FAILED, (PENDING,), error=f"could not start: {exc}")
            self.on_change(task.id)
            return
        self.on_change(task.id)
        proc = WorkerProc(task.id)
        with self._lock:
            self._workers[task.id] = proc
        spec = {"task_id": task.id, "db": self.store.path, "db_max_bytes": self.store.max_bytes,
                "busy_timeout": self.settings.idle_timeout,
                "nice": self.settings.task_nice,
                "claude_path": self.settings.claude_path,
                "approval_timeout": self.settings.approval_timeout,
                "log_path": self.log_path(task.id),
                "max_events_per_task": self.settings.max_events_per_task or None}
        try:
            self._send_to_zygote(spec)
            proc.spawned.result(timeout=10)
        except Exception as exc:  # noqa: BLE001
            self._forget(task.id)
            self.store.transition(task.id, FAILED, ACTIVE, error=f"could not start worker: {exc}")
            self.on_change(task.id)

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
            adopted = [p for p in self._workers.values() if p.adopted and p.state != STOPPING]
        for proc in adopted:
            if not identity_matches(proc.pid, proc.started, proc.task_id):
                self._on_exit(proc, None)

    def _enforce_limits(self) -> None:
        now = time.time()
        with self._lock:
            procs = [p for p in self._workers.values() if p.state == PROC_RUNNING]
        for proc in procs:
            task = self.store.get_task(proc.task_id)
            if task is None or task.status not in ACTIVE:
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

    def _thread(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn in a short-lived thread that closes its database connection when done."""
        def run() -> None:
            try:
                fn(*args)
            finally:
                self.store.close_thread()
        threading.Thread(target=run, daemon=True).start()

    def _fail(self, proc: WorkerProc, reason: str) -> None:
        with self._lock:
            if proc.state == STOPPING:
                return
            proc.state = STOPPING
        kill_tree(proc.task_id, proc.pid, self.settings.stop_grace, proc.started)
        self.store.transition(proc.task_id, FAILED, ACTIVE, error=reason)
        self._forget(proc.task_id)
        self.on_change(proc.task_id)

    # -- the zygote ------------------------------------------------------------------

    def _ensure_zygote(self) -> subprocess.Popen:
        with self._zygote_lock:
            if self._zygote is not None and self._zygote.poll() is None:
                return self._zygote
            pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            code = (f"import sys; sys.path.insert(0, {pkg_parent!r}); "
                    "from scout.supervisor import zygote_main; zygote_main()")
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                env=worker_env(self.settings), cwd="/", bufsize=0)
            thread = threading.Thread(target=self._read_zygote, args=(self._zygote,),
                                      name="scout-zygote", daemon=True)
            thread.start()
            return self._zygote

    def _send_to_zygote(self, spec: dict[str, Any]) -> None:
        zygote = self._ensure_zygote()
        with self._zygote_lock:
            zygote.stdin.write((json.dumps(spec) + "\n").encode())

    def _read_zygote(self, zygote: subprocess.Popen) -> None:
        for raw in zygote.stdout:
            msg = json.loads(raw)
            if msg["event"] == "spawned":
                with self._lock:
                    proc = self._workers.get(msg["task_id"])
                    if proc is None:
                        continue
                    proc.pid, proc.started = msg["pid"], msg["started"]
                    if proc.state == STARTING:
                        proc.state = PROC_RUNNING
                    self._by_pid[proc.pid] = proc
                try:
                    self.store.set_worker(proc.task_id, proc.pid, proc.started or 0.0)
                except StoreError as exc:  # the task itself will fail on the same database
                    self.last_error = str(exc)
                    log.error("cannot record worker of %s: %s", proc.task_id, exc)
                finally:
                    proc.spawned.set_result(proc.pid)
            elif msg["event"] == "exited":
                with self._lock:
                    proc = self._by_pid.get(msg["pid"])
                if proc is not None:
                    self._thread(self._on_exit, proc, msg["code"])
        # The zygote is gone. Its leaders live on, re-parented: watch them by polling.
        with self._lock:
            for proc in self._workers.values():
                if proc.pid is not None and not proc.adopted:
                    proc.adopted = True
                elif proc.pid is None and not proc.spawned.done():
                    proc.spawned.set_exception(RuntimeError("the zygote exited"))

    def _on_exit(self, proc: WorkerProc, code: int | None) -> None:
        """A task's leader has exited: sweep what it left, and settle the task's status."""
        try:
            self._settle_exit(proc, code)
        except StoreError as exc:
            self.last_error = str(exc)
            log.error("cannot settle the end of task %s: %s", proc.task_id, exc)
            kill_tree(proc.task_id, None, 0.2)
            self._forget(proc.task_id)

    def _settle_exit(self, proc: WorkerProc, code: int | None) -> None:
        with self._lock:
            if proc.state in (STOPPING, EXITED):
                return  # stop() or _fail() owns this ending
            proc.state = EXITED
            proc.exit_code = code
        task = self.store.get_task(proc.task_id)
        if task is not None and task.status in ACTIVE:
            if task.stop_requested:
                self.store.transition(task.id, CANCELLED, ACTIVE)
            else:
                self.store.transition(task.id, FAILED, ACTIVE, error=self._exit_reason(task, code))
        # Whatever the worker left behind (a CLI whose worker died, background tool
        # processes) goes now; with the worker gone there is nobody to be gentle for.
        kill_tree(proc.task_id, None, 0.2)
        self._forget(proc.task_id)
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


# =====================================================================================
# The server processes themselves: signals, run_servers' two children, hardening.
# (All of Scout's process and signal handling lives in this module.)

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_GET_DUMPABLE = 1, 4, 3


def install_shutdown_handlers(callback: Callable[[int], None]) -> Callable[[], None]:
    """Call ``callback(signum)`` on SIGTERM or SIGINT, in the main thread.

    Returns a function that puts the previous handlers back."""
    def handler(signum: int, _frame: Any) -> None:
        callback(signum)
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return restore


def interrupt_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C (KeyboardInterrupt in the main thread): for the web UI,
    whose shutdown path is the one Gradio takes on Ctrl-C."""
    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


def _die_with_parent() -> None:
    """In a child, before exec: get SIGTERM if its parent (run_servers) dies (Linux)."""
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def spawn_server(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start one of run_servers' children (the API server or the web UI).

    It gets a session of its own, so a terminal's Ctrl-C reaches only run_servers, which
    then stops the children in order; and it gets SIGTERM if run_servers itself dies."""
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent)


def stop_servers(procs: list[tuple[str, subprocess.Popen]], grace: float = 30.0,
                 say: Callable[[str], None] = lambda text: None) -> None:
    """SIGTERM every live process, in the order given; wait up to ``grace`` s; SIGKILL the rest."""
    for _name, proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for name, proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"the {name} did not stop in {grace:g} s; killing it.")
            proc.kill()
            proc.wait()


def program_version(path: str, timeout: float = 20.0) -> tuple[str | None, str | None]:
    """``(version, None)`` from ``path --version`` (its first word), or ``(None, why not)``."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    version = out.stdout.strip().split(" ")[0] if out.returncode == 0 else None
    return (version, None) if version else (None, (out.stderr or out.stdout).strip()[:300])


def _prctl(option: int, arg: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, arg, 0, 0, 0)


def make_undumpable() -> bool:
    """Make this process non-dumpable (Linux); returns whether it now is.

    The agent's Bash tool runs as the same user as the server. The workers' environment
    is an allow-list without SCOUT_API_TOKEN (worker_env), but the server's own
    /proc/<pid>/environ (and its memory) would still be readable by any process of that
    user. A non-dumpable process's /proc files belong to root and it cannot be
    ptrace-attached without CAP_SYS_PTRACE, which closes that door. It does not stop
    root: run Scout as an ordinary user. Children started with exec (the zygote,
    ``claude --version``) are dumpable again, and see only what they are given.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _prctl(PR_SET_DUMPABLE, 0) != 0:
            log.warning("could not make the server non-dumpable: %s", ctypes.get_errno())
            return False
        return _prctl(PR_GET_DUMPABLE) == 0
    except (OSError, AttributeError) as exc:
        log.warning("could not make the server non-dumpable: %s", exc)
        return False
