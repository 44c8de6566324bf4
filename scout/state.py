"""One app's shared state: what the routes of scout/server.py and scout/ops.py both use.

Kept apart from the routes so the modules that serve an app (server, ops, metrics) can
all name it without importing one another.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from .config import Settings
from .modes import Mode
from .nodes import NodeAgent
from .notify import LogWatcher
from .sandbox import Probe
from .store import EventLog, StoreError
from .supervisor import Supervisor


@dataclass
class Scout:
    """What the routes share: settings, the log, the supervisor, the watcher, the modes."""

    settings: Settings
    store: EventLog
    supervisor: Supervisor
    watcher: LogWatcher
    modes: dict[str, Mode]
    claude: dict[str, Any] = field(default_factory=dict)
    sandbox: Probe = Probe(False, "not probed")  # Claude Code's OS sandbox, probed at start
    on_close: list[Any] = field(default_factory=list)  # callables run by close() before the store closes
    node: NodeAgent | None = None  # the heartbeat, on a log shared with other nodes
    _probe: tuple[float, str | None] = (0.0, None)  # (when, error) of the latest write probe

    def check_writable(self, every: float = 1.0) -> None:
        """The store's write probe, taken at most every `every` seconds while it succeeds: it
        must wait for the write lock, which many busy workers hold in turn. A failed write is
        seen at once, and a problem is probed again each time, so it clears as soon as it is gone."""
        when, error = self._probe
        if error or time.monotonic() - when > every or self.store.last_write_error:
            try:
                self.store.check_writable()
                error = None
            except StoreError as exc:
                error = str(exc)
            self._probe = (time.monotonic(), error)
        if error:
            raise StoreError(error)

    def close(self, mode: str | None = None) -> None:
        self.supervisor.shutdown(mode)
        self.watcher.stop()
        for stop in self.on_close:
            stop()
        if self.supervisor.store is not self.store:
            self.supervisor.store.close()  # its own, patient Store (see create_app)
        self.store.close()


def scout() -> Scout:
    return current_app.extensions["scout"]
