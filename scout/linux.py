"""Linux's prctl(2), the one system call Scout needs that Python's os module lacks.

Shared by the task processes (child subreaper, scout/zygote.py) and the servers' own
process handling (parent-death signal, non-dumpable server, scout/serverproc.py).
"""
from __future__ import annotations

import ctypes

PR_SET_PDEATHSIG, PR_GET_DUMPABLE, PR_SET_DUMPABLE = 1, 3, 4
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, arg: int = 0) -> int:
    """prctl(option, arg, 0, 0, 0); 0 on success, -1 with ctypes.get_errno() on failure."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(option, arg, 0, 0, 0)


def errno() -> int:
    """The errno of the latest failed prctl."""
    return ctypes.get_errno()
