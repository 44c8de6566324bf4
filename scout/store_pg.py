"""The event log on PostgreSQL: the same contract as scout/store.py's SQLite Store, for
several Scout nodes sharing one log. All of its SQL lives here.

Why it is built the way it is:

* **Gap-free `seq` per task with many writers.** Each task has a counter row
  (`event_seqs`); an append bumps it (`UPDATE … RETURNING`) and inserts the event in the
  same statement. The row lock serialises the task's writers until commit, and a rolled
  back append rolls its number back too, so numbers are unique, gap-free, and commit in
  order. Writers of different tasks never wait for each other.
* **A commit-ordered feed of status changes.** Event ids come from a sequence, so they
  are *not* in commit order: a reader that remembers "the last id I saw" may skip an
  event committed late under a lower id. Status events also take the next position of
  one counter row (`status_feed`), locked until their transaction commits: positions
  are gap-free and commit in order, so the webhook notifier and the status follower
  resume from a position and never miss one. Only status changes pay that (they are few).
* **LISTEN/NOTIFY.** Every append notifies `scout_events` with "task seq type" at commit
  (delivery is in commit order); a stop request notifies `scout_stop`. One listening
  connection per server process (`Listener`) wakes the SSE log watcher, the status
  follower and the supervisor: nothing polls the database for news.
* **Claims with `FOR UPDATE SKIP LOCKED`.** A node takes the oldest startable pending
  tasks, skipping rows another node is claiming; a partial unique index lets at most one
  task per session be running or waiting, whatever the nodes do.
* **Nodes and leases.** Each server is a row in `nodes` with a lease renewed by its
  heartbeat, timed by the database's clock (the nodes' clocks may disagree). Another
  node fails the running tasks of a node whose lease lapsed, once (see `reap_lost_nodes`).
* **Versioned migrations**, each in a transaction, under an advisory lock so that nodes
  starting together migrate once.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
import zlib
from collections import deque
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from .store import (Event, EventCapError, FeedBatch, LogPages, Session, StoreError, Task, _Change, _event,
                    _narrowed, _task, new_id)
from .vocab import ACTIVE, FAILED, NODE_LOST, PENDING, RUNNING, STATUSES, TERMINAL, WAITING, EventType, TaskStatus

log = logging.getLogger("scout.store")

SCHEMA_VERSION = 4
# libpq's TCP keepalives on every connection: a peer that vanished is noticed in ~11 s, not hours.
KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
EVENTS_CHANNEL, STOP_CHANNEL = "scout_events", "scout_stop"
_MIGRATE_LOCK = zlib.crc32(b"scout:migrate")

_MIGRATIONS: list[str] = [
    # 1: the first schema, with nodes.
    """
    CREATE TABLE sessions (
        id text PRIMARY KEY,
        claude_session_id text,
        cwd text,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    );
    CREATE INDEX sessions_by_activity ON sessions (updated_at, id);
    CREATE TABLE tasks (
        num bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        session_id text NOT NULL,
        status text NOT NULL,
        message text NOT NULL,
        options text NOT NULL,
        created_at double precision NOT NULL,
        started_at double precision,
        finished_at double precision,
        error text,
        result text,
        worker_pid integer,
        worker_started double precision,
        stop_requested boolean NOT NULL DEFAULT false,
        node text,
        want_node text
    );
    CREATE INDEX tasks_by_status ON tasks (status, num);
    CREATE INDEX tasks_by_session ON tasks (session_id, num);
    CREATE INDEX tasks_active_by_node ON tasks (node) WHERE status IN ('running', 'waiting');
    CREATE UNIQUE INDEX tasks_one_active_per_session ON tasks (session_id) WHERE status IN ('running', 'waiting');
    CREATE TABLE event_seqs (
        task_id text PRIMARY KEY,
        last_seq bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        task_id text NOT NULL,
        seq bigint NOT NULL,
        type text NOT NULL,
        time double precision NOT NULL,
        payload text NOT NULL,
        feed bigint UNIQUE,
        UNIQUE (task_id, seq)
    );
    CREATE TABLE status_feed (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        pos bigint NOT NULL
    );
    INSERT INTO status_feed (pos) VALUES (0);
    CREATE TABLE approvals (
        task_id text NOT NULL,
        tool_use_id text NOT NULL,
        tool text NOT NULL,
        input text NOT NULL,
        asked_at double precision NOT NULL,
        decision text,
        reason text,
        decided_at double precision,
        PRIMARY KEY (task_id, tool_use_id)
    );
    CREATE TABLE cursors (
        name text PRIMARY KEY,
        event_id bigint NOT NULL
    );
    CREATE TABLE nodes (
        id text PRIMARY KEY,
        version text,
        url text,
        started_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL,
        lease double precision NOT NULL,
        max_workers integer,
        lost_at timestamptz
    );
    """,
    # 2: workspaces (as SQLite's 5): a session's (JSON; NULL: shared) and a task's starting tree.
    """
    ALTER TABLE sessions ADD COLUMN workspace text;
    ALTER TABLE tasks ADD COLUMN workspace_start text;
    """,
    # 3: Claude Code's transcripts, mirrored line by line, and why a session cannot be
    # continued (as SQLite's 7): a follow-up claimed by any node resumes from the log.
    """
    CREATE TABLE transcripts (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id text NOT NULL,
        claude_session_id text NOT NULL,
        subpath text NOT NULL DEFAULT '',
        uuid text,
        entry text NOT NULL
    );
    CREATE UNIQUE INDEX transcripts_by_line ON transcripts (claude_session_id, subpath, uuid);
    CREATE INDEX transcripts_by_session ON transcripts (session_id);
    ALTER TABLE sessions ADD COLUMN history_lost text;
    """,
    # 4: the task whose process tree ran each task (as SQLite's 8): warm sessions.
    """
    ALTER TABLE tasks ADD COLUMN run_id text;
    """,
]
assert len(_MIGRATIONS) == SCHEMA_VERSION

_TASK_COLUMNS = frozenset({"status", "started_at", "finished_at", "error", "result", "worker_pid",
                           "worker_started", "node", "run_id"})

_APPEND = """
WITH s AS (UPDATE event_seqs SET last_seq = last_seq + 1 WHERE task_id = %(t)s {cap} RETURNING last_seq),
     e AS (INSERT INTO events (task_id, seq, type, time, payload{feed_col})
           SELECT %(t)s, s.last_seq, %(type)s, %(time)s, %(payload)s{feed_val} FROM s{feed_from} RETURNING seq)
