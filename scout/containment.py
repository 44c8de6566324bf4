"""Keeping every process a task starts inside the task: a cgroup where one can be made,
and the leader's own sweep of its descendants everywhere.

A task's commands can drop the SCOUT_TASK_ID tag, double-fork and call setsid: nothing
then ties them to the task by name. Two things still do:

* **The subreaper.** The leader is a child subreaper (PR_SET_CHILD_SUBREAPER), so an
  orphan anywhere below it is re-parented to it, not to init: whatever a task started is
  the leader's descendant until it exits. Before the leader exits it kills all of them
  (`kill_descendants`), so nothing outlives the task, also when the task ends on its own.
* **A cgroup (v2)**, where Scout may make one (root, or a delegated subtree): the leader
  moves itself into ``<Scout's cgroup>/scout-tasks/<task id>`` before it forks anything,
  every process of the task is born there and cannot leave it (moving out needs write
  access to a cgroup above), and a stop writes ``1`` to its ``cgroup.kill``: the kernel
  kills every process in it at once, without a race against forks.

`probe()` says which is in use; /health shows it. Library code for the server (probe,
kill, remove) and the leader (join, kill_descendants); nothing here keeps state.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

BASE_NAME = "scout-tasks"


@dataclass(frozen=True)
class Containment:
    """How tasks are contained here: "cgroup" (with the directory task cgroups go in) or
    "subreaper" (with why a cgroup cannot be used)."""

    method: str
    base: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.base:
            out["cgroup"] = self.base
        if self.reason:
            out["reason"] = self.reason
        return out

    def task_cgroup(self, task_id: str) -> str | None:
        return os.path.join(self.base, task_id) if self.base else None


def _cgroup2_mount() -> str | None:
    """Where the unified (v2) hierarchy is mounted: /sys/fs/cgroup, or .../unified (hybrid)."""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return left.split()[4]
    except OSError:
        pass
    return None


def _own_cgroup() -> str | None:
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def probe() -> Containment:
    """A cgroup v2 directory for task cgroups under this process's own cgroup, if one can be
    made and its cgroup.kill exists (Linux 5.14+); otherwise the subreaper alone."""
    mount, own = _cgroup2_mount(), _own_cgroup()
    if not mount or own is None:
        return Containment("subreaper", reason="no cgroup v2 hierarchy mounted")
    base = os.path.join(mount, own.lstrip("/"), BASE_NAME)
    trial = os.path.join(base, f"probe-{os.getpid()}")
    try:
        os.makedirs(base, exist_ok=True)
        os.mkdir(trial)
    except OSError as exc:
        return Containment("subreaper", reason=f"cannot make a cgroup under {os.path.dirname(base)}: "
                                               f"{exc.strerror or exc}")
    try:
        if not os.path.exists(os.path.join(trial, "cgroup.kill")):
            return Containment("subreaper", reason="the kernel's cgroups have no cgroup.kill (Linux < 5.14)")
        problem = _try_moving_into(trial)
        if problem:
            return Containment("subreaper", reason=f"cannot move a process into a cgroup under {base}: {problem}")
        return Containment("cgroup", base=base)
    finally:
        remove(trial)


def _try_moving_into(path: str) -> str | None:
    """Move a short-lived child into the cgroup and kill it there: what a leader will do
    (it fails where the parent has controllers on and processes of its own, for one)."""
    try:
        child = subprocess.Popen([shutil.which("sleep") or "/bin/sleep", "10"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:
        return str(exc)
    try:
        with open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write(str(child.pid))
        kill(path)
        child.wait(5)
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        return getattr(exc, "strerror", None) or str(exc)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def join(path: str) -> bool:
    """Make `path` a cgroup and move the calling process into it (the leader, first thing)."""
    try:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
        return True
    except OSError:
        return False


def kill(path: str | None) -> bool:
    """Kill every process in the cgroup at once; False if there is no such cgroup."""
    if not path:
        return False
    try:
        with open(os.path.join(path, "cgroup.kill"), "w") as fh:
            fh.write("1")
        return True
    except OSError:
        return False


def populated(path: str) -> bool:
    try:
        with open(os.path.join(path, "cgroup.events")) as fh:
            return "populated 1" in fh.read()
    except OSError:
        return False


def remove(path: str | None, wait: float = 2.0) -> None:
    """Remove a task's cgroup once it is empty (killing what is left in it first)."""
    if not path or not os.path.isdir(path):
        return
    kill(path)
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc/<pid>/task/*/children (Linux 3.5+)."""
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    out.extend(int(p) for p in fh.read().split())
            except OSError:
                continue
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def kill_descendants(grace: float = 1.0, give_up: float = 10.0) -> None:
    """In a subreaper: end every process below this one, reaping them, until none is left.

    SIGTERM first, SIGKILL after `grace` seconds; each round also reaps, so that orphans
    passed up to us (their parents killed first) are found and killed in the next one.
    (Not the cgroup's kill: the caller, the leader, is in the cgroup too.)"""
    me = os.getpid()
    start = time.monotonic()
    while time.monotonic() - start < give_up:
        sig = signal.SIGTERM if time.monotonic() - start < grace else signal.SIGKILL
        pids = descendants(me)
        if not pids:
            _reap()
            if not children_of(me):
                return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        _reap()
        time.sleep(0.02)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
