"""The SQLite event log: tasks, sessions and their events. All of Scout's SQL lives here.

The log is the truth. Every process (the server, each worker) opens its own
connections to one WAL-mode database file; a row is visible to readers only once
its transaction has committed. Event sequence numbers are assigned inside the
inserting statement, under SQLite's single-writer lock, so they stay unique and
gap-free per task however many processes write.
"""
from __future__ import annotations

import json
import os
import stat
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol

from .vocab import PENDING, RUNNING, STATUSES, TERMINAL, WAITING, EventType, TaskStatus, can_transition

SCHEMA_VERSION = 8

_MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        claude_session_id TEXT,
        cwd TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE tasks (
        num INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT NOT NULL,
        options TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        error TEXT,
        result TEXT,
        worker_pid INTEGER,
        worker_started REAL,
        stop_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tasks_by_status ON tasks(status, num);
    CREATE INDEX tasks_by_session ON tasks(session_id, num);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        time REAL NOT NULL,
        payload TEXT NOT NULL,
        UNIQUE (task_id, seq)
    );
    """,
    # 2: tool approvals asked of a person over HTTP.
    """
    CREATE TABLE approvals (
        task_id TEXT NOT NULL,
        tool_use_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        input TEXT NOT NULL,
        asked_at REAL NOT NULL,
        decision TEXT,
        reason TEXT,
        decided_at REAL,
        PRIMARY KEY (task_id, tool_use_id)
    );
    """,
    # 3: list sessions by last activity without a full scan.
    """
    CREATE INDEX sessions_by_activity ON sessions(updated_at);
    """,
    # 4: where a durable reader of the log (the webhook notifier) has got to, across restarts.
    """
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        event_id INTEGER NOT NULL
    );
    """,
    # 5: workspaces: a session's (JSON, see scout/workspace.py; NULL: shared) and the tree its
    # worktree held when a task began (what the task's `changes` event is counted from).
    """
    ALTER TABLE sessions ADD COLUMN workspace TEXT;
    ALTER TABLE tasks ADD COLUMN workspace_start TEXT;
    """,
    # 6: the node (server) that ran each task, as the status document says.
    """
    ALTER TABLE tasks ADD COLUMN node TEXT;
    """,
    # 7: Claude Code's own transcript of each session's conversation, mirrored line by line
    # (its file under ~/.claude can be swept or live under another HOME); and why a
    # session can no longer be continued, once its history is known to be gone.
    """
    CREATE TABLE transcripts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        claude_session_id TEXT NOT NULL,
        subpath TEXT NOT NULL DEFAULT '',
        uuid TEXT,
        entry TEXT NOT NULL
    );
    CREATE UNIQUE INDEX transcripts_by_line ON transcripts(claude_session_id, subpath, uuid);
    CREATE INDEX transcripts_by_session ON transcripts(session_id);
    ALTER TABLE sessions ADD COLUMN history_lost TEXT;
    """,
    # 8: the task whose process tree ran each task: itself when it started cold, an earlier
    # task of its session when it ran in that task's warm Claude Code process.
    """
    ALTER TABLE tasks ADD COLUMN run_id TEXT;
    """,
]
assert len(_MIGRATIONS) == SCHEMA_VERSION


# What to do when the log cannot grow: said by /health, by failed writes and by `scout prune`.
FULL_REMEDY = ("free space with `scout prune --older-than N` (deletes tasks finished more than N days ago) "
               "or raise SCOUT_DB_MAX_MB")


class StoreError(Exception):
    """The database cannot do what was asked (unreadable, read-only, full, corrupt)."""


class StoreBusy(StoreError):
    """Another connection held the write lock for longer than this Store waits (busy_timeout)."""


class EventCapError(StoreError):
    """A task has logged as many events as SCOUT_MAX_EVENTS_PER_TASK allows."""


@dataclass
class Task:
    """One chat message run as one Claude Code task."""

    id: str
    num: int
    session_id: str
    status: TaskStatus
    message: str
    options: dict[str, Any]
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    worker_pid: int | None = None
    worker_started: float | None = None
    stop_requested: bool = False
    workspace_start: str | None = None  # the worktree's tree when the task began
    node: str | None = None  # the node that runs (ran) it, on a shared log
    want_node: str | None = None  # the node it must run on, if the client named one
    run_id: str | None = None  # the task whose process tree runs (ran) it; see tree_id

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def tree_id(self) -> str:
        """The id its processes are tagged (and its cgroup named) with: its own when it
        started cold, the first task's of a warm process it ran in."""
        return self.run_id or self.id

    @property
    def ran_warm(self) -> bool:
        """Did it run in an earlier task's warm Claude Code process?"""
        return self.run_id is not None and self.run_id != self.id


@dataclass
class Event:
    """One step of a task, as logged: its place (seq), kind (type), time and payload."""

    id: int
    task_id: str
    seq: int
    type: str
    time: float
    payload: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "time": self.time, "payload": self.payload}


@dataclass
class Session:
    """A conversation: the tasks that share one Claude Code conversation."""

    id: str
    claude_session_id: str | None
    cwd: str | None
    created_at: float
    updated_at: float
    workspace: dict[str, Any] | None = None  # scout.workspace.Workspace as a dict; None: shared
    history_lost: str | None = None  # why the conversation cannot be continued, once it cannot

    @property
    def can_continue(self) -> bool:
        return self.history_lost is None


@dataclass
class FeedBatch:
    """What an event feed has for the log watcher: new event rows (id, task_id, seq, type,
    time, payload JSON text), in order within each task, and whether news may have been
    missed since the last batch (then every follower must re-read the log itself)."""

    rows: list[tuple]
    reset: bool = False


def new_id() -> str:
    return str(uuid.uuid4())


def _task(row: Any) -> Task:
    """A task from its row: an sqlite3.Row, or a psycopg dict row (scout/store_pg.py)."""
    return Task(
        id=row["id"], num=row["num"], session_id=row["session_id"], status=TaskStatus(row["status"]),
        message=row["message"], options=json.loads(row["options"]),
        created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], error=row["error"],
        result=json.loads(row["result"]) if row["result"] else None,
        worker_pid=row["worker_pid"], worker_started=row["worker_started"],
        stop_requested=bool(row["stop_requested"]), workspace_start=row["workspace_start"], node=row["node"],
        run_id=row["run_id"],
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(id=row["id"], task_id=row["task_id"], seq=row["seq"], type=row["type"],
                 time=row["time"], payload=json.loads(row["payload"]))