SELECT seq, pg_notify('scout_events', %(t)s || ' ' || seq || ' ' || %(type)s) FROM e
"""
_FEED = ", f AS (UPDATE status_feed SET pos = pos + 1 RETURNING pos)"


def _append_sql(status: bool, capped: bool) -> str:
    text = _APPEND.format(cap="AND last_seq < %(cap)s" if capped else "",
                          feed_col=", feed" if status else "", feed_val=", f.pos" if status else "",
                          feed_from=", f" if status else "")
    if status:  # the feed counter is bumped (and locked) only by status events
        text = text.replace("WITH s AS", "WITH" + _FEED[1:] + ", s AS", 1)
    return text


_SQL_APPEND = {(s, c): _append_sql(s, c) for s in (False, True) for c in (False, True)}


def _pg_dump() -> str:
    """pg_dump: on PATH, else next to the newest installed PostgreSQL's initdb."""
    found = shutil.which("pg_dump")
    if found:
        return found
    from .pgcluster import ClusterError, bin_dir
    try:
        return os.path.join(bin_dir(), "pg_dump")
    except ClusterError as exc:
        raise StoreError(f"pg_dump is not installed: {exc}") from exc


def redact(url: str) -> str:
    """A database URL without its password: what /health and logs may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc[-1]}"))


class PgStore(LogPages):
    """The event log on PostgreSQL. One object per process; a pool of connections."""

    shared = True  # other nodes may use the same log (see Store.shared)
    max_events_per_task: int | None = None

    def __init__(self, url: str, migrate: bool = True, pool_size: int = 10, max_bytes: int | None = None,
                 busy_timeout: float = 30.0) -> None:
        self.url = url
        self.path = redact(url)  # what /health shows as the database's location
        self.max_bytes = None  # a size cap is a PostgreSQL matter (quotas, tablespaces), not Scout's
        self.busy_timeout = busy_timeout
        self.last_write_error: str | None = None
        self._pool = ConnectionPool(url, min_size=1, max_size=max(2, pool_size), open=False, name="scout",
                                    kwargs={"autocommit": True, **KEEPALIVES}, timeout=busy_timeout)
        self._pool_open = threading.Lock()
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        if migrate:
            self.migrate()

    # -- connections ----------------------------------------------------------------

    def _connection(self):
        if self._pool.closed:
            with self._pool_open:
                if self._pool.closed:
                    try:
                        self._pool.open(wait=True, timeout=self.busy_timeout)
                    except PoolTimeout as exc:
                        raise StoreError(f"cannot connect to {self.path}: {exc}") from exc
        return self._pool.connection()

    def close_thread(self) -> None:
        """Nothing to do: connections belong to the pool, not to threads."""

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self._pool.close()

    def _write(self, fn: Callable[..., Any], *args: Any, probe: bool = False) -> Any:
        """Run fn(conn, *args) in one transaction, turning database errors into StoreError."""
        try:
            with self._connection() as conn:
                with conn.transaction():
                    out = fn(conn, *args)
            if not probe:
                self.last_write_error = None
            return out
        except (psycopg.IntegrityError, EventCapError):
            raise
        except (psycopg.Error, PoolTimeout) as exc:
            self.last_write_error = f"database error: {exc}".strip()
            raise StoreError(self.last_write_error) from exc

    def _read(self, query: str, params: Any = (), rows: Callable = dict_row) -> list[Any]:
        try:
            with self._connection() as conn:
                return conn.cursor(row_factory=rows).execute(query, params).fetchall()
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"database error: {exc}") from exc

    # -- schema ---------------------------------------------------------------------

    def migrate(self) -> int:
        """Bring the database up to SCHEMA_VERSION; returns the version it had before."""
        try:
            with self._connection() as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
                    conn.execute("CREATE TABLE IF NOT EXISTS scout_schema (version integer NOT NULL)")
                    row = conn.execute("SELECT version FROM scout_schema").fetchone()
                    if row is None:
                        conn.execute("INSERT INTO scout_schema VALUES (0)")
                    before = row[0] if row else 0
                if before > SCHEMA_VERSION:
                    raise StoreError(f"database schema {before} is newer than this Scout ({SCHEMA_VERSION})")
                for version in range(before, SCHEMA_VERSION):
                    with conn.transaction():
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
                        current = conn.execute("SELECT version FROM scout_schema").fetchone()[0]
                        if current == version:  # another node may have migrated meanwhile
                            conn.execute(_MIGRATIONS[version])
                            conn.execute("UPDATE scout_schema SET version = %s", (version + 1,))
                return before
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from exc

    def schema_version(self) -> int:
        return self._read("SELECT version FROM scout_schema", rows=tuple_row)[0][0]

    def integrity_check(self) -> str:
        """'ok' once the database answers: PostgreSQL checks its pages itself (checksums)."""
        self._read("SELECT 1")
        return "ok"

    def check_writable(self) -> None:
        """Raise StoreError if writes fail (a read-only standby or transaction mode, a full disk)."""
        self._write(lambda conn: conn.execute("SELECT pg_current_xact_id()"), probe=True)
        if self.last_write_error:
            raise StoreError(self.last_write_error)

    def space_problem(self) -> str | None:
        """None: how much room PostgreSQL has is its own matter (quotas, tablespaces); a write
        that fails for want of it is reported by check_writable."""
        return None

    def busy_message(self) -> str:
        return (f"database is locked: no connection or lock came within {self.busy_timeout:g} s; "
                f"running tasks wait for it and go on when it is released")

    def backup(self, path: str) -> None:
        """Write Scout's schema to `path` with pg_dump (custom format: restore with pg_restore).
        pg_dump takes one snapshot and does not block writers. The password goes by PGPASSWORD,
        never on a command line."""
        params = conninfo_to_dict(self.url)
        password = params.pop("password", None)
        schema = self._read("SELECT current_schema()", rows=tuple_row)[0][0]
        env = {**os.environ, **({"PGPASSWORD": str(password)} if password is not None else {})}
        argv = [_pg_dump(), "--format=custom", f"--schema={schema}", f"--file={path}",
                f"--dbname={make_conninfo('', **params)}"]
        try:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=24 * 3600)
        except OSError as exc:
            raise StoreError(f"backup to {path} failed: {exc}") from exc
        if done.returncode != 0:
            raise StoreError(f"backup to {path} failed: pg_dump: {done.stderr.strip()}")

    def size_bytes(self) -> int:
        """The bytes Scout's tables take (with indexes and TOAST), not the whole database's."""
        return int(self._read(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace"
            " AND c.relname = ANY(%s)",
            (["sessions", "tasks", "event_seqs", "events", "status_feed", "approvals", "cursors", "nodes",
              "transcripts", "scout_schema"],), rows=tuple_row)[0][0])

    def data_version(self) -> int:
        """Changes whenever an event is committed by anyone: counted from NOTIFY, no query."""
        return self.listener().version

    # -- sessions -------------------------------------------------------------------

    def get_session(self, session_id: str) -> Session | None:
        rows = self._read("SELECT * FROM sessions WHERE id = %s", (session_id,))
        if not rows:
            return None
        r = rows[0]
        return Session(r["id"], r["claude_session_id"], r["cwd"], r["created_at"], r["updated_at"],
                       json.loads(r["workspace"]) if r["workspace"] else None, r["history_lost"])

    def set_session_workspace(self, session_id: str, workspace: dict[str, Any] | None) -> None:
        self._write(lambda conn: conn.execute("UPDATE sessions SET workspace = %s WHERE id = %s",
                                              (json.dumps(workspace) if workspace else None, session_id)))

    def session_workspaces(self) -> dict[str, dict[str, Any]]:
        """Every session's workspace that is not shared, by session id."""
        return {r["id"]: json.loads(r["workspace"])
                for r in self._read("SELECT id, workspace FROM sessions WHERE workspace IS NOT NULL")}

    def set_claude_session(self, session_id: str, claude_session_id: str, cwd: str | None) -> None:
        self._write(lambda conn: conn.execute(
            "UPDATE sessions SET claude_session_id = %s, cwd = COALESCE(%s, cwd), updated_at = %s WHERE id = %s",
            (claude_session_id, cwd, time.time(), session_id)))

    def list_sessions(self, limit: int = 50, after: tuple[float, str] | None = None) -> list[dict[str, Any]]:
        where, params = "", list[Any]()
        if after is not None:
            where = "WHERE (s.updated_at, s.id) < (%s, %s)"
            params.extend(after)
        params.append(limit)
        rows = self._read(
            "SELECT s.id, s.cwd, s.created_at, s.updated_at, s.history_lost, a.task_count, a.total_cost,"
            " f.message AS first_message, l.message AS last_message, l.status AS last_status"
            f" FROM (SELECT * FROM sessions s {where} ORDER BY s.updated_at DESC, s.id DESC LIMIT %s) s"
            " CROSS JOIN LATERAL (SELECT COUNT(*) AS task_count,"
            "   COALESCE(SUM((t.result::jsonb ->> 'total_cost_usd')::float8), 0) AS total_cost"
            "   FROM tasks t WHERE t.session_id = s.id) a"
            " LEFT JOIN LATERAL (SELECT message FROM tasks t WHERE t.session_id = s.id ORDER BY num LIMIT 1) f ON true"
            " LEFT JOIN LATERAL (SELECT message, status FROM tasks t WHERE t.session_id = s.id"
            "   ORDER BY num DESC LIMIT 1) l ON true"
            " ORDER BY s.updated_at DESC, s.id DESC", params)
        return [{"session_id": r["id"], "cwd": r["cwd"], "task_count": r["task_count"],
                 "first_message": r["first_message"], "last_message": r["last_message"],
                 "last_status": r["last_status"], "total_cost_usd": r["total_cost"],
                 "created_at": r["created_at"], "last_activity": r["updated_at"],
                 "can_continue": r["history_lost"] is None} for r in rows]

    def delete_session(self, session_id: str) -> int | None:
        def fn(conn):
            if conn.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (session_id,)).fetchone() is None:
                return None
            ids = [r[0] for r in conn.execute("SELECT id FROM tasks WHERE session_id = %s", (session_id,))]
            _delete_tasks(conn, ids)
            _delete_sessions(conn, [session_id])
            return len(ids)
        return self._write(fn)

    def mark_history_lost(self, session_id: str, reason: str) -> None:
        self._write(lambda conn: conn.execute(
            "UPDATE sessions SET history_lost = %s WHERE id = %s", (reason, session_id)))

    # -- Claude Code transcripts (see Store's) ----------------------------------------

    def append_transcript(self, session_id: str, claude_session_id: str, subpath: str,
                          entries: list[dict[str, Any]]) -> None:
        self._write(_insert_transcript, session_id, claude_session_id, subpath, entries)

    def replace_transcript(self, session_id: str, claude_session_id: str, subpath: str,
                           entries: list[dict[str, Any]]) -> None:
        def fn(conn):
            conn.execute("DELETE FROM transcripts WHERE claude_session_id = %s AND subpath = %s",
                         (claude_session_id, subpath))
            _insert_transcript(conn, session_id, claude_session_id, subpath, entries)
        self._write(fn)

    def load_transcript(self, claude_session_id: str, subpath: str = "") -> list[dict[str, Any]] | None:
        rows = self._read("SELECT entry FROM transcripts WHERE claude_session_id = %s AND subpath = %s"
                          " ORDER BY id", (claude_session_id, subpath), rows=tuple_row)
        return [json.loads(r[0]) for r in rows] or None

    def transcript_length(self, claude_session_id: str, subpath: str = "") -> int:
        return self._read("SELECT COUNT(*) FROM transcripts WHERE claude_session_id = %s AND subpath = %s",
                          (claude_session_id, subpath), rows=tuple_row)[0][0]

    def transcript_uuids(self, claude_session_id: str, subpath: str = "") -> set[str]:
        return {r[0] for r in self._read(
            "SELECT uuid FROM transcripts WHERE claude_session_id = %s AND subpath = %s AND uuid IS NOT NULL",
            (claude_session_id, subpath), rows=tuple_row)}

    def transcript_subpaths(self, claude_session_id: str) -> list[str]:
        return [r[0] for r in self._read(
            "SELECT DISTINCT subpath FROM transcripts WHERE claude_session_id = %s AND subpath <> ''"
            " ORDER BY subpath", (claude_session_id,), rows=tuple_row)]

    def delete_transcript(self, claude_session_id: str, subpath: str | None = None) -> None:
        self._write(lambda conn: conn.execute(
            "DELETE FROM transcripts WHERE claude_session_id = %s AND (%s::text IS NULL OR subpath = %s)",
            (claude_session_id, subpath, subpath)))

    # -- tasks ----------------------------------------------------------------------

    def create_task(self, message: str, options: dict[str, Any], session_id: str | None = None,
                    max_pending: int | None = None, workspace: dict[str, Any] | None = None,
                    node: str | None = None) -> Task | None:
        """Insert a pending task (and its session if new) with its first event, atomically;
        `workspace` (None: shared) becomes the session's (as Store.create_task); ``node``: run
        it only on that node. None, writing nothing, when max_pending wait."""
        task_id = new_id()
        session_id = session_id or new_id()
        now = time.time()

        def fn(conn):
            if max_pending is not None:
                waiting = conn.execute("SELECT COUNT(*) FROM tasks WHERE status = %s", (PENDING,)).fetchone()[0]
                if waiting >= max_pending:
                    return None
            conn.execute(
                "INSERT INTO sessions (id, cwd, created_at, updated_at, workspace) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at,"
                # a session's workspace is set by its first task, and again after a discard
                " workspace = CASE WHEN sessions.workspace::jsonb ->> 'base_commit' IS NULL"
                "  THEN excluded.workspace ELSE sessions.workspace END",
                (session_id, options.get("cwd"), now, now, json.dumps(workspace) if workspace else None))
            conn.execute("INSERT INTO tasks (id, session_id, status, message, options, created_at, want_node)"
                         " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         (task_id, session_id, PENDING, message, json.dumps(options), now, node))
            conn.execute("INSERT INTO event_seqs (task_id) VALUES (%s)", (task_id,))
            _append(conn, task_id, EventType.STATUS, {"status": PENDING}, now)
            return conn.cursor(row_factory=dict_row).execute("SELECT * FROM tasks WHERE id = %s",
                                                             (task_id,)).fetchone()
        row = self._write(fn)
        return _pg_task(row) if row is not None else None

    def get_task(self, task_id: str) -> Task | None:
        rows = self._read("SELECT * FROM tasks WHERE id = %s", (task_id,))
        return _pg_task(rows[0]) if rows else None

    def list_tasks(self, status: str | None = None, session_id: str | None = None,
                   limit: int = 50, before: int | None = None) -> list[Task]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status = %s", status), ("session_id = %s", session_id), ("num < %s", before)):
            if value is not None and value != "":
                where.append(column)
                params.append(value)
        query = "SELECT * FROM tasks" + (" WHERE " + " AND ".join(where) if where else "")
        params.append(limit)
        return [_pg_task(r) for r in self._read(query + " ORDER BY num DESC LIMIT %s", params)]

    def session_tasks(self, session_id: str) -> list[Task]:
        return [_pg_task(r) for r in self._read(
            "SELECT * FROM tasks WHERE session_id = %s ORDER BY num", (session_id,))]

    def tasks_in(self, statuses: Iterable[str], node: str | None = None) -> list[Task]:
        """Tasks in these statuses, oldest first; with ``node``, only those that node runs."""
        query, params = "SELECT * FROM tasks WHERE status = ANY(%s)", [list(statuses)]
        if node is not None:
            query += " AND node = %s"
            params.append(node)  # type: ignore[arg-type]
        return [_pg_task(r) for r in self._read(query + " ORDER BY num", params)]

    def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {s: 0 for s in STATUSES}
        for r in self._read("SELECT status, COUNT(*) AS n FROM tasks GROUP BY status"):
            counts[r["status"]] = r["n"]
        return counts

    def next_startable(self, limit: int, node: str | None = None) -> list[Task]:
        """Pending tasks, oldest first, whose session has no task running, waiting or
        pending before them (and, with ``node``, that may run there). A look, not a claim."""
        query, params = _startable(node, limit)
        return [_pg_task(r) for r in self._read(query, params)]

    def claim(self, limit: int, node: str | None = None) -> list[Task]:
        """Move up to ``limit`` startable tasks to running on ``node`` and log it; returns them.

        Rows another node is claiming are skipped (FOR UPDATE SKIP LOCKED), so nodes never
        wait for each other and never both take one task; the partial unique index on
        running sessions refuses a second running task of one session outright."""
        query, params = _startable(node, limit, lock=True)

        def fn(conn):
            rows = conn.cursor(row_factory=dict_row).execute(query, params).fetchall()
            if not rows:
                return []
            now = time.time()  # taken once the rows are locked, so start times follow claim order
            # Every row first, then the status events: the feed's lock is taken last, so a
            # wait on the one-running-per-session index never happens while holding it.
            conn.execute("UPDATE tasks SET status = %s, started_at = %s, node = %s WHERE id = ANY(%s)",
                         (RUNNING, now, node, [r["id"] for r in rows]))
            for r in rows:
                _append(conn, r["id"], EventType.STATUS, {"status": RUNNING}, now)
            return [{**r, "status": RUNNING, "started_at": now, "node": node} for r in rows]
        try:
            return [_pg_task(r) for r in self._write(fn)]
        except psycopg.errors.UniqueViolation:
            return []  # another node started a task of one of these sessions: try again later

    def transition(self, task_id: str, to: TaskStatus, *, only_from: Iterable[TaskStatus] | None = None,
                   error: str | None = None, result: dict[str, Any] | None = None,
                   unless_stop_requested: bool = False, note: dict[str, Any] | None = None,
                   **fields: Any) -> bool:
        """As Store.transition: a legal change (vocab.TRANSITIONS, narrowed by only_from) with
        its status event, in one transaction, the task's row locked while it is checked."""
        unknown = set(fields) - _TASK_COLUMNS
        if unknown:
            raise ValueError(f"not task columns: {sorted(unknown)}")
        change = _Change(TaskStatus(to), _narrowed(to, only_from), error, result,
                         unless_stop_requested, note or {}, fields)
        return self._write(_transition, task_id, change, time.time())

    def set_worker(self, task_id: str, pid: int, started: float, run_id: str | None = None) -> None:
        self._write(lambda conn: conn.execute(
            "UPDATE tasks SET worker_pid = %s, worker_started = %s, run_id = %s WHERE id = %s",
            (pid, started, run_id or task_id, task_id)))

    def set_workspace_start(self, task_id: str, tree: str) -> None:
        self._write(lambda conn: conn.execute("UPDATE tasks SET workspace_start = %s WHERE id = %s",
                                              (tree, task_id)))

    def has_event(self, task_id: str, type: str) -> bool:
        return bool(self._read("SELECT 1 FROM events WHERE task_id = %s AND type = %s LIMIT 1", (task_id, type)))

    def request_stop(self, task_id: str, by: str | None = None) -> None:
        """Mark the task to be stopped and tell every node (NOTIFY scout_stop "task_id by") at commit."""
        def fn(conn):
            conn.execute("UPDATE tasks SET stop_requested = true WHERE id = %s", (task_id,))
            conn.execute("SELECT pg_notify(%s, %s)", (STOP_CHANNEL, f"{task_id} {by or ''}".strip()))
        self._write(fn)

    def requeue(self, task_id: str) -> bool:
        """Put an active task that never really started back in the queue, for any node."""
        return self.transition(task_id, PENDING, note={"requeued": True}, started_at=None, worker_pid=None,
                               worker_started=None, run_id=None, node=None)

    def delete_task(self, task_id: str) -> bool:
        """Delete a task with its events and approvals, and its session if no task is left in it."""
        def fn(conn):
            row = conn.execute("SELECT session_id FROM tasks WHERE id = %s FOR UPDATE", (task_id,)).fetchone()
            if row is None:
                return False
            _delete_tasks(conn, [task_id])
            _delete_sessions(conn, [row[0]], only_empty=True)
            return True
        return self._write(fn)

    # -- events ---------------------------------------------------------------------

    def append_event(self, task_id: str, type: str, payload: dict[str, Any]) -> int:
        """Append one event; returns its seq (0 if the task is gone). Committed before this returns.
        Past max_events_per_task, EventCapError (status events are always logged)."""
        cap = self.max_events_per_task if type != EventType.STATUS else None
        return self._write(_append, task_id, type, payload, time.time(), cap)

    def events_after(self, task_id: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        return [_event(r) for r in self._read(
            "SELECT * FROM events WHERE task_id = %s AND seq > %s ORDER BY seq LIMIT %s",
            (task_id, after_seq, limit))]

    def raw_events_after(self, task_id: str, after_seq: int, limit: int = 500) -> list[tuple]:
        return self._read("SELECT seq, type, time, payload FROM events WHERE task_id = %s AND seq > %s"
                          " ORDER BY seq LIMIT %s", (task_id, after_seq, limit), rows=tuple_row)

    def raw_events_since_id(self, event_id: int, limit: int = 5000) -> list[tuple]:
        """(id, task_id, seq, type, time, payload) of events with larger ids. Ids are not in
        commit order here: followers use event_feed() or status_events_since instead."""
        return self._read("SELECT id, task_id, seq, type, time, payload FROM events WHERE id > %s"
                          " ORDER BY id LIMIT %s", (event_id, limit), rows=tuple_row)

    def last_event_time(self, task_id: str) -> float | None:
        return self._read("SELECT MAX(time) FROM events WHERE task_id = %s", (task_id,), rows=tuple_row)[0][0]

    def max_event_id(self) -> int:
        return self._read("SELECT COALESCE(MAX(id), 0) FROM events", rows=tuple_row)[0][0]

    def status_head(self) -> int:
        """The position of the latest status change: where a new status follower starts."""
        return self._read("SELECT pos FROM status_feed", rows=tuple_row)[0][0]

    def get_cursor(self, name: str) -> int | None:
        rows = self._read("SELECT event_id FROM cursors WHERE name = %s", (name,), rows=tuple_row)
        return rows[0][0] if rows else None

    def set_cursor(self, name: str, event_id: int) -> None:
        self._write(lambda conn: conn.execute(
            "INSERT INTO cursors (name, event_id) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET event_id = excluded.event_id", (name, event_id)))

    def tasks_with_events_since(self, event_id: int) -> tuple[int, set[str]]:
        rows = self.raw_events_since_id(event_id, 100_000)
        if not rows:
            return event_id, set()
        return max(r[0] for r in rows), {r[1] for r in rows}

    def event_feed(self, interval: float = 0.01) -> "NotifyFeed":
        """New events as they commit, for the SSE log watcher (woken by NOTIFY: no interval)."""
        return NotifyFeed(self, self.listener())

    def on_stop_request(self, callback: Callable[[str, str | None], None]) -> None:
        """Call callback(task_id, by) in the listener thread whenever a stop is requested
        (``by``: the node that asked, if it said)."""
        self.listener().stop_callbacks.append(callback)

    def listener(self) -> "Listener":
        with self._listener_lock:
            if self._listener is None:
                self._listener = Listener(self.url)
                self._listener.start()
            return self._listener

    # -- operations -----------------------------------------------------------------

    def prune_finished(self, finished_before: float, batch_events: int = 5000) -> dict[str, Any]:
        """As Store.prune_finished: finished tasks ended before the cutoff go with their events,
        approvals and emptied sessions, in transactions of about batch_events events."""
        out: dict[str, Any] = {"tasks": 0, "events": 0, "sessions": 0, "task_ids": []}

        def fn(conn) -> tuple[bool, dict[str, Any]]:
            done: dict[str, Any] = {"tasks": 0, "events": 0, "sessions": 0, "task_ids": []}
            budget = batch_events
            rows = conn.execute(
                "SELECT id, session_id FROM tasks WHERE status = ANY(%s) AND COALESCE(finished_at, created_at) < %s"
                " ORDER BY num LIMIT 500 FOR UPDATE SKIP LOCKED", (list(TERMINAL), finished_before)).fetchall()
            sessions, more = set(), len(rows) == 500
            for task_id, session_id in rows:
                gone = conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE task_id = %s"
                                    " ORDER BY seq DESC LIMIT %s)", (task_id, budget + 1)).rowcount
                done["events"] += gone
                budget -= gone
                if budget < 0:
                    more = True
                    break
                _delete_tasks(conn, [task_id])
                done["tasks"] += 1
                done["task_ids"].append(task_id)
                sessions.add(session_id)
            done["sessions"] += _delete_sessions(conn, list(sessions), only_empty=True)
            return more, done

        more = True
        while more:
            more, done = self._write(fn)
            for key in out:
                out[key] += done[key]
        return out

    def compact(self, vacuum_fraction: float = 0.1, vacuum: bool = True) -> dict[str, Any]:
        """A plain VACUUM of the tables retention thins out: it frees dead rows for reuse
        without blocking writers (autovacuum would get there too, later)."""
        if vacuum:
            try:
                with self._connection() as conn:
                    conn.execute("VACUUM (ANALYZE) events, tasks, event_seqs, approvals")
            except (psycopg.Error, PoolTimeout) as exc:
                raise StoreError(f"database error: {exc}") from exc
        return {"free_pages": 0, "vacuumed": vacuum, "checkpointed": True}

    def status_events_since(self, after_id: int, limit: int = 1000) -> tuple[int, list[Event]]:
        """(cursor, status events after the cursor), in commit order. Here the cursor, and
        each event's ``id``, is its position in the status feed (see the module docstring)."""
        rows = self._read("SELECT feed AS id, task_id, seq, type, time, payload FROM events"
                          " WHERE feed > %s ORDER BY feed LIMIT %s", (after_id, limit))
        events = [_event(r) for r in rows]
        return (events[-1].id if events else after_id), events

    def events_written(self) -> int:
        """Events ever numbered by the id sequence (rolled-back appends count too)."""
        return self._read("SELECT COALESCE(last_value, 0) FROM pg_sequences WHERE sequencename = 'events_id_seq'"
                          " AND schemaname = current_schema()", rows=tuple_row)[0][0]

    # -- approvals ------------------------------------------------------------------

    def ask_approval(self, task_id: str, tool_use_id: str, tool: str, tool_input: dict[str, Any],
                     request: dict[str, Any]) -> None:
        now = time.time()

        def fn(conn):
            conn.execute("INSERT INTO approvals (task_id, tool_use_id, tool, input, asked_at)"
                         " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                         (task_id, tool_use_id, tool, json.dumps(tool_input), now))
            _transition(conn, task_id, _Change(WAITING, unless_stop_requested=True), now)
            _append(conn, task_id, EventType.APPROVAL_REQUEST, request, now, self.max_events_per_task)
        self._write(fn)

    def open_approvals(self, task_id: str) -> list[dict[str, Any]]:
        return [{"tool_use_id": r["tool_use_id"], "tool": r["tool"], "input": json.loads(r["input"]),
                 "asked_at": r["asked_at"]}
                for r in self._read("SELECT * FROM approvals WHERE task_id = %s AND decision IS NULL"
                                    " ORDER BY asked_at", (task_id,))]

    def decide_approval(self, task_id: str, decision: str, reason: str | None,
                        tool_use_id: str | None = None) -> str | None:
        def fn(conn):
            query, params = "SELECT tool_use_id FROM approvals WHERE task_id = %s AND decision IS NULL", [task_id]
            if tool_use_id:
                query += " AND tool_use_id = %s"
                params.append(tool_use_id)
            row = conn.execute(query + " ORDER BY asked_at LIMIT 1 FOR UPDATE", params).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE approvals SET decision = %s, reason = %s, decided_at = %s"
                         " WHERE task_id = %s AND tool_use_id = %s", (decision, reason, time.time(), task_id, row[0]))
            return row[0]
        return self._write(fn)

    def approval_decision(self, task_id: str, tool_use_id: str) -> tuple[str, str | None] | None:
        rows = self._read("SELECT decision, reason FROM approvals WHERE task_id = %s AND tool_use_id = %s",
                          (task_id, tool_use_id), rows=tuple_row)
        if not rows or rows[0][0] is None:
            return None
        return rows[0][0], rows[0][1]

    # -- nodes ----------------------------------------------------------------------

    def heartbeat(self, node: str, lease: float, version: str, max_workers: int, url: str | None = None,
                  starting: bool = False) -> None:
        """Register the node or renew its lease (timed by the database's clock)."""
        started = "now()" if starting else "nodes.started_at"
        self._write(lambda conn: conn.execute(
            "INSERT INTO nodes (id, version, url, started_at, heartbeat_at, lease, max_workers)"
            " VALUES (%s, %s, %s, now(), now(), %s, %s) ON CONFLICT (id) DO UPDATE SET version = excluded.version,"
            f" url = excluded.url, started_at = {started}, heartbeat_at = now(), lease = excluded.lease,"
            " max_workers = excluded.max_workers, lost_at = NULL", (node, version, url, lease, max_workers)))

    def nodes(self) -> list[dict[str, Any]]:
        """Every node: its lease, how long ago it was heard from, its running tasks."""
        rows = self._read(
            "SELECT n.id, n.version, n.url, n.lease, n.max_workers,"
            " extract(epoch FROM n.started_at)::float8 AS started_at,"
            " extract(epoch FROM n.heartbeat_at)::float8 AS heartbeat_at,"
            " extract(epoch FROM now() - n.heartbeat_at)::float8 AS silent_for,"
            " extract(epoch FROM n.lost_at)::float8 AS lost_at,"
            " (SELECT COUNT(*) FROM tasks t WHERE t.node = n.id AND t.status = ANY(%s)) AS running"
            " FROM nodes n ORDER BY n.id", (list(ACTIVE),))
        out = []
        for r in rows:
            live = r["silent_for"] <= r["lease"] and r["lost_at"] is None
            out.append({"node": r["id"], "state": "live" if live else "lost", "version": r["version"],
                        "url": r["url"], "lease_s": r["lease"], "max_workers": r["max_workers"],
                        "running": r["running"], "started_at": r["started_at"],
                        "heartbeat_at": r["heartbeat_at"],
                        "lease_expires_in": round(r["lease"] - r["silent_for"], 3)})
        return out

    def reap_lost_nodes(self, error: str = NODE_LOST) -> list[str]:
        """Fail the running and waiting tasks of every node whose lease has lapsed; returns
        their ids. Each lost node is handled by one node, once: its row is locked (SKIP
        LOCKED) and marked lost in the same transaction, and only active tasks change."""
        now = time.time()

        def fn(conn):
            lost = [r[0] for r in conn.execute(
                "SELECT id FROM nodes WHERE lost_at IS NULL AND heartbeat_at + make_interval(secs => lease) < now()"
                " FOR UPDATE SKIP LOCKED")]
            failed = []
            for node in lost:
                ids = [r[0] for r in conn.execute(
                    "SELECT id FROM tasks WHERE node = %s AND status = ANY(%s) ORDER BY num FOR UPDATE",
                    (node, list(ACTIVE)))]
                for task_id in ids:
                    _transition(conn, task_id, _Change(FAILED, error=error), now)
                conn.execute("UPDATE nodes SET lost_at = now() WHERE id = %s", (node,))
                failed.extend(ids)
            return failed
        return self._write(fn)

    def running_by_node(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._read(
            "SELECT node, COUNT(*) FROM tasks WHERE status = ANY(%s) AND node IS NOT NULL GROUP BY node",
            (list(ACTIVE),), rows=tuple_row)}

    def try_lead(self, name: str) -> "Leadership":
        """A session advisory lock held on a connection of its own: whoever holds it is the
        one node doing `name` (retention, webhooks); it passes on when that node's
        connection ends, even by a crash."""
        return Leadership(self.url, zlib.crc32(f"scout:lead:{name}".encode()))


# -- statements shared by several methods -------------------------------------------------

def _append(conn: psycopg.Connection, task_id: str, type: str, payload: dict[str, Any], now: float,
            cap: int | None = None) -> int:
    """Insert an event with the next seq of its task (and, for a status, the next feed
    position), notifying at commit; must run inside a transaction or alone."""
    params = {"t": task_id, "type": type, "time": now, "payload": json.dumps(payload), "cap": cap}
    row = conn.execute(_SQL_APPEND[(type == EventType.STATUS, bool(cap))], params).fetchone()
    if row is not None:
        return row[0]
    if cap and conn.execute("SELECT 1 FROM event_seqs WHERE task_id = %s", (task_id,)).fetchone():
        raise EventCapError(f"the task reached the limit of {cap} logged events (SCOUT_MAX_EVENTS_PER_TASK); "
                            f"its log takes no more, so it was stopped")
    return 0  # the task is gone: there is no log to add to


def _transition(conn: psycopg.Connection, task_id: str, change: _Change, now: float) -> bool:
    """Apply a status change if the table (and the change's own limits) allow it; inside a
    transaction, the row locked. Returns whether it happened."""
    row = conn.execute("SELECT status, stop_requested FROM tasks WHERE id = %s FOR UPDATE", (task_id,)).fetchone()
    if row is None or not change.allows(row[0], row[1]):
        return False
    sets, payload = change.applied(now)
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in sets)
    conn.execute(sql.SQL("UPDATE tasks SET {} WHERE id = %s").format(assignments), (*sets.values(), task_id))
    _append(conn, task_id, EventType.STATUS, payload, now)
    return True


