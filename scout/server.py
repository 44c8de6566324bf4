"""The HTTP API: a Flask app factory, served by waitress.

Routes read and write the event log through the store and ask the supervisor to
start and stop processes; nothing here waits for Claude Code. SSE streams are
generators that read new event rows for a task, woken by the log watcher.
"""
from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import sys
import threading
import time
from typing import Any, Iterator

from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from . import __version__, ops, vault, workspace_api
from .backends import open_store
from .config import ConfigError, Settings, is_postgres_url
from .documents import session_detail, session_or_404, sse_end, sse_frame, task_detail, task_or_404, task_summary
from .guard import HostRules, is_loopback
from .sandbox import Probe
from .sandbox import probe as sandbox_probe
from .logs import banner, log_request, setup_logging
from .modes import DEFAULT_MODE, Mode, ModeError, load_modes
from .nodes import NodeAgent, bp as nodes_blueprint, node_list
from .notify import LogWatcher
from .serverproc import install_shutdown_handlers, make_undumpable, program_version
from .state import Scout, scout
from .store import EventLog, Store, StoreBusy, StoreError, Task, new_id
from .supervisor import Supervisor
from .validate import (ApiError, check_approval, check_chat, check_cwd, check_webhook_url,
                       int_arg, session_cursor)
from .validate import body_limit, load_json
from .openapi import openapi as openapi_blueprint
from .vocab import CANCELLED, PENDING, RUNNING, STATUSES, TERMINAL, UNFINISHED, WAITING

log = logging.getLogger("scout.server")
PUBLIC_ENDPOINTS = {"api.health", "openapi.document"}
# How long a request waits for another process's write lock before answering 503
# database_busy (and /health reports the lock): a worker holds it for milliseconds.
REQUEST_BUSY_TIMEOUT = 1.0


def claude_info(path: str | None) -> dict[str, Any]:
    """The Claude Code CLI's path and version, or why it is missing."""
    if not path:
        return {"path": None, "version": None, "missing": True, "error": "claude-agent-sdk's bundled CLI not found"}
    if not os.access(path, os.X_OK):
        return {"path": path, "version": None, "missing": True, "error": "not an executable file"}
    version, error = program_version(path)
    return {"path": path, "version": version, "missing": version is None, **({"error": error} if error else {})}


# -- routes --------------------------------------------------------------------------

api = Blueprint("api", __name__)


def json_body() -> Any:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)")
    return load_json(request.get_data(cache=True))  # 400 for bad JSON; past MAX_CONTENT_LENGTH, 413


def default_cwd(settings: Settings) -> str:
    """Where a task runs when neither it nor its session says: the first allowed root."""
    return settings.allowed_roots[0] if settings.allowed_roots else os.getcwd()


def resolve_options(req: dict[str, Any], session_cwd: str | None) -> dict[str, Any]:
    """A request's mode and overrides, resolved into what the worker hands Claude Code."""
    s = scout()
    name = req.get("mode") or DEFAULT_MODE
    mode = s.modes.get(name)
    if mode is None:
        raise ApiError(400, "unknown_mode", f"unknown mode {name!r}; valid modes: {', '.join(s.modes)}")
    if "cwd" in req:
        cwd = check_cwd(req["cwd"], s.settings.allowed_roots)
    elif session_cwd and os.path.isdir(session_cwd):
        cwd = check_cwd(session_cwd, s.settings.allowed_roots)  # the roots may have changed since
    else:
        cwd = default_cwd(s.settings)
    return {
        "mode": mode.name, "mode_prompt": mode.prompt, "cwd": cwd,
        "append_system_prompt": req.get("append_system_prompt"),
        "permission_mode": mode.permission_mode,
        "allowed_tools": mode.tool_rules(req.get("allowed_tools", mode.allowed_tools),
                                         req.get("disallowed_tools", mode.disallowed_tools)),
        "disallowed_tools": req.get("disallowed_tools", mode.disallowed_tools),
        "approval_tools": mode.approval_tools,
        "auto_approve_read_only": mode.auto_approve_read_only,
        "mcp_servers": mode.sdk_mcp_servers(),  # the operator's modes file only: never from a request
        "model": req.get("model", mode.model),
        "max_turns": req.get("max_turns", mode.max_turns),
        "max_budget_usd": req.get("max_budget_usd"),
        "stream_deltas": req.get("stream_deltas", True),
        "webhook_url": (check_webhook_url(req["webhook_url"], s.settings.webhook_hosts)
                        if "webhook_url" in req else None),
        **sandbox_options(mode, s.sandbox, private_dirs(s.settings)),
    }


