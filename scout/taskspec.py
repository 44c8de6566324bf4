"""What crosses from the server to a task's processes: the worker spec and the task's marks.

The supervisor (in the server) writes a WorkerSpec down the zygote's pipe as one JSON
line; the zygote's fork (leader, then worker) reads it back. `python -m scout.worker`
builds the same spec from the same settings, so a task run by hand gets the defaults a
dispatched one gets. The marks (an environment tag and two process titles) are set in
the task's processes (scout/zygote.py) and searched for by the server
(scout/proctree.py); both take them from here. Standard library only (and config's
one stdlib-only helper).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .config import is_postgres_url

if TYPE_CHECKING:
    from .config import Settings

# Every process of a task inherits this environment variable, holding the task id.
TAG = "SCOUT_TASK_ID"
# Forked processes keep the zygote's /proc/PID/environ, so the leader and worker also
# carry the task id in their process title (what ps and /proc/PID/cmdline show).
LEADER_TITLE, WORKER_TITLE = "scout: leader {}", "scout: worker {}"


# The zygote's one control message besides specs: stop taking tasks, and exit once the
# leaders it has are gone (sent only by the server that started it, which then reaps it).
QUIT = json.dumps({"op": "quit"})


def zygote_address(db: str, node: str = "") -> str:
    """Where the zygote of the database `db` listens: a unix socket beside the database
    (so the next server, after a crash, finds the zygote its tasks still run under), or,
    when that path is too long for a socket address, a name in Linux's abstract namespace.
    A PostgreSQL log has no file to sit beside and is shared by nodes, several of which may
    run on one machine: there each node has its own name in the abstract namespace, so no
    node connects to (and takes over the tasks of) another node's zygote."""
    return _address(db, node, "zygote")


def warm_address(db: str, node: str = "") -> str:
    """Where the server of the database `db` (and node) listens for its warm workers: found
    the same way as the zygote's, so a warm worker left by a crashed server reaches the next."""
    return _address(db, node, "warm")


def _address(db: str, node: str, kind: str) -> str:
    if is_postgres_url(db):
        return f"\0scout-{kind}-" + hashlib.sha256(f"{db}\0{node}".encode()).hexdigest()[:32]
    path = os.path.abspath(db) + "." + kind
    if len(path.encode()) < 100:
        return path
    return f"\0scout-{kind}-" + hashlib.sha256(path.encode()).hexdigest()[:32]


def listen_unix(address: str, backlog: int) -> socket.socket:
    """A listening unix socket at `address` (one of the above), for this user only; a stale
    socket file left there is replaced."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if not address.startswith("\0"):
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass
    sock.bind(address)
    if not address.startswith("\0"):
        os.chmod(address, 0o600)
    sock.listen(backlog)
    return sock


def same_user(conn: socket.socket) -> bool:
    """Is the peer of a unix socket a process of our own user (SO_PEERCRED)? Nobody else may
    spawn tasks or speak for a warm worker."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


# Options a warm Claude Code process takes live at the next turn (the model and permission
# mode through the SDK's control requests), or that never reach it (the webhook).
LIVE_OPTIONS = frozenset({"model", "permission_mode", "webhook_url"})


def warm_key(options: dict[str, Any]) -> str:
    """What a task's Claude Code process was started with, as one string: a follow-up runs in
    a session's warm process only when its key is the same (same cwd, mode, tools, system
    prompt, workspace, sandbox...); anything else starts cold."""
    fixed = {k: v for k, v in options.items() if k not in LIVE_OPTIONS}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a task's leader and worker need to know, and nothing they could look up."""

    task_id: str
    db: str                                  # the database file, absolute, or a PostgreSQL URL
    db_max_bytes: int | None = None          # SCOUT_DB_MAX_MB, in bytes
    log_path: str | None = None              # the worker's stdout/stderr (None: inherit)
    nice: int = 10                           # SCOUT_TASK_NICE
    claude_path: str | None = None           # the Claude Code CLI
    approval_timeout: float = 300.0          # seconds a tool use waits for a person
    max_events_per_task: int | None = None   # None: no cap
    allowed_roots: list[str] | None = None   # SCOUT_ALLOWED_ROOTS: the worker checks cwd again
    cgroup: str | None = None                # the task's cgroup (scout/containment.py), if any
    worktrees: str = ""                      # SCOUT_WORKTREES (its lock files, for a new worktree)
    busy_timeout: float = 900.0              # how long a write waits for another's lock: SCOUT_IDLE_TIMEOUT
    session_idle: float = 0.0                # SCOUT_SESSION_IDLE: stay warm this long after a turn (0: exit)
    warm_address: str = ""                   # where the server hears its warm workers (taskspec.warm_address)

    @classmethod
    def from_settings(cls, task_id: str, settings: Settings, log_path: str | None = None,
                      cgroup: str | None = None) -> WorkerSpec:
        """The spec of one task under these settings: the one way a spec is made."""
        db = settings.db if is_postgres_url(settings.db) else os.path.abspath(settings.db)
        return cls(task_id=task_id, db=db, db_max_bytes=settings.db_max_bytes,
                   log_path=log_path, nice=settings.task_nice, claude_path=settings.claude_path,
                   approval_timeout=settings.approval_timeout,
                   max_events_per_task=settings.max_events_per_task or None,
                   allowed_roots=list(settings.allowed_roots), cgroup=cgroup,
                   worktrees=settings.worktrees, busy_timeout=settings.idle_timeout,
                   session_idle=settings.session_idle if settings.max_warm else 0.0,
                   warm_address=warm_address(db, settings.node_id))

    def to_json(self) -> str:
        """One line of JSON, as it goes down the zygote's pipe."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerSpec:
        return cls(**json.loads(text))