def _delete_tasks(conn: psycopg.Connection, ids: list[str]) -> int:
    conn.execute("DELETE FROM events WHERE task_id = ANY(%s)", (ids,))
    conn.execute("DELETE FROM approvals WHERE task_id = ANY(%s)", (ids,))
    conn.execute("DELETE FROM event_seqs WHERE task_id = ANY(%s)", (ids,))
    return conn.execute("DELETE FROM tasks WHERE id = ANY(%s)", (ids,)).rowcount


def _delete_sessions(conn: psycopg.Connection, ids: list[str], only_empty: bool = False) -> int:
    """Delete sessions (only_empty: those without a task left) with their mirrored transcripts;
    how many went."""
    gone = [r[0] for r in conn.execute(
        "DELETE FROM sessions s WHERE id = ANY(%s)"
        + (" AND NOT EXISTS (SELECT 1 FROM tasks WHERE session_id = s.id)" if only_empty else "")
        + " RETURNING id", (ids,))]
    if gone:
        conn.execute("DELETE FROM transcripts WHERE session_id = ANY(%s)", (gone,))
    return len(gone)


def _insert_transcript(conn: psycopg.Connection, session_id: str, claude_session_id: str, subpath: str,
                       entries: list[dict[str, Any]]) -> None:
    """Insert transcript lines in order, skipping those whose uuid is already stored there,
    and all of them if the session is gone: a worker's last flush can come after a delete."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO transcripts (session_id, claude_session_id, subpath, uuid, entry)"
            " SELECT %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM sessions WHERE id = %s)"
            " ON CONFLICT DO NOTHING",
            [(session_id, claude_session_id, subpath, e.get("uuid") if isinstance(e.get("uuid"), str) else None,
              json.dumps(e, separators=(",", ":")), session_id) for e in entries])


def _startable(node: str | None, limit: int, lock: bool = False) -> tuple[str, list[Any]]:
    query = ("SELECT * FROM tasks t WHERE t.status = 'pending'"
             " AND NOT EXISTS (SELECT 1 FROM tasks u WHERE u.session_id = t.session_id"
             "  AND u.status IN ('running', 'waiting'))"
             " AND NOT EXISTS (SELECT 1 FROM tasks v WHERE v.session_id = t.session_id"
             "  AND v.status = 'pending' AND v.num < t.num)")
    params: list[Any] = []
    if node is not None:
        query += " AND (t.want_node IS NULL OR t.want_node = %s)"
        params.append(node)
    query += " ORDER BY t.num LIMIT %s"
    params.append(limit)
    if lock:
        query += " FOR UPDATE SKIP LOCKED"
    return query, params


def _pg_task(row: dict[str, Any]) -> Task:
    task = _task(row)
    task.node, task.want_node = row["node"], row["want_node"]
    return task


# -- LISTEN/NOTIFY ------------------------------------------------------------------------

class Listener:
    """One connection LISTENing on Scout's channels, read by a thread of its own.

    New-event notifications go into a queue the event feed drains; `version` counts them
    (what data_version returns); stop requests go to the callbacks. If the connection
    breaks, it reconnects, and bumps `resets`: notifications of the gap are lost, and
    readers then re-read the log themselves."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.version = 0
        self.resets = 0
        self.stop_callbacks: list[Callable[[str, str | None], None]] = []
        self._queue: deque[tuple[str, int, str]] = deque(maxlen=200_000)
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scout-pg-listener", daemon=True)
        self._conn: psycopg.Connection | None = None

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)

    def stop(self) -> None:
        self._closing.set()
        self._thread.join(timeout=2)

    def take(self, timeout: float) -> tuple[list[tuple[str, int, str]], int]:
        """Wait up to timeout for notifications; returns them and the reset count."""
        with self._cond:
            if not self._queue:
                self._cond.wait(timeout)
            items = list(self._queue)
            self._queue.clear()
            return items, self.resets

    def _run(self) -> None:
        first = True
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5, **KEEPALIVES) as conn:
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    conn.execute(f"LISTEN {STOP_CHANNEL}")
                    if not first:  # what was sent while we were away is lost: readers must re-read
                        with self._cond:
                            self.resets += 1
                            self.version += 1
                            self._cond.notify_all()
                    first = False
                    self._ready.set()
                    while not self._closing.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self._deliver(n.channel, n.payload)
            except psycopg.Error as exc:
                self._ready.set()
                if not self._closing.is_set():
                    log.warning("LISTEN connection lost (%s); reconnecting", exc)
                    self._closing.wait(0.5)

    def _deliver(self, channel: str, payload: str) -> None:
        if channel == STOP_CHANNEL:
            task_id, _, by = payload.partition(" ")
            for callback in list(self.stop_callbacks):
                try:
                    callback(task_id, by or None)
                except Exception:  # noqa: BLE001 - a callback must not end the listener
                    log.exception("stop callback failed")
            return
        task_id, seq, type_ = payload.split(" ", 2)
        with self._cond:
            self._queue.append((task_id, int(seq), type_))
            self.version += 1
            self._cond.notify_all()


