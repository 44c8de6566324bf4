"""Wakes waiting SSE streams when a task's log grows, with one watcher per server process.

Workers commit events from other processes (on PostgreSQL, from other machines), so
nothing inside the server knows when a row arrives. Rather than every stream polling
the database, one thread follows the store's event feed (`Store.event_feed()`: on SQLite
a probe of `PRAGMA data_version`, which changes whenever another connection commits; on
PostgreSQL the LISTEN/NOTIFY the appends send), reads the new events once, and wakes
only the streams following those tasks. An idle server therefore costs one cheap probe
per interval on SQLite and nothing on PostgreSQL, whatever the number of clients.
"""
from __future__ import annotations

import threading
from typing import Callable

from .store import EventLog, StoreError

# An encoded event: (seq, SSE bytes, the task's final status if this event ends it).
Frame = tuple[int, bytes, "str | None"]


class LogWatcher:
    """Per-task generation counters that a single thread bumps as events are committed."""

    def __init__(self, store: EventLog, interval: float = 0.01,
                 encode: Callable[[str, int, str, float, str], Frame] | None = None) -> None:
        self.store = store
        self.interval = interval
        # With an encoder, each new event of a followed task is read and encoded once here,
        # and every stream of that task takes the same bytes (see frames_after).
        self.encode = encode
        self._frames: dict[str, list[Frame]] = {}
        self._lock = threading.Lock()
        self._gens: dict[str, int] = {}
        self._conds: dict[str, tuple[threading.Condition, int]] = {}  # task -> (cond, waiters)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.streams = 0  # open SSE streams, for /health and /metrics (see open_stream)
        self._streams_lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scout-log-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for cond, _ in self._conds.values():
                cond.notify_all()
        if self._thread:
            self._thread.join(timeout=2)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def generation(self, task_id: str) -> int:
        with self._lock:
            return self._gens.get(task_id, 0)

    def wait(self, task_id: str, seen: int, timeout: float) -> bool:
        """Block until task_id's generation moves past `seen`; False on timeout."""
        with self._lock:
            cond, n = self._conds.get(task_id) or (threading.Condition(self._lock), 0)
            self._conds[task_id] = (cond, n + 1)
            try:
                return cond.wait_for(
                    lambda: self._gens.get(task_id, 0) != seen or self._stop.is_set(), timeout)
            finally:
                cond, n = self._conds[task_id]
                if n <= 1:
                    del self._conds[task_id]
                    self._frames.pop(task_id, None)
                else:
                    self._conds[task_id] = (cond, n - 1)

    def frames_after(self, task_id: str, seq: int) -> list[Frame] | None:
        """The encoded events of task_id after seq, if they are all at hand; else None
        (the caller reads the log itself)."""
        with self._lock:
            frames = self._frames.get(task_id)
            if not frames or frames[0][0] > seq + 1:
                return None
            start = seq + 1 - frames[0][0]
            return frames[start:] if start >= 0 else None

    def open_stream(self, limit: int | None = None) -> bool:
        """Count an SSE stream opening, unless `limit` streams are already open (False)."""
        with self._streams_lock:
            if limit is not None and self.streams >= limit:
                return False
            self.streams += 1
            return True

    def close_stream(self) -> None:
        with self._streams_lock:
            self.streams -= 1

    def touch(self, task_id: str) -> None:
        """Wake the streams of one task (after a change made by this process)."""
        with self._lock:
            self._bump(task_id)

    def _bump(self, task_id: str) -> None:
        self._gens[task_id] = self._gens.get(task_id, 0) + 1
        entry = self._conds.get(task_id)
        if entry:
            entry[0].notify_all()

    def _run(self) -> None:
        feed = self.store.event_feed(self.interval)
        encode = self.encode
        while not self._stop.is_set():
            try:
                batch = feed.poll(self.interval * 10)
            except StoreError:
                self._stop.wait(self.interval)
                continue
            rows = batch.rows
            tasks = {r[1] for r in rows}
            if batch.reset:  # news may have been missed: every stream re-reads the log itself
                with self._lock:
                    self._frames.clear()
                    tasks |= set(self._conds)
            if tasks:
                with self._lock:
                    for _, task_id, seq, type_, at, payload in rows:
                        if encode is not None and task_id in self._conds:
                            frames = self._frames.setdefault(task_id, [])
                            if frames and frames[-1][0] != seq - 1:
                                frames.clear()  # never hand out a gap
                            frames.append(encode(task_id, seq, type_, at, payload))
                            if len(frames) > 4096:
                                del frames[:2048]
                    for task_id in tasks:
                        self._bump(task_id)