def private_dirs(settings: Settings) -> list[str]:
    """Scout's own files, which no task may read: the database's directory and the logs
    (a PostgreSQL database has no directory here: its URL is no path)."""
    dirs = [os.path.dirname(settings.db) if not is_postgres_url(settings.db) else "", settings.log_dir]
    return [d for i, d in enumerate(dirs) if d and d not in dirs[:i]]


def sandbox_options(mode: Mode, probe: Probe, private: list[str]) -> dict[str, Any]:
    """Whether the task runs sandboxed (decided here, shown in its status document, enforced
    by the worker) and what the sandbox needs. A `required` mode without a sandbox is still
    accepted: its task fails at start with the reason, as any task that cannot run does."""
    return {"sandbox": mode.sandbox, "sandboxed": mode.sandbox != "off" and probe.available,
            "sandbox_error": None if probe.available or mode.sandbox == "off" else probe.error,
            "sandbox_writes": mode.sandbox_writes, "allowed_domains": list(mode.allowed_domains),
            "private_dirs": private}
def check_node(s: Scout, node: str | None) -> str | None:
    """The `node` a task is pinned to, if it names one that is on this log."""
    if node is None:
        return None
    known = [n["node"] for n in node_list(s)]
    if node not in known:
        raise ApiError(400, "unknown_node", f"no node {node!r} on this log (nodes: {', '.join(known)})")
    return node


@api.post("/chat")
def start_chat():
    s = scout()
    req = check_chat(json_body(), s.settings.max_message_bytes)
    session_id = req.get("session_id")
    session = s.store.get_session(session_id) if session_id else None
    options = resolve_options(req, session.cwd if session else None)
    session_id = session_id or new_id()  # known before the task: it names the worktree
    workspace = workspace_api.choose(req, options["cwd"], s.modes[options["mode"]], session, session_id,
                                     s.settings.worktrees)
    options["workspace"] = workspace.to_dict()
    on_busy = req.get("on_busy", "queue")
    busy: list[Task] = []
    if session is not None and not session.can_continue:
        raise ApiError(409, "session_ended", session.history_lost or f"session {session.id} cannot be continued")
    if session is not None:
        busy = [t for t in s.store.session_tasks(session.id) if t.status in UNFINISHED]
        if busy and on_busy == "reject":
            raise ApiError(409, "session_busy",
                           f"session {session.id} is busy with task {busy[0].id} ({busy[0].status})")
    node = check_node(s, req.get("node"))
    task = s.store.create_task(req["message"], options, session_id, max_pending=s.settings.max_pending,
                               workspace=workspace.to_dict() if workspace.kind != "shared" else None, node=node)
    if task is None:
        raise ApiError(429, "too_many_pending",
                       f"{s.settings.max_pending} tasks are already waiting; try again later",
                       headers={"Retry-After": "5"})
    if busy and on_busy == "interrupt":
        s.supervisor.interrupt_in_background([t.id for t in busy])
    s.supervisor.wake()
    body = {"task_id": task.id, "status": task.status, "session_id": task.session_id}
    return body, 202, {"Location": f"/chat/{task.id}/status"}


@api.get("/chat/<task_id>/status")
def task_status(task_id: str):
    task = get_task_or_404(task_id)
    want_events = request.args.get("events", "true").lower() not in ("0", "false", "no")
    if not want_events:
        return task_detail(task, None)
    return Response(status_json(scout().store, task), mimetype="application/json")


