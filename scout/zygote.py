"""The task processes' own code: the zygote, and the leader and worker it forks.

Everything here runs outside the server, in the processes of scout/supervisor.py's
picture:

    server ── zygote ── leader ── worker ── Claude CLI ── tool processes
              (warm)    (tini)    (SDK)

* The **zygote** is a single-threaded Python process started once (by the supervisor,
  with ``python -c "from scout.zygote import zygote_main; ..."``), with claude_agent_sdk
  already imported and only the environment Claude Code may see. It forks a task's
  processes in about a millisecond (a fresh interpreter would spend ~0.5 s importing the
  SDK) and reports their pids and exit statuses over a unix socket beside the database:
  WorkerSpec lines in, JSON reports out. It outlives a crashed server (see zygote_main).
* The **leader** is the first fork: it starts a session of its own (so a server crash
  or a Ctrl-C does not reach the task), makes itself a child subreaper (so tool
  processes orphaned by a dying CLI are re-parented to it rather than to init), forks
  the worker, reaps everything until the worker exits and exits with its status.
  Its pid and start time are the task's worker identity in the log.
* The **worker** runs scout/worker.py's ``run`` and exits with its code.

The server never imports this module (it starts the zygote by its name); its side of the
socket is scout/supervisor.py.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
from typing import Any

import psutil
import setproctitle

from . import containment
from .linux import PR_SET_CHILD_SUBREAPER, prctl
from .taskspec import LEADER_TITLE, TAG, WORKER_TITLE, WorkerSpec, listen_unix, same_user


def _set_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


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


def _redirect_output(log_path: str) -> None:
    """stdin from /dev/null; stdout and stderr appended to the task's log file."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    nullfd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nullfd, 0)
    os.dup2(logfd, 1)
    os.dup2(logfd, 2)


def _exit_code(status: int) -> int:
    """A waitpid status as a shell-style exit code (128+N for death by signal N)."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _lead(spec: WorkerSpec) -> None:
    """The task leader, in the freshly forked child of the zygote. Never returns."""
    code = 1
    try:
        os.setsid()
        if spec.cgroup:
            containment.join(spec.cgroup)  # before anything is forked: all of the task is born in it
        _lower_priority(spec.nice)
        _set_subreaper()
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        os.environ[TAG] = spec.task_id
        setproctitle.setproctitle(LEADER_TITLE.format(spec.task_id))
        if spec.log_path:
            _redirect_output(spec.log_path)
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
        # Nothing the task started outlives it: whatever is left below us (a poller that
        # dropped the tag, called setsid, double-forked) was re-parented to us, the subreaper.
        # A worker killed by a signal asked nothing of its CLI to wind down, and its task must
        # be reported failed within a second: SIGKILL at once rather than after a grace.
        containment.kill_descendants(grace=0.0 if code >= 128 else 1.0)
    finally:
        os._exit(code)


def _work(spec: WorkerSpec) -> None:
    """The worker, forked by the leader. Never returns."""
    code = 1
    try:
        setproctitle.setproctitle(WORKER_TITLE.format(spec.task_id))
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


def zygote_main(address: str) -> None:
    """The zygote's loop: it listens on `address` (see taskspec.zygote_address) for its
    server; spawn requests come in, pid and exit reports go out.

    It outlives its server. When the server goes away (shut down with tasks running, or
    crashed) the zygote goes on reaping its leaders, keeps the exit statuses nobody heard,
    and waits for the next server, which connects, hears them in its hello and takes over
    the live leaders. So no leader is ever left to an init that may not reap (containers
    without one), the next server learns how each adopted task really ended, and the
    zygote itself never exits orphaned (it would stay a zombie there): it ends only when
    told to by the server that started it, which reaps it.
    """
    listener = listen_unix(address, 4)  # before the slow import: the server's connect waits in the backlog
    from . import worker  # noqa: F401  the expensive import, done once and shared by every fork
    import anyio._backends._asyncio  # noqa: F401  imported lazily by anyio; do it here, once

    setproctitle.setproctitle("scout: zygote")
    _set_subreaper()  # the leaders' orphans (after a worker dies) come here to be reaped
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we end
    leaders: dict[int, dict[str, Any]] = {}  # pid -> {"task_id", "started"}
    unheard: list[dict[str, Any]] = []  # exit reports no server was connected to hear
    conn: socket.socket | None = None
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    buf = b""
    quitting = False
    while not (quitting and not leaders):
        for key, _ in sel.select(timeout=1.0):
            if key.fileobj is listener:
                new, _ = listener.accept()
                if not same_user(new):
                    new.close()
                    continue
                if conn is not None:  # the newest server wins: the old one is gone, or going
                    sel.unregister(conn)
                    conn.close()
                conn, buf = new, b""
                sel.register(conn, selectors.EVENT_READ)
                setproctitle.setproctitle("scout: zygote")
                hello = {"event": "hello", "pid": os.getpid(), "exited": unheard,
                         "leaders": [{"pid": pid, **info} for pid, info in leaders.items()]}
                if _report(conn, hello):
                    unheard = []
                continue
            if key.fd == wake_r:
                os.read(wake_r, 4096)
                continue
            assert conn is not None
            try:
                chunk = conn.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:  # the server went away: keep reaping, and wait for the next one
                sel.unregister(conn)
                conn.close()
                conn = None
                setproctitle.setproctitle("scout: zygote (waiting for a server)")
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if json.loads(line).get("op") == "quit":
                    quitting = True
                    sel.unregister(listener)
                    listener.close()
                    if not address.startswith("\0"):
                        _unlink(address)
                    continue
                spec = WorkerSpec.from_json(line)
                pid = os.fork()
                if pid == 0:
                    sel.close()
                    _lead(spec)
                try:
                    started = psutil.Process(pid).create_time()
                except psutil.Error:
                    started = None
                leaders[pid] = {"task_id": spec.task_id, "started": started}
                _report(conn, {"event": "spawned", "task_id": spec.task_id, "pid": pid, "started": started})
        for pid in containment.children_of(os.getpid()):
            if pid not in leaders:  # an orphan of a leader that died before it could sweep
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        while True:  # reap every child that has exited: leaders, and orphans passed to us
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            info = leaders.pop(pid, None)
            if info is not None:
                report = {"event": "exited", "pid": pid, "code": _exit_code(status), **info}
                if conn is None or not _report(conn, report):
                    unheard.append(report)
    os._exit(0)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _report(conn: socket.socket, message: dict[str, Any]) -> bool:
    """Tell the server something; False once it is gone."""
    try:
        conn.sendall((json.dumps(message) + "\n").encode())
        return True
    except OSError:
        return False