class EventLog(Protocol):
    """The store's contract: what Scout asks of its event log, whatever the database.

    Store (SQLite, below) implements it; a second backend implements the same verbs with
    the same promises, and tests/test_store_contract.py holds each backend to them. Every
    verb is safe to call from any thread and any process; a write is committed, and
    visible to every reader, when the call returns; a database that cannot do what is
    asked raises StoreError (never a driver's own exception).
    """

    path: str                           # where the log lives (a file, or a database URL without its password)
    url: str                            # what another process (a worker) opens the same log with
    shared: bool                        # whether other nodes (servers) may use this log too
    max_events_per_task: int | None     # past this many events a task's log refuses more
    last_write_error: str | None        # the latest failed write, until one succeeds

    # -- life cycle and health
    def close_thread(self) -> None:
        """Release the calling thread's connection (for short-lived threads)."""
    def close(self) -> None:
        """Release every connection this object opened (at process exit)."""
    def migrate(self) -> int:
        """Bring the schema up to date, safely against a concurrent migrator; returns the old version."""
    def schema_version(self) -> int:
        """The schema version the database is at."""
    def integrity_check(self) -> str:
        """'ok', or the first problem found in the database."""
    def check_writable(self) -> None:
        """Raise StoreError if a write would fail now: read-only, disk full, size cap near, last write failed."""
    def space_problem(self) -> str | None:
        """Why the log is (nearly) out of room (size cap or disk), naming the remedy; None while it has room."""
    def busy_message(self) -> str:
        """What a StoreBusy says: another process held the write lock longer than this object waits."""
    def backup(self, path: str) -> None:
        """Write a consistent copy of the whole log to the new file `path`, without holding up writers."""
    def size_bytes(self) -> int:
        """Bytes the log takes up."""
    def data_version(self) -> int:
        """A number that changes whenever another connection commits: a cheap "anything new?" probe."""

    # -- sessions
    def get_session(self, session_id: str) -> Session | None:
        """The session, or None."""
    def set_claude_session(self, session_id: str, claude_session_id: str, cwd: str | None) -> None:
        """Remember the Claude Code conversation (and directory) the session continues from."""
    def list_sessions(self, limit: int = 50, after: tuple[float, str] | None = None) -> list[dict[str, Any]]:
        """Sessions by last activity, newest first, with task count, cost, first and last message."""
    def delete_session(self, session_id: str) -> int | None:
        """Delete a session with its tasks, events, approvals and transcripts; how many tasks, or None if unknown."""
    def mark_history_lost(self, session_id: str, reason: str) -> None:
        """Record that the session cannot be continued, and why (Session.history_lost)."""

    # -- Claude Code transcripts (keyed by Claude Code's session id; subpath "" is the main one)
    def append_transcript(self, session_id: str, claude_session_id: str, subpath: str,
                          entries: list[dict[str, Any]]) -> None:
        """Append transcript lines in order, kept with the Scout session; a line whose uuid is
        already stored there is skipped, and nothing is kept for a session that is gone."""
    def replace_transcript(self, session_id: str, claude_session_id: str, subpath: str,
                           entries: list[dict[str, Any]]) -> None:
        """Make the stored transcript exactly `entries`, atomically."""
    def load_transcript(self, claude_session_id: str, subpath: str = "") -> list[dict[str, Any]] | None:
        """The stored lines in the order appended, or None if there are none."""
    def transcript_length(self, claude_session_id: str, subpath: str = "") -> int:
        """How many lines are stored."""
    def transcript_uuids(self, claude_session_id: str, subpath: str = "") -> set[str]:
        """The uuids of the stored lines."""
    def transcript_subpaths(self, claude_session_id: str) -> list[str]:
        """The subagent transcripts stored for the conversation (never "")."""
    def delete_transcript(self, claude_session_id: str, subpath: str | None = None) -> None:
        """Delete a stored transcript; subpath None: the main one and every subagent's."""
    def set_session_workspace(self, session_id: str, workspace: dict[str, Any] | None) -> None:
        """Replace the session's workspace (scout.workspace.Workspace as a dict; None: shared)."""
    def session_workspaces(self) -> dict[str, dict[str, Any]]:
        """Every session's workspace that is not shared, by session id."""

    # -- tasks
    def create_task(self, message: str, options: dict[str, Any], session_id: str | None = None,
                    max_pending: int | None = None, workspace: dict[str, Any] | None = None,
                    node: str | None = None) -> Task | None:
        """A new pending task (and session) with its first status event, atomically; None when
        max_pending tasks already wait. `workspace` becomes the session's when it has none yet
        (or its worktree was discarded: base_commit null). `node`: only that node may run it."""
    def get_task(self, task_id: str) -> Task | None:
        """The task, or None."""
    def list_tasks(self, status: str | None = None, session_id: str | None = None,
                   limit: int = 50, before: int | None = None) -> list[Task]:
        """Tasks newest first, filtered; `before` is the previous page's last Task.num."""
    def session_tasks(self, session_id: str) -> list[Task]:
        """A session's tasks, oldest first."""
    def tasks_in(self, statuses: Iterable[str], node: str | None = None) -> list[Task]:
        """Every task in one of `statuses`, oldest first (with `node`, on a shared log: that node's)."""
    def count_by_status(self) -> dict[str, int]:
        """How many tasks have each status (every status present, 0 if none)."""
    def next_startable(self, limit: int) -> list[Task]:
        """Pending tasks, oldest first, whose session has nothing running, waiting or queued before them."""
    def claim(self, limit: int, node: str | None = None) -> list[Task]:
        """Move up to `limit` startable tasks (as next_startable, and pinned to no other node) to
        running on `node`, with their status events, atomically; them. No two claims get one task."""
    def transition(self, task_id: str, to: TaskStatus, *, only_from: Iterable[TaskStatus] | None = None,
                   error: str | None = None, result: dict[str, Any] | None = None,
                   unless_stop_requested: bool = False, note: dict[str, Any] | None = None,
                   **fields: Any) -> bool:
        """Change a task's status if vocab.TRANSITIONS allows it, with its status event, atomically;
        whether it happened. A terminal change reaches the task row even when the log is full."""
    def set_worker(self, task_id: str, pid: int, started: float, run_id: str | None = None) -> None:
        """Record the identity (pid and start time) of the task's leader process, and the task
        whose process tree it is (`run_id`; None: the task's own)."""
    def request_stop(self, task_id: str, by: str | None = None) -> None:
        """Mark the task as asked to stop (a worker checks it before it starts) and tell every
        node's on_stop_request callbacks; `by` names the node asking."""
    def on_stop_request(self, callback: Any) -> None:
        """Call callback(task_id, by) whenever any node requests a stop (nothing to call on SQLite)."""
    def set_workspace_start(self, task_id: str, tree: str) -> None:
        """Record the git tree the task's worktree held when it began (its changes count from it)."""
    def requeue(self, task_id: str) -> bool:
        """Put an active task that never really started back to pending, forgetting its worker."""
    def delete_task(self, task_id: str) -> bool:
        """Delete a task with its events and approvals, and its session (with its transcripts) if
        no task is left in it (one transaction); whether the task existed."""

    # -- events
    def append_event(self, task_id: str, type: str, payload: dict[str, Any]) -> int:
        """Append an event with the task's next seq (unique, gap-free, across processes); its seq.
        EventCapError past max_events_per_task, except for status events."""
    def events_after(self, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Up to `limit` of the task's events after `after_seq`, in seq order."""
    def iter_events(self, task_id: str, after_seq: int = 0, page: int = 1000) -> Iterator[Event]:
        """Every event of the task after `after_seq`, in seq order, read page by page."""
    def raw_events_after(self, task_id: str, after_seq: int, limit: int = 500) -> list[tuple]:
        """(seq, type, time, payload JSON text) of the task's events after `after_seq`, undecoded."""
    def raw_events_since_id(self, event_id: int, limit: int = 5000) -> list[tuple]:
        """(id, task_id, seq, type, time, payload JSON text) of every event with a larger id, by id."""
    def iter_event_json(self, task_id: str, page: int = 2000) -> Iterator[str]:
        """Each event of the task as its JSON object text, the payload pasted in as stored."""
    def last_event_time(self, task_id: str) -> float | None:
        """When the task last logged anything, or None."""
    def has_event(self, task_id: str, type: str) -> bool:
        """Has the task logged an event of this type?"""
    def max_event_id(self) -> int:
        """The largest event id in the log (0 if none); ids only grow."""
    def events_written(self) -> int:
        """Events ever written, deleted ones included."""
    def tasks_with_events_since(self, event_id: int) -> tuple[int, set[str]]:
        """(newest event id, ids of the tasks with events newer than `event_id`)."""
    def status_events_since(self, after_id: int, limit: int = 1000) -> tuple[int, list[Event]]:
        """(cursor, status events after the cursor `after_id`, in commit order); pass the cursor back
        in next time. The cursor and each event's id are positions in the log's status feed."""
    def status_head(self) -> int:
        """The status feed's newest position: where a follower with no stored cursor starts."""
    def event_feed(self, interval: float = 0.01) -> Any:
        """New events as they commit, for the SSE log watcher: an object whose poll(timeout)
        returns a FeedBatch."""
    def get_cursor(self, name: str) -> int | None:
        """The event id the durable reader `name` has handled everything up to, or None."""
    def set_cursor(self, name: str, event_id: int) -> None:
        """Store the durable reader's cursor."""

    # -- retention
    def prune_finished(self, finished_before: float, batch_events: int = 5000) -> dict[str, Any]:
        """Delete finished tasks that ended before the time, in short transactions, and the sessions
        (with their transcripts) they leave empty; what went."""
    def compact(self, vacuum_fraction: float = 0.1, vacuum: bool = True) -> dict[str, Any]:
        """Give free space back to the disk where the database can; what it did."""

    # -- approvals
    def ask_approval(self, task_id: str, tool_use_id: str, tool: str, tool_input: dict[str, Any],
                     request: dict[str, Any]) -> None:
        """Open an approval, move a running task to waiting and log the request, atomically."""
    def open_approvals(self, task_id: str) -> list[dict[str, Any]]:
        """The task's unanswered approvals, oldest first."""
    def decide_approval(self, task_id: str, decision: str, reason: str | None,
                        tool_use_id: str | None = None) -> str | None:
        """Answer the oldest open approval (or the named one); its tool_use_id, or None."""
    def approval_decision(self, task_id: str, tool_use_id: str) -> tuple[str, str | None] | None:
        """(decision, reason) once the approval is answered, else None."""


class LogPages:
    """A task's log read page by page, on top of a store's events_after and raw_events_after:
    the same for every backend, so written once (Store and PgStore both inherit it)."""

    def events_after(self, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        raise NotImplementedError

    def raw_events_after(self, task_id: str, after_seq: int, limit: int = 500) -> list[tuple]:
        raise NotImplementedError

    def iter_events(self, task_id: str, after_seq: int = 0, page: int = 1000) -> Iterator[Event]:
        """Every event of the task after `after_seq`, in seq order, read page by page."""
        while True:
            batch = self.events_after(task_id, after_seq, page)
            yield from batch
            if len(batch) < page:
                return
            after_seq = batch[-1].seq

    def iter_event_json(self, task_id: str, page: int = 2000) -> Iterator[str]:
        """Each event of a task as its JSON object text, payloads pasted as stored (no decode)."""
        after = 0
        while True:
            rows = self.raw_events_after(task_id, after, page)
            for seq, type_, at, payload in rows:
                yield f'{{"seq":{seq},"type":{json.dumps(type_)},"time":{at!r},"payload":{payload}}}'
            if len(rows) < page:
                return
            after = rows[-1][0]


class Store(LogPages, EventLog):
    """The event log in SQLite (WAL). One object per process; each thread gets its own connection.

    SQLite's own means stay in here: PRAGMA busy_timeout, synchronous, max_page_count (the
    SCOUT_DB_MAX_MB cap), data_version, user_version (the schema version), quick_check,
    incremental vacuum and WAL checkpoints.
    """

    # Past this many events a task's log refuses more (EventCapError); None: no cap.
    max_events_per_task: int | None = None
    # Whether other nodes may share this log: an SQLite file belongs to one machine's Scout.
    shared = False

    def __init__(self, path: str, busy_timeout: float = 30.0, migrate: bool = True,
                 max_bytes: int | None = None) -> None:
        self.path = os.path.abspath(path)
        self.url = self.path  # what another process (a worker) opens this store with
        # How long a write waits for another connection's write lock before StoreBusy: short
        # where someone waits for an answer (an HTTP request), as long as a task may stay idle
        # where the write must happen (a worker logging, the supervisor settling a task).
        self.busy_timeout = busy_timeout
        self.max_bytes = max_bytes  # a size cap: past it, writes fail as on a full disk
        self.last_write_error: str | None = None  # the latest failed write, until one succeeds
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        if migrate:
            self.migrate()

    # -- connections -------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if not self._all:
                self._private_files()
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")
            if self.max_bytes:
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {max(1, self.max_bytes // page)}")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _private_files(self) -> None:
        """The data directory 0700 and the database 0600 (SQLite gives its -wal and -shm the
        database's mode): other users of the machine read nothing of the log. A directory
        that is not ours, or is shared (sticky, like /tmp), is left as it is."""
        parent = os.path.dirname(self.path)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, mode=0o700, exist_ok=True)
        try:
            st = os.stat(parent or ".")
            if st.st_uid == os.getuid() and not st.st_mode & stat.S_ISVTX and st.st_mode & 0o077:
                os.chmod(parent or ".", 0o700)
        except OSError:
            pass
        if not os.path.exists(self.path):
            # Never open and close the file once it exists: closing any descriptor of a
            # database drops every POSIX lock this process's SQLite connections hold on it.
            try:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
        for path in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                if os.stat(path).st_mode & 0o077:
                    os.chmod(path, 0o600)
            except OSError:
                pass

    def close_thread(self) -> None:
        """Close the calling thread's connection (for short-lived threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            conn.close()

    def close(self) -> None:
        """Close every connection this object opened (call at process exit)."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def _write(self, fn, *args, probe: bool = False):
        """Run fn(conn, *args) in one IMMEDIATE transaction, turning SQLite errors into StoreError."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn, *args)
                conn.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself on some errors (SQLITE_FULL), not on all: a
                # failed COMMIT would otherwise keep the write lock, and every writer waiting.
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
            if not probe:
                self.last_write_error = None
            return out
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            if _busy(exc):  # not a failure of the database: it answers once the lock is released
                raise StoreBusy(self.busy_message()) from exc
            self.last_write_error = f"database error: {exc}"
            if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
                self.last_write_error += f"; {FULL_REMEDY}"
            raise StoreError(self.last_write_error) from exc

    def busy_message(self) -> str:
        return (f"database is locked: another process has held its write lock for over "
                f"{self.busy_timeout:g} s; running tasks wait for it and go on when it is released")

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._conn().execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            if _busy(exc):
                raise StoreBusy(self.busy_message()) from exc
            raise StoreError(f"database error: {exc}") from exc

    # -- schema ------------------------------------------------------------------

    def migrate(self) -> int:
        """Bring the file up to SCHEMA_VERSION; returns the version it had before."""
        conn = self._conn()
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone():
                # A new file: incremental vacuum must be chosen before the first table exists.
                # It lets every prune give its space back without rewriting the file (VACUUM).
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("PRAGMA journal_mode = WAL")
            before = conn.execute("PRAGMA user_version").fetchone()[0]
            if before > SCHEMA_VERSION:
                raise StoreError(f"database schema {before} is newer than this Scout ({SCHEMA_VERSION})")
            for version in range(before, SCHEMA_VERSION):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    current = conn.execute("PRAGMA user_version").fetchone()[0]
                    if current == version:  # another process may have migrated meanwhile
                        for statement in _split_sql(_MIGRATIONS[version]):
                            conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {version + 1}")
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            return before
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]

    def integrity_check(self) -> str:
        """SQLite's quick_check: 'ok' or the first problem found."""
        return self._read("PRAGMA quick_check")[0][0]

    def check_writable(self) -> None:
        """Raise StoreError if writes fail: a read-only file, a full disk or size cap, or the
        latest write by this process having failed."""
        def probe(conn):  # BEGIN IMMEDIATE alone proves the write lock can be taken
            pass
        self._write(probe, probe=True)
        if self.last_write_error:
            raise StoreError(self.last_write_error)
        problem = self.space_problem()
        if problem:
            raise StoreError(problem)

    def space_problem(self) -> str | None:
        """Why the log is (nearly) out of room, with the remedy; None while it has room.
        Free pages inside the file count as room: new rows reuse them."""
        if self.max_bytes:
            page, used, cap, free = (self._read(f"PRAGMA {p}")[0][0]
                                     for p in ("page_size", "page_count", "max_page_count", "freelist_count"))
            if (cap - used + free) * page < max(256 * 1024, self.max_bytes // 20):
                return (f"database is full: it has reached SCOUT_DB_MAX_MB ({self.max_bytes / 2**20:g} MB); "
                        f"{FULL_REMEDY}")
        disk = shutil.disk_usage(os.path.dirname(self.path)).free
        if disk < 16 * 2**20:
            return (f"disk is full: {disk // 1024} kB free where the database lives; free disk space, or "
                    f"delete old tasks with `scout prune --older-than N`")
        return None

    def backup(self, path: str) -> None:
        """Write a consistent copy of the whole log to `path` (a new file) while others write.

        SQLite's online backup API, in one step: the copy is the database as of one read
        transaction, which in WAL mode does not block writers (a stepwise copy would restart
        whenever another connection writes, and might never finish under a busy log)."""
        try:
            target = sqlite3.connect(path, isolation_level=None)
            try:
                self._conn().backup(target, pages=-1)
                target.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise StoreError(f"backup to {path} failed: {exc}") from exc

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap 'anything new?' probe."""
        return self._conn().execute("PRAGMA data_version").fetchone()[0]

    # -- sessions ----------------------------------------------------------------

    def get_session(self, session_id: str) -> Session | None:
        rows = self._read("SELECT * FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            return None
        r = rows[0]
        return Session(r["id"], r["claude_session_id"], r["cwd"], r["created_at"], r["updated_at"],
                       json.loads(r["workspace"]) if r["workspace"] else None, r["history_lost"])

    def set_session_workspace(self, session_id: str, workspace: dict[str, Any] | None) -> None:
        self._write(lambda conn: conn.execute("UPDATE sessions SET workspace = ? WHERE id = ?",
                                              (json.dumps(workspace) if workspace else None, session_id)))

    def session_workspaces(self) -> dict[str, dict[str, Any]]:
        """Every session's workspace that is not shared, by session id."""
        return {r["id"]: json.loads(r["workspace"])
                for r in self._read("SELECT id, workspace FROM sessions WHERE workspace IS NOT NULL")}

    def set_claude_session(self, session_id: str, claude_session_id: str, cwd: str | None) -> None:
        """Remember which Claude Code conversation (and directory) the session continues from."""
        def fn(conn):
            conn.execute(
                "UPDATE sessions SET claude_session_id = ?, cwd = COALESCE(?, cwd), updated_at = ?"
                " WHERE id = ?", (claude_session_id, cwd, time.time(), session_id))
        self._write(fn)

    def list_sessions(self, limit: int = 50, after: tuple[float, str] | None = None) -> list[dict[str, Any]]:
        """Sessions by last activity, newest first, each with its task count, total cost, and
        first (its title) and last message. ``after`` is the (last_activity, session_id) of
        the previous page's last row."""
        params: list[Any] = []
        where = ""
        if after is not None:
            where = "WHERE (s.updated_at, s.id) < (?, ?)"
            params.extend(after)
        params.append(limit)
        rows = self._read(
            "SELECT s.id, s.cwd, s.created_at, s.updated_at, s.history_lost,"
            " (SELECT COUNT(*) FROM tasks t WHERE t.session_id = s.id) AS task_count,"
            " (SELECT COALESCE(SUM(json_extract(t.result, '$.total_cost_usd')), 0)"
            "   FROM tasks t WHERE t.session_id = s.id) AS total_cost,"
            " (SELECT t.message FROM tasks t WHERE t.session_id = s.id ORDER BY t.num LIMIT 1) AS first_message,"
            " (SELECT t.message FROM tasks t WHERE t.session_id = s.id ORDER BY t.num DESC LIMIT 1) AS last_message,"
            " (SELECT t.status FROM tasks t WHERE t.session_id = s.id ORDER BY t.num DESC LIMIT 1) AS last_status"
            f" FROM sessions s {where} ORDER BY s.updated_at DESC, s.id DESC LIMIT ?", params)
        return [{"session_id": r["id"], "cwd": r["cwd"], "task_count": r["task_count"],
                 "first_message": r["first_message"], "last_message": r["last_message"],
                 "last_status": r["last_status"], "total_cost_usd": r["total_cost"],
                 "created_at": r["created_at"], "last_activity": r["updated_at"],
                 "can_continue": r["history_lost"] is None} for r in rows]

    def delete_session(self, session_id: str) -> int | None:
        """Delete a session with its tasks and their events; None if there is no such session."""
        def fn(conn):
            if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
                return None
            ids = [r[0] for r in conn.execute("SELECT id FROM tasks WHERE session_id = ?", (session_id,))]
            for task_id in ids:
                conn.execute("DELETE FROM events WHERE task_id = ?", (task_id,))
                conn.execute("DELETE FROM approvals WHERE task_id = ?", (task_id,))
            conn.execute("DELETE FROM tasks WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM transcripts WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            return len(ids)
        return self._write(fn)

    def mark_history_lost(self, session_id: str, reason: str) -> None:
        """Record that the session's conversation cannot be continued, and why."""
        self._write(lambda conn: conn.execute(
            "UPDATE sessions SET history_lost = ? WHERE id = ?", (reason, session_id)))

    # -- Claude Code transcripts -------------------------------------------------------
    # Claude Code's own record of a conversation (one JSON object per line of its
    # ~/.claude/projects/.../<id>.jsonl), kept with the Scout session it belongs to so that
    # the conversation can be continued when that file is gone. `subpath` is "" for the
    # main transcript, e.g. "subagents/agent-x" for a subagent's.

    def append_transcript(self, session_id: str, claude_session_id: str, subpath: str,
                          entries: list[dict[str, Any]]) -> None:
        """Append lines in order; a line whose uuid is already stored there is skipped."""
        self._write(_insert_transcript, session_id, claude_session_id, subpath, entries)

    def replace_transcript(self, session_id: str, claude_session_id: str, subpath: str,
                           entries: list[dict[str, Any]]) -> None:
        """Make the stored transcript exactly `entries`, in one transaction."""
        def fn(conn):
            conn.execute("DELETE FROM transcripts WHERE claude_session_id = ? AND subpath = ?",
                         (claude_session_id, subpath))
            _insert_transcript(conn, session_id, claude_session_id, subpath, entries)
        self._write(fn)

    def load_transcript(self, claude_session_id: str, subpath: str = "") -> list[dict[str, Any]] | None:
        """The stored lines in the order they were appended; None if there are none."""
        rows = self._read("SELECT entry FROM transcripts WHERE claude_session_id = ? AND subpath = ?"
                          " ORDER BY id", (claude_session_id, subpath))
        return [json.loads(r[0]) for r in rows] or None

    def transcript_length(self, claude_session_id: str, subpath: str = "") -> int:
        return self._read("SELECT COUNT(*) FROM transcripts WHERE claude_session_id = ? AND subpath = ?",
                          (claude_session_id, subpath))[0][0]

    def transcript_uuids(self, claude_session_id: str, subpath: str = "") -> set[str]:
        """The uuids of the stored lines (lines without one are not counted)."""
        return {r[0] for r in self._read(
            "SELECT uuid FROM transcripts WHERE claude_session_id = ? AND subpath = ? AND uuid IS NOT NULL",
            (claude_session_id, subpath))}

    def transcript_subpaths(self, claude_session_id: str) -> list[str]:
        """The subagent transcripts stored for a conversation (never "", the main one)."""
        return [r[0] for r in self._read(
            "SELECT DISTINCT subpath FROM transcripts WHERE claude_session_id = ? AND subpath != ''"
            " ORDER BY subpath", (claude_session_id,))]

    def delete_transcript(self, claude_session_id: str, subpath: str | None = None) -> None:
        """Delete a stored transcript; subpath None: the main one and all its subagents'."""
        if subpath is None:
            self._write(lambda conn: conn.execute(
                "DELETE FROM transcripts WHERE claude_session_id = ?", (claude_session_id,)))
        else:
            self._write(lambda conn: conn.execute(
                "DELETE FROM transcripts WHERE claude_session_id = ? AND subpath = ?",
                (claude_session_id, subpath)))

    # -- tasks -------------------------------------------------------------------

    def create_task(self, message: str, options: dict[str, Any], session_id: str | None = None,
                    max_pending: int | None = None, workspace: dict[str, Any] | None = None,
                    node: str | None = None) -> Task | None:
        """Insert a pending task (and its session if new) with its first event, atomically;
        `workspace` (None: shared) becomes the session's.

        Returns None, writing nothing, when max_pending tasks are already waiting. ``node``
        (the node it must run on) matters only on a shared log: here there is one node.
        """
        task_id = new_id()
        session_id = session_id or new_id()
        now = time.time()

        def fn(conn):
            if max_pending is not None:
                waiting = conn.execute("SELECT COUNT(*) FROM tasks WHERE status = ?", (PENDING,)).fetchone()[0]
                if waiting >= max_pending:
                    return None
            conn.execute(
                "INSERT INTO sessions (id, cwd, created_at, updated_at, workspace) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at,"
                # a session's workspace is set by its first task, and again after a discard
                " workspace = CASE WHEN json_extract(sessions.workspace, '$.base_commit') IS NULL"
                "  THEN excluded.workspace ELSE sessions.workspace END",
                (session_id, options.get("cwd"), now, now, json.dumps(workspace) if workspace else None))
            conn.execute(
                "INSERT INTO tasks (id, session_id, status, message, options, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (task_id, session_id, PENDING, message, json.dumps(options), now))
            _append(conn, task_id, EventType.STATUS, {"status": PENDING}, now)
            return conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()

        row = self._write(fn)
        return _task(row) if row is not None else None

    def get_task(self, task_id: str) -> Task | None:
        rows = self._read("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return _task(rows[0]) if rows else None

    def list_tasks(self, status: str | None = None, session_id: str | None = None,
                   limit: int = 50, before: int | None = None) -> list[Task]:
        """Newest first; `before` is a cursor (a task's num) for the next page."""
        where: list[str] = []
        params: list[Any] = []
        if status:
            where.append("status = ?")
            params.append(status)
        if session_id:
            where.append("session_id = ?")
            params.append(session_id)
        if before is not None:
            where.append("num < ?")
            params.append(before)
        sql = "SELECT * FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY num DESC LIMIT ?"
        params.append(limit)
        return [_task(r) for r in self._read(sql, params)]

    def session_tasks(self, session_id: str) -> list[Task]:
        return [_task(r) for r in self._read(
            "SELECT * FROM tasks WHERE session_id = ? ORDER BY num", (session_id,))]

    def tasks_in(self, statuses: Iterable[str], node: str | None = None) -> list[Task]:
        """Tasks in these statuses, oldest first (``node`` matters only on a shared log)."""
        statuses = tuple(statuses)
        marks = ",".join("?" * len(statuses))
        return [_task(r) for r in self._read(
            f"SELECT * FROM tasks WHERE status IN ({marks}) ORDER BY num", statuses)]

    def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {s: 0 for s in STATUSES}
        for r in self._read("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status"):
            counts[r["status"]] = r["n"]
        return counts

    def next_startable(self, limit: int) -> list[Task]:
        """Pending tasks, oldest first, whose session has no task running or waiting."""
        return [_task(r) for r in self._read(_STARTABLE, (PENDING, RUNNING, WAITING, PENDING, limit))]

    def claim(self, limit: int, node: str | None = None) -> list[Task]:
        """Move up to ``limit`` startable tasks (see next_startable) to running and log it, in
        one transaction; returns them. (SQLite's single writer makes the claim exclusive.)"""
        def fn(conn):
            rows = conn.execute(_STARTABLE, (PENDING, RUNNING, WAITING, PENDING, limit)).fetchall()
            now = time.time()  # taken under the claim's lock, so start times follow claim order
            start = _Change(RUNNING, fields={"node": node})
            claimed = [r["id"] for r in rows if _transition(conn, r["id"], start, now)]
            return [conn.execute("SELECT * FROM tasks WHERE id = ?", (i,)).fetchone() for i in claimed]
        return [_task(r) for r in self._write(fn)]

    def transition(self, task_id: str, to: TaskStatus, *, only_from: Iterable[TaskStatus] | None = None,
                   error: str | None = None, result: dict[str, Any] | None = None,
                   unless_stop_requested: bool = False, note: dict[str, Any] | None = None,
                   **fields: Any) -> bool:
        """Move a task to `to` if vocab.TRANSITIONS allows it from its status, logging a status event.

        `only_from` narrows the legal starting statuses for this call (start only what is
        pending, for instance); it can never widen them. `unless_stop_requested` leaves a
        task alone once someone asked to stop it. `note` adds keys to the status event;
        `fields` are other columns to set. The check, the update and the event are one
        transaction: a status change is in the log exactly when it happened. Returns
        whether it happened.
        """
        change = _Change(TaskStatus(to), _narrowed(to, only_from), error, result,
                         unless_stop_requested, note or {}, fields)
        now = time.time()
        try:
            return self._write(_transition, task_id, change, now)
        except StoreError as exc:
            if "full" not in str(exc) or change.to not in TERMINAL:
                raise
            # The log cannot grow: still record the ending on the task row itself, so
            # no task is left in a false state (its last event is then not a status).
            change.log_event = False
            change.error = f"{error or 'the task could not be logged'} ({exc})"[:1000]
            conn = self._conn()
            if self.max_bytes:  # our own cap: allow a little headroom for this ending
                conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA max_page_count').fetchone()[0] + 64}")
            try:
                return self._write(_transition, task_id, change, now)
            finally:
                if self.max_bytes:
                    page = conn.execute("PRAGMA page_size").fetchone()[0]
                    conn.execute(f"PRAGMA max_page_count = {max(1, self.max_bytes // page)}")
    def set_worker(self, task_id: str, pid: int, started: float, run_id: str | None = None) -> None:
        """Record the worker's identity: its pid and its process start time, and its tree's task."""
        def fn(conn):
            conn.execute("UPDATE tasks SET worker_pid = ?, worker_started = ?, run_id = ? WHERE id = ?",
                         (pid, started, run_id or task_id, task_id))
        self._write(fn)

    def set_workspace_start(self, task_id: str, tree: str) -> None:
        self._write(lambda conn: conn.execute("UPDATE tasks SET workspace_start = ? WHERE id = ?", (tree, task_id)))

    def has_event(self, task_id: str, type: str) -> bool:
        return bool(self._read("SELECT 1 FROM events WHERE task_id = ? AND type = ? LIMIT 1", (task_id, type)))

    def request_stop(self, task_id: str, by: str | None = None) -> None:
        """Mark the task to be stopped (``by``: the node asking; there is one node here)."""
        def fn(conn):
            conn.execute("UPDATE tasks SET stop_requested = 1 WHERE id = ?", (task_id,))
        self._write(fn)

    def requeue(self, task_id: str) -> bool:
        """Put an active task that never really started back in the queue (forgetting its worker)."""
        return self.transition(task_id, PENDING, note={"requeued": True},
                               started_at=None, worker_pid=None, worker_started=None, run_id=None)

    def delete_task(self, task_id: str) -> bool:
        """Delete a task with its events and approvals, and its session if this was the
        session's last task (a conversation with nothing in it is no conversation, as
        retention also judges); whether the task existed."""
        def fn(conn):
            row = conn.execute("SELECT session_id FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM events WHERE task_id = ?", (task_id,))
            conn.execute("DELETE FROM approvals WHERE task_id = ?", (task_id,))
            conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
            session_id = row["session_id"]
            if conn.execute("DELETE FROM sessions WHERE id = ? AND NOT EXISTS"
                            " (SELECT 1 FROM tasks WHERE session_id = ?)", (session_id, session_id)).rowcount:
                conn.execute("DELETE FROM transcripts WHERE session_id = ?", (session_id,))
            return True
        return self._write(fn)

    # -- events ------------------------------------------------------------------

    def append_event(self, task_id: str, type: str, payload: dict[str, Any]) -> int:
        """Append one event; returns its seq. Committed before this returns.

        A task that already has max_events_per_task events gets EventCapError instead
        (status events are always logged: a task's ending must reach the log).
        """
        cap = self.max_events_per_task
        if cap and type != EventType.STATUS:
            return self._write(_append_capped, task_id, type, payload, time.time(), cap)
        return self._write(_append, task_id, type, payload, time.time())

    def events_after(self, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        return [_event(r) for r in self._read(
            "SELECT * FROM events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (task_id, after_seq, limit))]

    def raw_events_after(self, task_id: str, after_seq: int, limit: int = 500) -> list[tuple]:
        """(seq, type, time, payload JSON text) of a task's events after after_seq, undecoded."""
        return [tuple(r) for r in self._read(
            "SELECT seq, type, time, payload FROM events WHERE task_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (task_id, after_seq, limit))]

    def raw_events_since_id(self, event_id: int, limit: int = 5000) -> list[tuple]:
        """(id, task_id, seq, type, time, payload JSON text) of every event newer than event_id."""
        return [tuple(r) for r in self._read(
            "SELECT id, task_id, seq, type, time, payload FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (event_id, limit))]

    def last_event_time(self, task_id: str) -> float | None:
        rows = self._read("SELECT MAX(time) FROM events WHERE task_id = ?", (task_id,))
        return rows[0][0]

    def max_event_id(self) -> int:
        return self._read("SELECT COALESCE(MAX(id), 0) FROM events")[0][0]

    def status_head(self) -> int:
        """Where a new follower of status_events_since starts: here, the newest event id."""
        return self.max_event_id()

    def event_feed(self, interval: float = 0.01) -> "SqliteFeed":
        """New events as they commit, for the SSE log watcher."""
        return SqliteFeed(self, interval)

    def on_stop_request(self, callback: Any) -> None:
        """Nothing to listen for: only this server's own routes stop its tasks."""
        return None

    def get_cursor(self, name: str) -> int | None:
        """The event id a durable reader called ``name`` has handled everything up to."""
        rows = self._read("SELECT event_id FROM cursors WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def set_cursor(self, name: str, event_id: int) -> None:
        self._write(lambda conn: conn.execute(
            "INSERT INTO cursors (name, event_id) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET event_id = excluded.event_id", (name, event_id)))

    def tasks_with_events_since(self, event_id: int) -> tuple[int, set[str]]:
        """(newest event id, ids of tasks with events newer than event_id)."""
        rows = self._read("SELECT id, task_id FROM events WHERE id > ? ORDER BY id", (event_id,))
        if not rows:
            return event_id, set()
        return rows[-1]["id"], {r["task_id"] for r in rows}

    # -- operations: retention, compaction, following, metrics ---------------------

    def prune_finished(self, finished_before: float, batch_events: int = 5000) -> dict[str, Any]:
        """Delete finished tasks that ended before `finished_before` with their events and
        approvals, and the sessions this leaves without tasks.

        Only completed, failed and cancelled tasks are ever deleted. Each transaction
        deletes at most about `batch_events` events, so the write lock is never held long
        (workers keep logging meanwhile); a big task loses its events over several
        transactions, its row last. Returns {"tasks", "events", "sessions", "task_ids"}.
        """
        out: dict[str, Any] = {"tasks": 0, "events": 0, "sessions": 0, "task_ids": []}

        def fn(conn) -> tuple[bool, dict[str, Any]]:
            """One transaction's worth: (anything left?, what it deleted)."""
            done: dict[str, Any] = {"tasks": 0, "events": 0, "sessions": 0, "task_ids": []}
            budget = batch_events
            rows = conn.execute(
                "SELECT id, session_id FROM tasks WHERE status IN (?, ?, ?)"
                " AND COALESCE(finished_at, created_at) < ? ORDER BY num LIMIT 500",
                (*TERMINAL, finished_before)).fetchall()
            sessions = set()
            more = len(rows) == 500
            for r in rows:
                gone = conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE task_id = ?"
                                    " ORDER BY seq DESC LIMIT ?)", (r["id"], budget + 1)).rowcount
                done["events"] += gone
                budget -= gone
                if budget < 0:  # it had more: the rest in the next transaction
                    more = True
                    break
                conn.execute("DELETE FROM approvals WHERE task_id = ?", (r["id"],))
                conn.execute("DELETE FROM tasks WHERE id = ?", (r["id"],))
                done["tasks"] += 1
                done["task_ids"].append(r["id"])
                sessions.add(r["session_id"])
            for session_id in sessions:
                gone = conn.execute(
                    "DELETE FROM sessions WHERE id = ? AND NOT EXISTS"
                    " (SELECT 1 FROM tasks WHERE session_id = ?)", (session_id, session_id)).rowcount
                if gone:  # its conversation's mirrored transcript goes with it
                    conn.execute("DELETE FROM transcripts WHERE session_id = ?", (session_id,))
                done["sessions"] += gone
            return more, done

        more = True
        while more:
            more, done = self._write(fn)
            for key in ("tasks", "events", "sessions", "task_ids"):
                out[key] += done[key]
        return out

    def compact(self, vacuum_fraction: float = 0.1, vacuum: bool = True) -> dict[str, Any]:
        """Give free pages back to the disk and empty the WAL file.

        An incremental-vacuum database (every one Scout creates) frees all its free pages;
        any other is VACUUMed (and switched to incremental vacuum) once free pages are
        `vacuum_fraction` of it, if `vacuum` allows (VACUUM holds the write lock for as
        long as it copies the file).
        """
        conn = self._conn()
        try:
            auto, free, pages = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                                 for p in ("auto_vacuum", "freelist_count", "page_count"))
            vacuumed = False
            if auto == 2 and free:
                # With a page count, and run to completion: Python's execute() steps a
                # statement once, and each step of incremental_vacuum frees one page.
                conn.executescript(f"PRAGMA incremental_vacuum({free});")
            elif auto != 2 and vacuum and free and free >= pages * vacuum_fraction:
                conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
                conn.execute("VACUUM")
                vacuumed = True
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            return {"free_pages": free, "vacuumed": vacuumed, "checkpointed": not busy}
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    def status_events_since(self, after_id: int, limit: int = 1000) -> tuple[int, list[Event]]:
        """(cursor, status events with ids after after_id): what a follower of task state
        changes reads next. Pass the cursor back in; it moves past other events too."""
        top = self._read("SELECT COALESCE(MAX(id), 0) FROM events")[0][0]
        if top <= after_id:
            return after_id, []
        rows = self._read("SELECT * FROM events WHERE id > ? AND id <= ? AND type = ?"
                          " ORDER BY id LIMIT ?", (after_id, top, EventType.STATUS, limit))
        if len(rows) == limit:
            top = rows[-1]["id"]
        return top, [_event(r) for r in rows]

    def events_written(self) -> int:
        """Events ever written to this database (ids are never reused, even after deletes)."""
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return rows[0][0] if rows else 0

    # -- approvals ---------------------------------------------------------------

    def ask_approval(self, task_id: str, tool_use_id: str, tool: str, tool_input: dict[str, Any],
                     request: dict[str, Any]) -> None:
        """Open an approval, move a running task to waiting and log the approval_request
        event (`request`), in one transaction: whoever sees "waiting" also finds the request.
        A task whose stop was requested stays running (it is about to be ended)."""
        now = time.time()
        cap = self.max_events_per_task

        def fn(conn):
            conn.execute(
                "INSERT OR IGNORE INTO approvals (task_id, tool_use_id, tool, input, asked_at)"
                " VALUES (?, ?, ?, ?, ?)", (task_id, tool_use_id, tool, json.dumps(tool_input), now))
            _transition(conn, task_id, _Change(WAITING, unless_stop_requested=True), now)
            if cap:
                _append_capped(conn, task_id, EventType.APPROVAL_REQUEST, request, now, cap)
            else:
                _append(conn, task_id, EventType.APPROVAL_REQUEST, request, now)
        self._write(fn)

    def open_approvals(self, task_id: str) -> list[dict[str, Any]]:
        return [{"tool_use_id": r["tool_use_id"], "tool": r["tool"], "input": json.loads(r["input"]),
                 "asked_at": r["asked_at"]}
                for r in self._read("SELECT * FROM approvals WHERE task_id = ? AND decision IS NULL"
                                    " ORDER BY asked_at", (task_id,))]

    def decide_approval(self, task_id: str, decision: str, reason: str | None,
                        tool_use_id: str | None = None) -> str | None:
        """Answer the oldest open approval (or the named one); returns its tool_use_id or None."""
        def fn(conn):
            sql = "SELECT tool_use_id FROM approvals WHERE task_id = ? AND decision IS NULL"
            params: list[Any] = [task_id]
            if tool_use_id:
                sql += " AND tool_use_id = ?"
                params.append(tool_use_id)
            row = conn.execute(sql + " ORDER BY asked_at LIMIT 1", params).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE approvals SET decision = ?, reason = ?, decided_at = ?"
                         " WHERE task_id = ? AND tool_use_id = ?",
                         (decision, reason, time.time(), task_id, row["tool_use_id"]))
            return row["tool_use_id"]
        return self._write(fn)

    def approval_decision(self, task_id: str, tool_use_id: str) -> tuple[str, str | None] | None:
        rows = self._read("SELECT decision, reason FROM approvals WHERE task_id = ? AND tool_use_id = ?",
                          (task_id, tool_use_id))
        if not rows or rows[0]["decision"] is None:
            return None
        return rows[0]["decision"], rows[0]["reason"]


class SqliteFeed:
    """New events for the log watcher: SQLite has no notifications, so it probes
    `PRAGMA data_version` (it changes whenever another connection commits) every
    ``interval`` and reads what came after the last id seen (ids commit in order here)."""

    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.last_id = store.max_event_id()
        self.version = store.data_version()

    def poll(self, timeout: float) -> FeedBatch:
        deadline = time.monotonic() + timeout
        while True:
            now = self.store.data_version()
            if now != self.version:
                break
            if time.monotonic() >= deadline:
                return FeedBatch([])
            time.sleep(self.interval)
        self.version = now
        rows = self.store.raw_events_since_id(self.last_id)
        while rows and len(rows) % 5000 == 0:
            more = self.store.raw_events_since_id(rows[-1][0])
            if not more:
                break
            rows.extend(more)
        if rows:
            self.last_id = rows[-1][0]
        return FeedBatch(rows)


_STARTABLE = ("SELECT * FROM tasks t WHERE t.status = ? AND NOT EXISTS ("
              " SELECT 1 FROM tasks u WHERE u.session_id = t.session_id AND u.status IN (?, ?))"
              " AND NOT EXISTS (SELECT 1 FROM tasks v WHERE v.session_id = t.session_id"
              "  AND v.status = ? AND v.num < t.num)"
              " ORDER BY t.num LIMIT ?")


@dataclass
class _Change:
    """One status change asked of Store.transition, as _transition applies it."""

    to: TaskStatus
    only_from: frozenset[TaskStatus] | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    unless_stop_requested: bool = False
    note: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    log_event: bool = True

    def allows(self, status: str, stop_requested: bool) -> bool:
        """May a task in `status` (asked to stop or not) make this change?"""
        if not can_transition(status, self.to):
            return False
        if self.only_from is not None and status not in self.only_from:
            return False
        return not (self.unless_stop_requested and stop_requested)

    def applied(self, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the task columns to set, the status event's payload) of this change made at `now`."""
        sets: dict[str, Any] = {"status": self.to, **self.fields}
        if self.to == RUNNING and "started_at" not in self.fields:
            sets["started_at"] = now
        if self.to in TERMINAL:
            sets["finished_at"] = now
        if self.error is not None:
            sets["error"] = self.error
        if self.result is not None:
            sets["result"] = json.dumps(self.result)
        payload: dict[str, Any] = {"status": self.to, **self.note}
        if self.error is not None:
            payload["error"] = self.error
        return sets, payload


def _narrowed(to: str, only_from: Iterable[str] | None) -> frozenset[TaskStatus] | None:
    """`only_from` as statuses, refusing any the transition table does not allow to reach `to`."""
    if only_from is None:
        return None
    narrowed = frozenset(TaskStatus(s) for s in only_from)
    illegal = [s for s in narrowed if not can_transition(s, to)]
    if illegal:
        raise ValueError(f"illegal transition to {to} from {', '.join(sorted(illegal))}")
    return narrowed


def _transition(conn: sqlite3.Connection, task_id: str, change: _Change, now: float) -> bool:
    """Apply a status change if the table (and the change's own limits) allow it; must run
    inside a write transaction. Returns whether it happened."""
    row = conn.execute("SELECT status, stop_requested FROM tasks WHERE id = ?", (task_id,)).fetchone()
    if row is None or not change.allows(row["status"], bool(row["stop_requested"])):
        return False
    sets, payload = change.applied(now)
    cols = ", ".join(f"{k} = ?" for k in sets)
    conn.execute(f"UPDATE tasks SET {cols} WHERE id = ?", (*sets.values(), task_id))
    if change.log_event:
        _append(conn, task_id, EventType.STATUS, payload, now)
    return True


def _append(conn: sqlite3.Connection, task_id: str, type: str, payload: dict[str, Any], now: float) -> int:
    """Insert an event with the next seq for its task; must run inside a write transaction."""
    row = conn.execute(
        "INSERT INTO events (task_id, seq, type, time, payload) VALUES"
        " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE task_id = ?), ?, ?, ?)"
        " RETURNING seq", (task_id, task_id, type, now, json.dumps(payload))).fetchone()
    return row[0]


def _append_capped(conn: sqlite3.Connection, task_id: str, type: str, payload: dict[str, Any],
                   now: float, cap: int) -> int:
    """_append, unless the task already has `cap` events."""
    count = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE task_id = ?", (task_id,)).fetchone()[0]
    if count >= cap:
        raise EventCapError(f"the task reached the limit of {cap} logged events (SCOUT_MAX_EVENTS_PER_TASK); "
                            f"its log takes no more, so it was stopped")
    return _append(conn, task_id, type, payload, now)


def _busy(exc: sqlite3.Error) -> bool:
    """Did SQLite give up waiting for a lock another connection holds (SQLITE_BUSY/LOCKED)?"""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _insert_transcript(conn: sqlite3.Connection, session_id: str, claude_session_id: str, subpath: str,
                       entries: list[dict[str, Any]]) -> None:
    """Insert transcript lines in order, skipping those whose uuid is already stored there,
    and all of them if the session is gone: a worker's last flush can come after a delete."""
    conn.executemany(
        "INSERT OR IGNORE INTO transcripts (session_id, claude_session_id, subpath, uuid, entry)"
        " SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?)",
        [(session_id, claude_session_id, subpath, e.get("uuid") if isinstance(e.get("uuid"), str) else None,
          json.dumps(e, separators=(",", ":")), session_id) for e in entries])


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