def status_json(store: EventLog, task: Task, chunk: int = 65536) -> Iterator[str]:
    """The status document with its events, streamed: the head goes out at once and the
    events follow page by page, their stored payload JSON pasted in rather than decoded and
    encoded again (a task with 10,000 events starts answering in about a millisecond)."""
    head = json.dumps(task_detail(task, None), separators=(",", ":"))
    parts, size = [head[:-1] + ',"events":['], 0
    for i, event_json in enumerate(store.iter_event_json(task.id)):
        parts.append(event_json if i == 0 else "," + event_json)
        size += len(event_json)
        if size >= chunk:
            yield "".join(parts)
            parts, size = [], 0
    parts.append("]}")
    yield "".join(parts)


@api.get("/chat/<task_id>/stream")
def task_stream(task_id: str):
    task = get_task_or_404(task_id)
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id") \
        or request.args.get("after")
    after = int_arg(raw, "Last-Event-ID", 0, 0, 2**62)
    s = scout()
    # Each stream holds a waitress thread; the pool has SCOUT_MAX_STREAMS threads for them on
    # top of SCOUT_THREADS for everything else, so past the cap a stream is refused rather
    # than let /health, /chat and /stop wait for a thread.
    if not s.watcher.open_stream(s.settings.max_streams):
        raise ApiError(503, "too_many_streams",
                       f"{s.settings.max_streams} streams are open (SCOUT_MAX_STREAMS); try again later",
                       headers={"Retry-After": "5"})
    gone = request.environ.get("waitress.client_disconnected") or (lambda: False)
    resp = Response(stream_events(s, task.id, after or 0, gone), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.call_on_close(s.watcher.close_stream)  # also when the generator never started
    return resp


DISCONNECT_CHECK_SECONDS = 1.0


def stream_events(s: Scout, task_id: str, after: int, gone=lambda: False) -> Iterator[bytes]:
    """Replay the log after `after`, follow it live, end with an `end` event once finished.
    `gone()` says the client has hung up: checked every second while the task is quiet, so a
    vanished client frees its thread within about a second, not at the next keep-alive."""
    yield b"retry: 1000\n\n"
    last = after
    while True:
        seen = s.watcher.generation(task_id)
        frames = s.watcher.frames_after(task_id, last)
        if frames is None:
            frames = [sse_frame(task_id, *row) for row in s.store.raw_events_after(task_id, last, 500)]
        final = None
        for seq, data, ends in frames:
            yield data
            last, final = seq, ends or final
        if final:
            yield sse_end(task_id, final)
            return
        if frames:
            continue
        task = s.store.get_task(task_id)
        if task is None:
            yield sse_end(task_id, "deleted")
            return
        if task.status in TERMINAL:
            if not s.store.events_after(task_id, last, 1):
                yield sse_end(task_id, task.status)
                return
            continue
        if s.watcher.stopped or gone():
            return  # the server is shutting down, or nobody is listening any more
        if not _wait_quietly(s, task_id, seen, gone):
            yield b": keep-alive\n\n"


def _wait_quietly(s: Scout, task_id: str, seen: int, gone) -> bool:
    """Wait for the task's next change (True), or SCOUT_SSE_KEEPALIVE seconds (False), in
    slices short enough to notice a client that has gone."""
    deadline = time.monotonic() + s.settings.sse_keepalive
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if s.watcher.wait(task_id, seen, min(left, DISCONNECT_CHECK_SECONDS)):
            return True
        if gone() or s.watcher.stopped:
            return True  # the caller's loop sees why and ends the stream


@api.post("/chat/<task_id>/stop")
def stop_task(task_id: str):
    task = get_task_or_404(task_id)
    if task.finished:
        return {"task_id": task.id, "status": task.status, "stopped": False,
                "message": f"task already {task.status}; nothing to stop"}
    status = scout().supervisor.stop(task.id)
    scout().watcher.touch(task.id)
    return {"task_id": task.id, "status": status, "stopped": status == CANCELLED}


@api.post("/chat/<task_id>/approve")
def approve(task_id: str):
    task = get_task_or_404(task_id)
    req = check_approval(json_body())
    if task.finished:
        raise ApiError(409, "task_finished", f"task already {task.status}")
    answered = scout().store.decide_approval(task.id, req["decision"], req.get("reason"),
                                             req.get("tool_use_id"))
    if answered is None:
        raise ApiError(409, "no_pending_approval", "the task is not waiting for an approval")
    return {"task_id": task.id, "tool_use_id": answered, "decision": req["decision"]}


@api.get("/tasks")
def list_tasks():
    status = request.args.get("status")
    if status and status not in STATUSES:
        raise ApiError(400, "invalid_parameter", f"unknown status {status!r}")
    session_id = request.args.get("session_id")
    limit = int_arg(request.args.get("limit"), "limit", 50, 1, 1000)
    cursor = int_arg(request.args.get("cursor"), "cursor", None, 0, 2**62)
    tasks = scout().store.list_tasks(status, session_id, limit + 1, cursor)
    more = len(tasks) > limit
    tasks = tasks[:limit]
    return {"tasks": [task_summary(t) for t in tasks],
            "next_cursor": tasks[-1].num if more and tasks else None}


@api.delete("/tasks/<task_id>")
def delete_task(task_id: str):
    task = get_task_or_404(task_id)
    s = scout()
    if not task.finished:
        s.supervisor.stop(task.id)
    session = s.store.get_session(task.session_id)
    s.store.delete_task(task.id)  # and its session, if this was the session's last task
    s.watcher.touch(task.id)
    session_deleted = s.store.get_session(task.session_id) is None
    if session_deleted and session is not None:
        s.supervisor.end_session(session.id)
        workspace_api.remove_for_session(s.store, session, s.settings.worktrees)
    return {"task_id": task.id, "deleted": True, "session_deleted": session_deleted}


@api.get("/sessions")
def list_sessions():
    limit = int_arg(request.args.get("limit"), "limit", 50, 1, 1000)
    after = session_cursor(request.args.get("cursor"))
    sessions = scout().store.list_sessions(limit + 1, after)
    more = len(sessions) > limit
    sessions = sessions[:limit]
    last = sessions[-1] if more and sessions else None
    return {"sessions": sessions,
            "next_cursor": f"{last['last_activity']!r}_{last['session_id']}" if last else None}


def get_task_or_404(task_id: str) -> Task:
    return task_or_404(scout().store, task_id)


@api.get("/sessions/<session_id>")
def show_session(session_id: str):
    store = scout().store
    session = session_or_404(store, session_id)
    return session_detail(session, store.session_tasks(session.id))


@api.delete("/sessions/<session_id>")
def delete_session(session_id: str):
    s = scout()
    session = session_or_404(s.store, session_id)
    for task in s.store.session_tasks(session.id):
        if not task.finished:
            s.supervisor.stop(task.id)
    deleted = s.store.delete_session(session.id) or 0
    s.supervisor.end_session(session.id)  # its warm Claude Code, if it has one
    workspace_api.remove_for_session(s.store, session, s.settings.worktrees)
    return {"session_id": session.id, "deleted": True, "tasks_deleted": deleted}


@api.get("/modes")
def list_modes():
    return {"default": DEFAULT_MODE, "modes": [m.to_dict() for m in scout().modes.values()]}


@api.get("/config")
def show_config():
    """What a client needs to fill in a task: where it may run, and the defaults."""
    settings = scout().settings
    return {"default_cwd": default_cwd(settings), "allowed_roots": settings.allowed_roots,
            "default_mode": DEFAULT_MODE, "max_message_bytes": settings.max_message_bytes}


@api.get("/health")
def health():
    s = scout()
    db: dict[str, Any] = {"path": s.store.path, "ok": True}
    counts: dict[str, int] = {}
    try:
        counts = s.store.count_by_status()
        db["schema_version"] = s.store.schema_version()
        db["size_bytes"] = s.store.size_bytes()
        s.check_writable()
    except StoreError as exc:
        db.update(ok=False, error=str(exc))
    dispatcher_error = s.supervisor.fresh_error()
    if dispatcher_error:
        db.update(ok=False, error=dispatcher_error)
    if s.node is not None and s.node.last_error:
        db.update(ok=False, error=f"node heartbeat: {s.node.last_error}")
    ok = db["ok"] and not s.claude.get("missing", False)
    return {
        "status": "ok" if ok else "degraded", "version": __version__, "database": db,
        "claude": s.claude,
        "tasks": {str(s): counts.get(s, 0) for s in (RUNNING, WAITING, PENDING)},
        "workers": {"max": s.settings.max_workers, "active": s.supervisor.running_count(),
                    "zygote_alive": s.supervisor.zygote_alive()},
        "warm": {"idle": s.supervisor.warm_count(), "max": s.settings.max_warm,
                 "idle_limit_s": s.settings.session_idle},
        "node": node_health(s),
        "streams": s.watcher.streams, "max_streams": s.settings.max_streams,
        "sandbox": s.sandbox.to_dict(),
        "containment": s.supervisor.containment.to_dict(),
    }, 200 if db["ok"] else 503


def node_health(s: Scout) -> dict[str, Any]:
    """This node: its id, whether the log is shared, its lease, whether it leads the ops jobs."""
    out: dict[str, Any] = {"id": s.settings.node_id, "shared": s.store.shared,
                           "running": s.supervisor.running_count()}
    if s.node is not None:
        out.update(lease_s=s.settings.node_lease, heartbeat_error=s.node.last_error)
        ops_state = current_app.extensions.get("scout_ops")
        out["leader"] = bool(ops_state and ops_state.leading)
    return out


# -- the app -------------------------------------------------------------------------

def _public_route() -> bool:
    """Is the request for a public endpoint, also with a wrong method (so that is a 405, not a 401)?"""
    if request.endpoint in PUBLIC_ENDPOINTS:
        return True
    exc = request.routing_exception
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        adapter = current_app.create_url_adapter(request)
        if adapter is None:
            return False
        try:
            endpoint, _ = adapter.match(method=next(iter(exc.valid_methods)))
        except HTTPException:
            return False
        return endpoint in PUBLIC_ENDPOINTS
    return False


def _check_auth() -> None:
    token = scout().settings.api_token
    if not token or _public_route() or request.method == "OPTIONS":
        return
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <SCOUT_API_TOKEN>)",
                       headers={"WWW-Authenticate": "Bearer"})


HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                    415: "unsupported_media_type"}


def as_api_error(err: Exception) -> ApiError:
    """Any error a request raised, as the API's typed error (one handler turns it into JSON)."""
    if isinstance(err, ApiError):
        return err
    if isinstance(err, HTTPException):  # Flask's own: an unknown route, a method, a body too large
        code = err.code or 500
        headers = {}
        if code == 405:
            headers["Allow"] = ", ".join(getattr(err, "valid_methods", None) or [])
        return ApiError(code, HTTP_ERROR_CODES.get(code, "http_error"), err.description or err.name,
                        headers=headers)
    if isinstance(err, StoreBusy):
        return ApiError(503, "database_busy", str(err), headers={"Retry-After": "2"})
    if isinstance(err, StoreError):
        return ApiError(503, "database_unavailable", str(err))
    log.exception("unexpected error")
    return ApiError(500, "internal_error", f"internal error: {type(err).__name__}")


def _error_response(err: ApiError) -> Response:
    resp = Response(json.dumps(err.body()), status=err.status, mimetype="application/json")
    for k, v in err.headers.items():
        resp.headers[k] = v
    return resp


def create_app(settings: Settings | None = None, start: bool = True) -> Flask:
    """Build the app with its store, supervisor and log watcher (started unless start=False)."""
    settings = settings or Settings.from_env()
    app = Flask("scout", static_folder=None)  # no /static route: every route is in the API
    app.config["MAX_CONTENT_LENGTH"] = body_limit(settings.max_message_bytes)  # a JSON 413 past it
    app.url_map.merge_slashes = False  # "//x" is a JSON 404, not a redirect with an HTML body
    app.json.sort_keys = False  # type: ignore[attr-defined]  # Flask's DefaultJSONProvider has it
    store = open_store(settings.db, max_bytes=settings.db_max_bytes, pool_size=16,
                       busy_timeout=REQUEST_BUSY_TIMEOUT)
    integrity = store.integrity_check()
    if integrity != "ok":
        raise StoreError(f"database integrity check failed: {integrity}")
    watcher = LogWatcher(store, encode=sse_frame)
    # The supervisor's writes (a task's start and ending) must happen: on SQLite they wait out
    # another process's lock as long as a task may stay idle, where requests answer 503 after a
    # second. PostgreSQL locks rows, not the database: there one store serves both.
    patient: EventLog = store
    if isinstance(store, Store):
        patient = Store(settings.db, max_bytes=settings.db_max_bytes, migrate=False,
                        busy_timeout=max(REQUEST_BUSY_TIMEOUT, settings.idle_timeout))
    supervisor = Supervisor(patient, settings, on_change=watcher.touch)
    state = Scout(settings, store, supervisor, watcher, load_modes(settings.modes_file))
    if store.shared:
        state.node = NodeAgent(store, settings, watcher.touch, url=f"http://{settings.host}:{settings.port}")
        state.on_close.append(state.node.stop)
    app.extensions["scout"] = state
    app.register_blueprint(api)
    app.register_blueprint(nodes_blueprint)  # GET /nodes
    app.register_blueprint(openapi_blueprint)  # GET /openapi.json, public
    app.register_blueprint(workspace_api.bp)  # a session's worktree: changes, merge, discard
    ops.init_app(app, start)  # retention, metrics, webhooks, state-change logs, worker logs, transcripts

    rules = HostRules.build(settings.host, settings.allowed_hosts, settings.cors_origins)

    @app.before_request
    def before():
        g.started = time.monotonic()
        refused = rules.refusal(request.method, request.headers.get("Host"), request.headers.get("Origin"))
        if refused:  # before anything else, the token included: DNS rebinding, cross-site writes
            raise ApiError(403, refused.code, refused.message)
        if request.method == "OPTIONS" and request.url_rule is not None \
                and request.headers.get("Origin") in settings.cors_origins:
            return Response(status=204)  # a CORS preflight from an allowed origin; after() adds the headers
        _check_auth()

    @app.after_request
    def after(resp: Response):
        origin = request.headers.get("Origin")
        if origin and origin in settings.cors_origins:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
            resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
        line = (request.method, request.path, resp.status_code, g.get("started", time.monotonic()))
        if request.endpoint == "api.task_stream":  # logged when the stream ends
            resp.call_on_close(lambda: log_request(*line))
        else:
            log_request(*line)
        return resp

    @app.errorhandler(Exception)
    def error(err: Exception) -> Response:
        return _error_response(as_api_error(err))

    if start:
        workspace_api.prune(store, settings.worktrees)  # worktrees whose session is gone
        state.claude = claude_info(settings.claude_path)
        state.sandbox = sandbox_probe()
        if state.node is not None:
            state.node.start()  # a fresh lease before reconciling: this node's tasks are its own again
        summary = supervisor.start()
        watcher.start()
        if any(summary.values()):
            log.info("reconciled: %s", summary)
    return app


