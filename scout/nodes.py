"""Nodes: several Scout servers sharing one PostgreSQL log, in the server process.

Every server on a shared log is a node named by SCOUT_NODE_ID (default: the host name).
`NodeAgent` keeps this node's lease alive (a heartbeat every third of SCOUT_NODE_LEASE,
timed by the database's clock) and, on the same beat, fails the running tasks of any
node whose lease has lapsed ("node lost", once: see PgStore.reap_lost_nodes). `Leader`
runs a job (retention, webhooks) on exactly one node at a time, passing it on when that
node goes. `GET /nodes` lists the nodes. On SQLite there is one node and none of this runs.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from flask import Blueprint, current_app

from . import __version__
from .store import StoreError

log = logging.getLogger("scout.nodes")


class NodeAgent:
    """This node's heartbeat, and the watch for lost nodes."""

    def __init__(self, store: Any, settings: Any, on_change: Callable[[str], None] = lambda task_id: None,
                 url: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.on_change = on_change
        self.url = url
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Register the node (before the supervisor reconciles, so its lease is fresh), then beat."""
        self._beat(starting=True)
        self._thread = threading.Thread(target=self._run, name="scout-node-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating. The lease is left to run out rather than ended: tasks detached by a
        shutdown are adopted if this node is back within the lease, and failed otherwise."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.node_lease / 3):
            try:
                self._beat()
                for task_id in self.store.reap_lost_nodes():
                    log.warning("task %s failed: its node was lost", task_id)
                    self.on_change(task_id)
                self.last_error = None
            except StoreError as exc:
                self.last_error = str(exc)
                log.error("node heartbeat: %s", exc)

    def _beat(self, starting: bool = False) -> None:
        s = self.settings
        self.store.heartbeat(s.node_id, s.node_lease, __version__, s.max_workers, self.url, starting=starting)


class Leader:
    """Runs `start()` while this node holds the lead on `name`, `stop()` when it loses it;
    tries for the lead every `interval` seconds."""

    def __init__(self, store: Any, name: str, start: Callable[[], None], stop: Callable[[], None],
                 interval: float) -> None:
        self.name = name
        self.lock = store.try_lead(name)
        self._start, self._stop_job = start, stop
        self.interval = interval
        self.leading = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"scout-lead-{name}", daemon=True)

    def start(self) -> None:
        self._check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.leading:
            self._stop_job()
            self.leading = False
        self.lock.release()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._check()

    def _check(self) -> None:
        held = self.lock.acquire()
        if held and not self.leading:
            log.info("this node now runs %s", self.name)
            self.leading = True
            self._start()
        elif not held and self.leading:
            log.warning("this node lost the lead on %s", self.name)
            self.leading = False
            self._stop_job()


bp = Blueprint("nodes", __name__)


@bp.get("/nodes")
def list_nodes():
    """Every node on the log with its lease, running count and version (one on SQLite)."""
    state = current_app.extensions["scout"]
    return {"nodes": node_list(state), "this_node": state.settings.node_id}


def node_list(state: Any) -> list[dict[str, Any]]:
    if state.store.shared:
        return state.store.nodes()
    s = state.settings
    return [{"node": s.node_id, "state": "live", "version": __version__, "url": None, "lease_s": None,
             "max_workers": s.max_workers, "running": state.supervisor.running_count(),
             "started_at": None, "heartbeat_at": None, "lease_expires_in": None}]