class NotifyFeed:
    """New events for the SSE log watcher: woken by NOTIFY, reads exactly what was notified."""

    def __init__(self, store: PgStore, listener: Listener) -> None:
        self.store = store
        self.listener = listener
        self._resets = listener.resets

    def poll(self, timeout: float) -> FeedBatch:
        items, resets = self.listener.take(timeout)
        reset, self._resets = resets != self._resets, resets
        if not items:
            return FeedBatch([], reset)
        spans: dict[str, list[int]] = {}
        for task_id, seq, _ in items:
            span = spans.setdefault(task_id, [seq, seq])
            span[0], span[1] = min(span[0], seq), max(span[1], seq)
        rows = self.store._read(
            "SELECT e.id, e.task_id, e.seq, e.type, e.time, e.payload FROM unnest(%s::text[], %s::bigint[],"
            " %s::bigint[]) AS k(task_id, lo, hi) JOIN events e ON e.task_id = k.task_id AND e.seq BETWEEN k.lo"
            " AND k.hi ORDER BY e.task_id, e.seq",
            (list(spans), [s[0] for s in spans.values()], [s[1] for s in spans.values()]), rows=tuple_row)
        return FeedBatch(rows, reset)


class Leadership:
    """Holds (or tries for) one session advisory lock on a dedicated connection."""

    def __init__(self, url: str, key: int) -> None:
        self.url = url
        self.key = key
        self._conn: psycopg.Connection | None = None

    @property
    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            self._conn = None
            return False

    def acquire(self) -> bool:
        """Take the lock if it is free; True while this object holds it."""
        if self.held:
            return True
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5, **KEEPALIVES)
            # If this node's machine vanishes (no FIN, no RST), PostgreSQL's keepalives notice
            # within about 11 s and end the session, so the lock passes on; not after 2 hours.
            for setting, value in (("tcp_keepalives_idle", 5), ("tcp_keepalives_interval", 2),
                                   ("tcp_keepalives_count", 3)):
                conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(setting), sql.Literal(value)))
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            if row and row[0]:
                self._conn = conn
                return True
            conn.close()
        except psycopg.Error as exc:
            log.warning("leadership: %s", exc)
        return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None