def check_bind(settings: Settings) -> None:
    """Refuse to listen beyond loopback without a token: whoever reaches the port runs code.
    A name counts as loopback only if every address it resolves to is (not "127.evil.com")."""
    if not is_loopback(settings.host) and not settings.api_token:
        raise ConfigError(f"refusing to listen on {settings.host} without SCOUT_API_TOKEN: anyone who "
                          "can reach the port could run commands on this machine")


def serve(settings: Settings | None = None) -> int:
    """Run the API with waitress until SIGTERM or SIGINT; returns the exit code."""
    import waitress

    settings = settings or Settings.from_env()
    check_bind(settings)
    make_undumpable()  # other processes of this user (the agent's tools) cannot read our /proc environ
    app = create_app(settings)
    state: Scout = app.extensions["scout"]
    # Each open SSE stream holds one waitress thread for its whole life, so the pool has
    # SCOUT_MAX_STREAMS threads for streams (more are refused with a 503) plus SCOUT_THREADS
    # that only ordinary requests can use up. send_bytes=1 makes every event leave as soon as
    # it is yielded instead of waiting for 18 kB to gather. channel_request_lookahead lets
    # waitress keep reading a streaming connection, which is how it learns the client has
    # gone (environ["waitress.client_disconnected"]). Bodies past the limit are refused
    # before waitress buffers them (its own default is 1 GiB, spooled to disk). poll(), not
    # select(): with hundreds of streams (and a database connection per thread) the
    # descriptors pass select()'s limit of 1024.
    pool = settings.threads + settings.max_streams
    server = waitress.create_server(app, host=settings.host, port=settings.port,
                                    threads=pool, send_bytes=1, channel_request_lookahead=1,
                                    asyncore_use_poll=True,
                                    max_request_body_size=body_limit(settings.max_message_bytes) + 65536,
                                    channel_timeout=300, connection_limit=max(1000, pool * 2),
                                    ident="scout")
    server.channel_class = _JsonErrorChannel
    stopping = threading.Event()

    def on_signal(signum: int) -> None:
        if not stopping.is_set():
            stopping.set()
            state.watcher.stop()  # open SSE streams end now; clients resume with Last-Event-ID
            raise _Shutdown  # leaves server.run() at once, even with idle keep-alive connections

    install_shutdown_handlers(on_signal)
    url = f"http://{settings.host}:{server.effective_port}"
    print(banner(f"Scout API on {url} (db {settings.db})", settings.log_format, event="listening", url=url),
          flush=True)
    try:
        server.run()
    except _Shutdown:
        pass
    finally:
        server.close()  # no new connections
        state.watcher.stop()  # open SSE streams end; clients resume with Last-Event-ID
        server.task_dispatcher.shutdown(timeout=5)  # requests in flight finish
        state.close()
    return 0


