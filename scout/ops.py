"""Operations: retention, task state-change logs, metrics, webhooks, worker logs and transcripts.

`init_app(app, start)` adds all of it to an app made by scout.server.create_app: the
`ops` blueprint (POST /admin/prune, GET /metrics, GET /chat/{id}/logs,
GET /chat/{id}/transcript, GET /sessions/{id}/transcript) and, when started, three
kinds of threads: the retention job, the status follower and the webhook senders.

Task statuses are written by several processes (the supervisor in the server, each
worker), so nothing in the server is told when one changes. The status follower
reads every new `status` event from the log instead, a few times a second and only
when the database changed (PRAGMA data_version), and hands each one to the state-change
log line, the duration histogram and the webhooks.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import workspace_api
from .documents import session_detail, session_or_404, task_detail, task_or_404
from .logs import fields
from .metrics import Metrics
from .nodes import Leader
from .retention import Retention
from .state import Scout
from .store import Event, EventLog, StoreError, Task
from .vocab import TERMINAL, WAITING
from .validate import ApiError, check_object, int_arg, load_json, webhook_url_problem
from .webhooks import WebhookSender, where

log = logging.getLogger("scout.ops")
WEBHOOK_CURSOR = "webhooks"  # the stored cursor of the webhook notifier
task_log = logging.getLogger("scout.tasks")

Handler = Callable[[Event, "Task | None"], None]


class StatusFollower:
    """Reads every status event committed after start() and calls the handlers with it
    (and its task, or None if the task is already gone), in log order."""

    def __init__(self, store: EventLog, handlers: list[Handler], interval: float = 0.05,
                 durable: str | None = None, on_drained: Callable[[], None] | None = None) -> None:
        self.store = store
        self.handlers = handlers
        self.interval = interval
        self.durable = durable  # the name of its stored cursor: it resumes there after a restart
        self.on_drained = on_drained
        self.cursor = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        saved = self.store.get_cursor(self.durable) if self.durable else None
        # Without a stored cursor, what happened before this server is not news.
        self.cursor = saved if saved is not None else self.store.status_head()
        self._stop.clear()  # a node that leads again restarts its notifier
        name = f"scout-{self.durable or 'status'}-follower"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
            try:
                self.drain()  # what the shutdown itself changed (SCOUT_SHUTDOWN=cancel)
            except StoreError:
                pass

    def _run(self) -> None:
        version = None
        while True:
            try:
                now = self.store.data_version()
                if now != version:
                    version = now
                    self.drain()
            except StoreError as exc:
                log.warning("status follower: %s", exc)
            if self._stop.wait(self.interval):
                return

    def drain(self) -> None:
        while True:
            cursor, events = self.store.status_events_since(self.cursor)
            for event in events:
                task = self.store.get_task(event.task_id)
                for handler in self.handlers:
                    try:
                        handler(event, task)
                    except Exception:  # noqa: BLE001 - one handler must not starve the others
                        log.exception("status handler %r failed", handler)
            self.cursor = max(self.cursor, cursor)
            if self.on_drained is not None:
                self.on_drained()
            if not events or len(events) < 1000:
                return


class Ops:
    """What the operations features share, kept in app.extensions["scout_ops"]."""

    def __init__(self, state: Scout) -> None:
        self.state = state
        settings = state.settings
        self.retention = Retention(state.store, settings.retention_days, settings.retention_interval,
                                   state.supervisor.log_path,
                                   lambda: workspace_api.prune(state.store, settings.worktrees))
        self.webhooks = WebhookSender(settings.webhook_secret, on_settled=self.save_webhook_cursor)
        self.metrics = Metrics(state, self._metric_counts)
        self.follower = StatusFollower(state.store, [self.log_change, self.observe])
        # Webhooks read the log on their own, from where the last server left them.
        self.notifier = StatusFollower(state.store, [self.notify], durable=WEBHOOK_CURSOR,
                                       on_drained=lambda: self.save_webhook_cursor(every=1.0))
        self._cursor_lock = threading.Lock()
        self._saved_cursor: int | None = None
        self._saved_at = 0.0
        self._cursor_error: str | None = None
        self.leader: Leader | None = None

    def start(self) -> None:
        s = self.state.settings
        if s.webhook_url and not s.webhook_secret:
            log.warning("SCOUT_WEBHOOK_URL is set without SCOUT_WEBHOOK_SECRET: webhooks go out unsigned")
        self.webhooks.start()
        self.follower.start()
        if self.state.store.shared:  # exactly one node at a time sends webhooks and runs retention
            self.leader = Leader(self.state.store, "ops", self._lead, self._step_down, s.node_lease / 3)
            self.leader.start()
        else:
            self._lead()

    @property
    def leading(self) -> bool:
        return self.leader is None or self.leader.leading

    def _lead(self) -> None:
        self.notifier.start()
        self.retention.start()

    def _step_down(self) -> None:
        self.retention.stop()
        self.notifier.stop()
        self.save_webhook_cursor()  # behind whatever was not sent: the next leader sends it

    def stop(self) -> None:
        if self.leader is not None:
            self.leader.stop()  # steps down if it leads
        else:
            self._step_down()
        self.follower.stop()
        self.webhooks.stop()
        self.save_webhook_cursor()

    def save_webhook_cursor(self, every: float = 0.0) -> None:
        """Store how far webhooks have got: the notifier's cursor, but never past a log event
        whose deliveries have not settled. ``every``: not more often than that (seconds) --
        the log moves on with every event, and a cursor a little behind costs only a re-read."""
        with self._cursor_lock:
            low = self.webhooks.low_mark()
            cursor = self.notifier.cursor if low is None else min(low - 1, self.notifier.cursor)
            if cursor == self._saved_cursor or time.monotonic() - self._saved_at < every:
                return
            try:
                self.state.store.set_cursor(WEBHOOK_CURSOR, cursor)
                self._saved_cursor, self._saved_at, self._cursor_error = cursor, time.monotonic(), None
            except StoreError as exc:
                if str(exc) != self._cursor_error:  # once per kind of failure, not on every read
                    log.warning("could not store the webhook cursor: %s", exc)
                self._cursor_error = str(exc)

    def _metric_counts(self) -> dict[str, Any]:
        return {"webhooks": dict(self.webhooks.counts), "webhook_queue": self.webhooks.pending(),
                "pruned": dict(self.retention.totals)}

    # -- status handlers ---------------------------------------------------------------

    @staticmethod
    def _times(event: Event, task: Task | None) -> tuple[float | None, float | None]:
        """(seconds since the task was created, seconds it ran if it has finished)."""
        if task is None:
            return None, None
        since = max(0.0, event.time - task.created_at)
        ran = None
        if event.payload.get("status") in TERMINAL:
            ran = max(0.0, (task.finished_at or event.time) - task.started_at) if task.started_at else 0.0
        return since, ran

    def log_change(self, event: Event, task: Task | None) -> None:
        status = event.payload.get("status")
        since, ran = self._times(event, task)
        text = f"task {event.task_id} {status}"
        if event.payload.get("requeued"):
            text += " (requeued)"
        if since is not None:
            text += f" {since:.2f}s after it was created"
        if ran is not None:
            text += f", ran {ran:.2f}s"
        task_log.info(text, extra=fields(
            event="task_status", task_id=event.task_id, session_id=task.session_id if task else None,
            status=status, duration_s=round(since, 3) if since is not None else None,
            run_s=round(ran, 3) if ran is not None else None, seq=event.seq))

    def observe(self, event: Event, task: Task | None) -> None:
        status = event.payload.get("status")
        if status in TERMINAL:
            _, ran = self._times(event, task)
            self.metrics.observe_finished(status, ran or 0.0)

    def notify(self, event: Event, task: Task | None) -> None:
        status = event.payload.get("status")
        if status not in TERMINAL and status != WAITING:
            return
        settings = self.state.settings
        wanted = [settings.webhook_url, task.options.get("webhook_url") if task else None]
        urls: list[str] = list(dict.fromkeys(u for u in wanted if u))
        for url in list(urls):  # checked again: the allow-list may have changed since the task was made
            if webhook_url_problem(url, settings.webhook_hosts):
                log.warning("webhook for task %s not sent: %s", event.task_id, where(url))
                urls.remove(url)
        if not urls:
            return
        doc: dict[str, Any] = {"task_id": event.task_id, "status": status,
                               "session_id": task.session_id if task else None, "time": event.time}
        if status == WAITING:
            approvals = self.state.store.open_approvals(event.task_id)
            if approvals:
                doc["approval"] = {"tool_use_id": approvals[0]["tool_use_id"], "tool": approvals[0]["tool"]}
        name = "task.waiting" if status == WAITING else "task.finished"
        for url in urls:
            self.webhooks.send(url, name, doc, key=f"{event.task_id}/{event.seq}/{url}", mark=event.id)


# -- routes ------------------------------------------------------------------------------

bp = Blueprint("ops", __name__)


def _ops() -> Ops:
    return current_app.extensions["scout_ops"]


@bp.post("/admin/prune")
def prune():
    s = _ops().state
    body: Any = {}
    if request.get_data(cache=True):
        if not request.is_json:
            raise ApiError(415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)")
        body = load_json(request.get_data(cache=True))
    req = check_object(body, {"older_than_days": float}, ())
    days = req.get("older_than_days", s.settings.retention_days)
    if "older_than_days" in req and not 0 <= days <= 1e6:
        raise ApiError(400, "invalid_field", "'older_than_days' must be 0 or more")
    if "older_than_days" not in req and days <= 0:
        raise ApiError(400, "retention_disabled", "retention is off (SCOUT_RETENTION_DAYS=0); "
                       "say how old with {\"older_than_days\": N}")
    return _ops().retention.prune(days)


@bp.get("/metrics")
def metrics():
    return Response(generate_latest(_ops().metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


@bp.get("/chat/<task_id>/logs")
def task_logs(task_id: str):
    state = _ops().state
    task = task_or_404(state.store, task_id)
    path = state.supervisor.log_path(task.id)
    tail = int_arg(request.args.get("tail"), "tail", None, 1, 2**40)
    try:
        with open(path, "rb") as fh:
            if tail:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - tail))
            data = fh.read()
    except FileNotFoundError:
        raise ApiError(404, "no_logs", f"task {task.id} has no worker log"
                       + (" (it has not started)" if task.started_at is None else "")) from None
    return Response(data, headers={"Content-Type": "text/plain; charset=utf-8"})


@bp.get("/chat/<task_id>/transcript")
def task_transcript(task_id: str):
    from .transcript import task_markdown

    store = _ops().state.store
    task = task_or_404(store, task_id)
    doc = task_detail(task, list(store.iter_events(task.id)))
    return Response(task_markdown(doc), headers={"Content-Type": "text/markdown; charset=utf-8"})


@bp.get("/sessions/<session_id>/transcript")
def session_transcript(session_id: str):
    from .transcript import session_markdown

    store = _ops().state.store
    session = session_or_404(store, session_id)
    tasks = store.session_tasks(session.id)
    session_doc = session_detail(session, tasks)
    docs = [task_detail(t, list(store.iter_events(t.id))) for t in tasks]
    return Response(session_markdown(session_doc, docs), headers={"Content-Type": "text/markdown; charset=utf-8"})


def init_app(app: Flask, start: bool = True) -> Ops:
    """Add the operations routes to an app; with start, run the retention job, the status
    follower and the webhook senders until the app's Scout is closed."""
    state = app.extensions["scout"]
    ops = Ops(state)
    app.extensions["scout_ops"] = ops
    app.register_blueprint(bp)
    if start:
        ops.start()
        closers = getattr(state, "on_close", None)
        if closers is not None:
            closers.append(ops.stop)
    return ops
