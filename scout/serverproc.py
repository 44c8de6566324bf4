"""The servers' own processes: their shutdown signals, run_servers' two children, hardening.

Runs in the processes that serve people, not in a task's: the API server (shutdown
handlers, non-dumpable, ``claude --version`` for /health), the web UI (SIGTERM as
Ctrl-C) and run_servers (starting and stopping the other two). It touches no task
process: that is scout/supervisor.py (server side), scout/proctree.py and
scout/zygote.py, none of which the UI, the CLI or the launcher import.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from typing import Any, Callable

from .linux import PR_GET_DUMPABLE, PR_SET_DUMPABLE, PR_SET_PDEATHSIG, errno, prctl

log = logging.getLogger("scout.serverproc")


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
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def spawn_server(argv: list[str], env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """Start one of run_servers' children (the API server or the web UI).

    It gets a session of its own, so a terminal's Ctrl-C reaches only run_servers, which
    then stops the children in order; and it gets SIGTERM if run_servers itself dies.
    `pass_fds`: the pipe holding its secrets (scout/vault.py)."""
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent, pass_fds=pass_fds)


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
        if prctl(PR_SET_DUMPABLE, 0) != 0:
            log.warning("could not make the server non-dumpable: %s", errno())
            return False
        return prctl(PR_GET_DUMPABLE) == 0
    except (OSError, AttributeError) as exc:
        log.warning("could not make the server non-dumpable: %s", exc)
        return False