def _json_error_channel():
    """waitress's channel, with its own refusals (a body past max_request_body_size, a
    malformed request) answered as Scout's JSON errors instead of waitress's plain text."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    codes = {400: "bad_request", 413: "too_large", 431: "headers_too_large"}

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            err = self.request.error
            body = json.dumps({"error": {"code": codes.get(err.code, "http_error"),
                                         "message": f"{err.reason}: {err.body}"}}).encode()
            self.status = f"{err.code} {err.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


_JsonErrorChannel = _json_error_channel()


class _Shutdown(SystemExit):
    """Raised by the SIGTERM/SIGINT handler to leave waitress's loop. A SystemExit, the one
    kind waitress's per-channel handlers re-raise instead of swallowing."""


def main(argv: list[str] | None = None) -> None:
    make_undumpable()  # other processes of this user (the agent's tools) cannot read our memory
    vault.reexec_without_secrets()  # and our /proc environ never holds a secret
    parser = argparse.ArgumentParser(
        prog="python -m scout.server",
        description="Run the Scout API server (settings come from SCOUT_* environment variables; "
                    "see the README).")
    parser.add_argument("--host", help="address to listen on (SCOUT_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (SCOUT_PORT, default 8000)")
    parser.add_argument("--db", help="database file (SCOUT_DB, default data/scout.db)")
    args = parser.parse_args(argv)
    setup_logging((os.environ.get("SCOUT_LOG_FORMAT") or "text").lower(), os.environ.get("SCOUT_LOG_LEVEL", "INFO"))
    env = {**os.environ, **vault.take()}
    for name, value in (("SCOUT_HOST", args.host), ("SCOUT_PORT", args.port), ("SCOUT_DB", args.db)):
        if value is not None:
            env[name] = str(value)
    try:
        settings = Settings.from_env(env)
        sys.exit(serve(settings))
    except (ConfigError, ModeError, StoreError) as exc:
        print(f"scout: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
