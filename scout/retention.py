"""Retention: finished tasks older than SCOUT_RETENTION_DAYS go, with their events, their
approvals, their worker logs and the sessions they leave empty (with their worktrees); the space goes back to
the disk. Runs once at start, then every SCOUT_RETENTION_INTERVAL seconds, in a daemon
thread; `POST /admin/prune` runs it on demand. Pending, running and waiting tasks are
never deleted, however old.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from .logs import fields
from .store import EventLog, StoreError
from .vocab import ACTIVE

log = logging.getLogger("scout.retention")
DAY = 86400.0
# A database that is not yet incremental is VACUUMed while tasks run only below this size:
# VACUUM holds the write lock while it copies the file (workers wait for it meanwhile).
VACUUM_WHILE_RUNNING_BYTES = 64 * 2**20


class Retention:
    def __init__(self, store: EventLog, days: float, interval: float,
                 log_path: Callable[[str], str] | None = None,
                 on_sessions_deleted: Callable[[], Any] | None = None) -> None:
        self.store = store
        self.on_sessions_deleted = on_sessions_deleted  # e.g. remove their worktrees
        self.days = days  # 0: the periodic job deletes nothing
        self.interval = interval
        self.log_path = log_path
        self.totals = {"tasks": 0, "events": 0}
        self.last_run: dict[str, Any] | None = None
        self._lock = threading.Lock()  # one prune at a time (the timer and the API)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.days <= 0:
            log.info("retention disabled (SCOUT_RETENTION_DAYS=0)")
            return
        self._stop.clear()  # a node that leads again restarts its retention job
        self._thread = threading.Thread(target=self._loop, name="scout-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.prune(self.days)
            except StoreError as exc:
                log.error("retention failed: %s", exc)
            except Exception:  # noqa: BLE001 - the next run may do better
                log.exception("retention failed")
            if self._stop.wait(self.interval):
                return

    def prune(self, older_than_days: float) -> dict[str, Any]:
        """Delete what finished more than `older_than_days` ago (0: everything finished)."""
        with self._lock:
            before = self.store.size_bytes()
            cutoff = time.time() - older_than_days * DAY
            out = self.store.prune_finished(cutoff)
            # Counted as soon as the rows are gone, not after the slower compaction below.
            self.totals["tasks"] += out["tasks"]
            self.totals["events"] += out["events"]
            logs_freed = sum(self._remove_log(task_id) for task_id in out["task_ids"])
            if out["sessions"] and self.on_sessions_deleted is not None:
                self.on_sessions_deleted()
            compacted: dict[str, Any] = {}
            if out["tasks"]:
                # A first, full VACUUM of a big file only while no task runs: it blocks writers until done.
                counts = self.store.count_by_status()
                compacted = self.store.compact(vacuum=before < VACUUM_WHILE_RUNNING_BYTES
                                               or not any(counts[s] for s in ACTIVE))
            freed = max(0, before - self.store.size_bytes()) + logs_freed
            problem = self.store.space_problem()
            result = {"deleted_tasks": out["tasks"], "deleted_events": out["events"],
                      "deleted_sessions": out["sessions"], "freed_bytes": freed,
                      "database_full": problem is not None}
            self.last_run = {**result, "time": time.time(), "older_than_days": older_than_days}
        if out["tasks"]:
            log.info("retention: deleted %d tasks and %d events finished more than %g days ago; "
                     "freed %d bytes%s", out["tasks"], out["events"], older_than_days, freed,
                     " (vacuumed)" if compacted.get("vacuumed") else "",
                     extra=fields(event="retention", older_than_days=older_than_days, **result))
        return result

    def _remove_log(self, task_id: str) -> int:
        """Delete a task's worker log; returns the bytes it held."""
        if self.log_path is None:
            return 0
        path = self.log_path(task_id)
        try:
            size = os.path.getsize(path)
            os.unlink(path)
            return size
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("retention: cannot remove the log of %s: %s", task_id, exc)
            return 0
