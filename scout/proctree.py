"""A task's processes from outside: find them, check who they are, kill them.

Runs in the server (the supervisor's stop, limits and reconciliation). A process
belongs to a task when it carries the task's environment tag or process title
(scout/taskspec.py), or descends from the task's leader; a recorded process is "the
same" only when its pid *and* start time match, so a reused pid is never mistaken for
it. Every process of a task is found by its tag even when it has left the tree (Claude
Code starts each Bash command in a session of its own; a SIGKILLed CLI leaves its tools
behind, re-parented).
"""
from __future__ import annotations

import os
import signal
import time

import psutil

from . import containment
from .taskspec import LEADER_TITLE, TAG, WORKER_TITLE


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


def kill_tree(task_id: str, root_pid: int | None, grace: float, root_started: float | None = None,
              cgroup: str | None = None) -> int:
    """SIGTERM every process of the task, SIGKILL what is left after `grace`; returns how many.

    Sweeps again until a sweep finds nothing, so processes forked meanwhile are caught too.
    `root_started` (the leader's start time as the zygote reported it) lets a leader that
    has not yet set its title be found. The first sweep's processes (the leader's whole
    tree, tagged or not) get the SIGKILL too, and so does the task's cgroup, if it has one
    (scout/containment.py): a process that dropped the tag is still killed.
    """
    procs = task_processes(task_id, root_pid, root_started)
    total = len(procs)
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while procs and time.monotonic() < deadline:
        time.sleep(0.05)
        procs = [p for p in procs if _alive(p)]
    containment.kill(cgroup)
    for proc in procs:
        _signal(proc, signal.SIGKILL)
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
