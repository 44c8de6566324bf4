"""Keeping Scout's own secrets from the agent's tools, at the process level.

The agent's Bash tool runs as the same user as the server. The workers' environment is an
allow-list without SCOUT_API_TOKEN (supervisor.worker_env), but the server's own
/proc/<pid>/environ (and its memory) would still be readable by any process of that user.
A non-dumpable process's /proc files belong to root and it cannot be ptrace-attached
without CAP_SYS_PTRACE, which closes that door. It does not stop root: run Scout as an
ordinary user. Children started with exec (the zygote, `claude --version`) are dumpable
again, and see only what they are given.
"""
from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("scout.hardening")
PR_SET_DUMPABLE, PR_GET_DUMPABLE = 4, 3


def _prctl(option: int, arg: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, arg, 0, 0, 0)


def make_undumpable() -> bool:
    """Make this process non-dumpable (Linux); returns whether it now is."""
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
