"""The API contract: an OpenAPI 3.1 document of every endpoint, served at /openapi.json.

`build_spec` returns the document as a dict; it describes the server it is asked about
(its modes, its size limit, whether it wants a bearer token). tests/test_openapi.py keeps
it true: its paths and methods must equal the app's routes, and schemathesis checks the
live server's answers against it.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify

from . import __version__
from .modes import DEFAULT_MODE, PERMISSION_MODES, WORKSPACES
from .sandbox import SANDBOX_CHOICES, WRITE_CHOICES
from .validate import MAX_REASON_CHARS, ON_BUSY
from .vocab import EVENT_TYPES, PENDING, RUNNING, STATUSES, WAITING

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
SESSION_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
TOOL_PATTERN = r"^[A-Za-z0-9_.:*()\-/ ]{1,200}$"
MODEL_PATTERN = r"^[A-Za-z0-9._:\[\]/-]{1,100}$"
NO_NUL = r"^[^\x00]*$"
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"  # something besides whitespace, and no NUL
MAX_SEQ = 2**62

openapi = Blueprint("openapi", __name__)


@openapi.get("/openapi.json")
def document():
    s = current_app.extensions["scout"]
    return jsonify(build_spec(modes=list(s.modes), max_message_bytes=s.settings.max_message_bytes,
                              auth=bool(s.settings.api_token)))


# -- schema helpers ------------------------------------------------------------------

def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema or null (the server treats a null request field as absent)."""
    out = dict(schema)
    if "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def _obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    out["required"] = list(props) if required is None else required
    out.update(extra)
    return out


STR = {"type": "string"}
STR_OR_NULL = {"type": ["string", "null"]}
NUM = {"type": "number"}
NUM_OR_NULL = {"type": ["number", "null"]}
INT = {"type": "integer"}
INT_OR_NULL = {"type": ["integer", "null"]}
BOOL = {"type": "boolean"}
TIME = {"type": "number", "description": "Unix time in seconds"}
TIME_OR_NULL = {"type": ["number", "null"], "description": "Unix time in seconds"}
TASK_ID = {"type": "string", "format": "uuid", "pattern": UUID_PATTERN}
STATUS = {"type": "string", "enum": [str(s) for s in STATUSES]}
CAN_CONTINUE = {"type": "boolean", "description": "false once the session's earlier conversation is known to be "
                "gone: a further message to it is refused (409 session_ended)"}

ERROR_CODES = {
    400: "Bad request: malformed JSON, a missing, empty, unknown or wrongly typed field, a bad "
         "query parameter, a bad cwd, an unknown mode or node.",
    401: "A bearer token is needed (SCOUT_API_TOKEN is set) and was missing or wrong.",
    403: "host_not_allowed: the Host header is not one this server answers to (loopback names, the "
         "bound address, SCOUT_ALLOWED_HOSTS); origin_not_allowed: a POST or DELETE from an Origin "
         "that is neither the server's own nor in SCOUT_CORS_ORIGINS; cwd_not_allowed: cwd resolves "
         "outside the allowed roots (SCOUT_ALLOWED_ROOTS).",
    404: "No such task or session (or no such path).",
    405: "Method not allowed; the Allow header lists those that are.",
    409: "Conflict with the task's or session's state (session_busy, task_finished, workspace_mismatch, "
         "workspace_missing, no_worktree, merge_conflict, target_dirty, target_moved...).",
    413: "The message is longer than SCOUT_MAX_MESSAGE_BYTES, or the body far too large.",
    415: "The body is not sent as application/json.",
    429: "Too many tasks are pending (SCOUT_MAX_PENDING); retry after Retry-After seconds.",
    503: "The database cannot be used (database_unavailable: unreadable, read-only, full), or another "
         "process holds its write lock (database_busy, with Retry-After); for a stream, also "
         "too_many_streams: SCOUT_MAX_STREAMS are open (retry after Retry-After seconds).",
}


def _error(status: int, description: str | None = None) -> dict[str, Any]:
    resp: dict[str, Any] = {"description": description or ERROR_CODES[status],
                            "content": {"application/json": {"schema": _ref("Error")}}}
    if status == 401:
        resp["headers"] = {"WWW-Authenticate": {"schema": STR, "required": True}}
    if status == 405:
        resp["headers"] = {"Allow": {"schema": STR, "required": True,
                                     "description": "the methods the path supports"}}
    if status in (429, 503):  # a 503 carries it only for database_busy and too_many_streams
        resp["headers"] = {"Retry-After": {"schema": {"type": "integer", "minimum": 0}, "required": status == 429,
                                           "description": "seconds to wait before trying again"}}
    return resp


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, responses: dict[Any, Any], errors: tuple[int, ...], *, auth: bool,
        public: bool = False, **extra: Any) -> dict[str, Any]:
    """An operation; every one may also answer 405 (wrong method) and 403 (a Host not served, a
    foreign Origin on a write), and a protected one 401."""
    codes = set(errors) | {403, 405} | ({401} if auth and not public else set())
    op: dict[str, Any] = {"summary": summary, **extra,
                          "responses": {str(k): v for k, v in responses.items()}}
    for code in sorted(codes):
        op["responses"][str(code)] = _error(code)
    if public:
        op["security"] = []
    return op


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": schema}


def schemas(modes: list[str], max_message_bytes: int) -> dict[str, Any]:
    """The component schemas. Request schemas are exact (unknown fields are rejected);
    response schemas leave room for fields added later."""
    mode_names = modes or [DEFAULT_MODE]
    text_field = {"type": "string", "maxLength": max_message_bytes, "pattern": NO_NUL}
    tools = {"type": "array", "maxItems": 100, "items": {"type": "string", "pattern": TOOL_PATTERN}}
    event = _obj({
        "seq": {"type": "integer", "minimum": 1, "description": "1, 2, 3... per task, gap-free"},
        "type": {"type": "string", "description": ", ".join(EVENT_TYPES)},
        "time": TIME,
        "payload": {"type": "object"},
    })
    result = _obj({
        "text": STR_OR_NULL, "duration_ms": NUM_OR_NULL, "num_turns": INT_OR_NULL,
        "total_cost_usd": NUM_OR_NULL, "usage": {"type": ["object", "null"]}, "subtype": STR_OR_NULL,
    }, required=[])
    file_change = _obj({"path": STR, "status": {"type": "string", "enum": ["added", "modified", "deleted",
                                                                           "type_changed"]},
                        "additions": INT, "deletions": INT, "binary": BOOL})
    workspace = _obj({
        "kind": {"type": "string", "enum": ["shared", "worktree"]},
        "repo": {**STR, "description": "the top level of the checkout that holds cwd"},
        "path": {**STR, "description": "the worktree folder (under SCOUT_WORKTREES)"},
        "branch": {**STR, "description": "scout/<session>"},
        "base_commit": {**STR_OR_NULL, "description": "what the session's changes count from; null after "
                        "a discard (the next message makes a fresh worktree)"},
        "target_branch": {**STR_OR_NULL, "description": "the branch a merge goes into"},
    }, required=["kind"], description="Where the session's tasks run; kind shared has only kind.")
    return {
        "Error": _obj({"error": _obj({
            "code": {"type": "string", "description": "stable, machine-readable",
                     "examples": ["invalid_json", "unknown_field", "not_found"]},
            "message": {"type": "string", "description": "for people"},
            "paths": {"type": "array", "items": STR,
                      "description": "merge_conflict: the conflicting paths; target_dirty: the changed files"},
        }, required=["code", "message"])}, description="Every error answer has this body."),
        "Workspace": workspace,
        "FileChange": file_change,
        "Changes": _obj({"session_id": STR, "workspace": _ref("Workspace"),
                         "files": {"type": "array", "items": _ref("FileChange")},
                         "additions": INT, "deletions": INT},
                        description="The session's changes against base_commit (uncommitted and untracked "
                                    "files included); a `changes` event's payload has files, additions, deletions."),
        "MergeRequest": {"type": "object", "additionalProperties": False, "properties": {
            "message": _nullable({"type": "string", "minLength": 1, "maxLength": 10000, "pattern": NOT_BLANK,
                                  "description": "the commit message"}),
            "squash": _nullable({"type": "boolean", "description": "one commit instead of a merge"})}},
        "MergeResult": _obj({"session_id": STR, "merged": {"const": True},
                             "commit": {**STR, "description": "what the target branch now points at"},
                             "files": {"type": "array", "items": _ref("FileChange")},
                             "target_branch": STR_OR_NULL}),
        "DiscardResult": _obj({"session_id": STR, "discarded": {"const": True},
                               "removed": {**BOOL, "description": "false if nothing was there"}}),
        "ChatRequest": {
            "type": "object", "additionalProperties": False, "required": ["message"],
            "description": "Fields set to null count as absent. Unknown fields are rejected (400).",
            "properties": {
                "message": {"type": "string", "pattern": NOT_BLANK, "description":
                            f"The prompt; not blank, no NUL, at most {max_message_bytes} bytes of "
                            "UTF-8 (SCOUT_MAX_MESSAGE_BYTES; more is 413)."},
                "session_id": _nullable({"type": "string", "pattern": SESSION_PATTERN, "description":
                                         "Continue this session (created if new); omitted: a new one."}),
                "mode": _nullable({"type": "string", "enum": mode_names,
                                   "description": f"Mode name (GET /modes); default {DEFAULT_MODE}."}),
                "cwd": _nullable({**text_field, "description":
                                  "Absolute path of an existing directory inside SCOUT_ALLOWED_ROOTS "
                                  "(resolved: symlinks and .. count). Outside: 403; otherwise bad: 400."}),
                "append_system_prompt": _nullable(text_field),
                "on_busy": _nullable({"type": "string", "enum": list(ON_BUSY), "description":
                                      "When the session has a task running: queue (default), reject "
                                      "(409) or interrupt it."}),
                "model": _nullable({"type": "string", "pattern": MODEL_PATTERN}),
                "max_turns": _nullable({"type": "integer", "minimum": 1, "maximum": 1000}),
                "allowed_tools": _nullable(tools),
                "disallowed_tools": _nullable(tools),
                "max_budget_usd": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 10000}),
                "stream_deltas": _nullable({"type": "boolean", "description": "default true"}),
                "webhook_url": _nullable({"type": "string", "maxLength": 2000, "pattern": r"^https?://",
                                          "description": "Called when the task ends; the host must be "
                                          "in SCOUT_WEBHOOK_HOSTS."}),
                "workspace": _nullable({"type": "string", "enum": list(WORKSPACES), "description":
                                        "Where the session's tasks run, fixed by its first task: shared (in "
                                        "cwd), worktree (a git worktree of its own; 400 not_a_git_repo "
                                        "outside git) or auto (worktree inside git). Default: the mode's. "
                                        "Another kind later: 409 workspace_mismatch."}),
                "base": _nullable({"type": "string", "minLength": 1, "maxLength": 256, "pattern": NO_NUL,
                                   "description": "A new worktree starts at this commit-ish (default HEAD)."}),
                "node": _nullable({"type": "string", "pattern": SESSION_PATTERN, "description":
                                   "Run only on this node (GET /nodes): for a cwd that exists there alone. "
                                   "A node not on the log: 400 unknown_node."}),
            },
        },
        "ChatAccepted": _obj({"task_id": TASK_ID, "status": {"type": "string", "enum": [PENDING]},
                              "session_id": STR}),
        "Event": event,
        "Result": result,
        "TaskDetail": _obj({
            "task_id": TASK_ID, "status": STATUS, "error": STR_OR_NULL, "session_id": STR,
            "message": STR, "mode": STR_OR_NULL, "cwd": STR_OR_NULL,
            "sandboxed": {"type": "boolean", "description": "whether Bash runs in the OS sandbox"},
            "created_at": TIME,
            "started_at": TIME_OR_NULL, "finished_at": TIME_OR_NULL, "worker_pid": INT_OR_NULL,
            "node": {"type": ["string", "null"], "description": "the node (server) that runs or ran it"},
            "warm": {"type": "boolean", "description": "it ran in its session's warm Claude Code process "
                                                       "(an earlier task's); false: a new process"},
            "result": {"oneOf": [{"type": "null"}, _ref("Result")]},
            "events": {"type": "array", "items": _ref("Event"),
                       "description": "left out with ?events=false"},
            "workspace": _ref("Workspace"),
        }, required=["task_id", "status", "error", "session_id", "message", "mode", "cwd", "sandboxed",
                     "created_at", "started_at", "finished_at", "worker_pid", "result", "workspace"]),
        "TaskSummary": _obj({
            "task_id": TASK_ID, "status": STATUS, "session_id": STR,
            "message": {"type": "string", "description": "the first 200 characters"},
            "mode": STR_OR_NULL, "cwd": STR_OR_NULL, "created_at": TIME, "started_at": TIME_OR_NULL,
            "finished_at": TIME_OR_NULL, "error": STR_OR_NULL,
            "cursor": {"type": "integer", "description": "pass as ?cursor= for older tasks"},
            "cost_usd": NUM_OR_NULL,
        }, required=["task_id", "status", "session_id", "message", "mode", "cwd", "created_at",
                     "started_at", "finished_at", "error", "cursor"]),
        "TaskList": _obj({"tasks": {"type": "array", "items": _ref("TaskSummary")},
                          "next_cursor": INT_OR_NULL}),
        "StopResult": _obj({"task_id": TASK_ID, "status": STATUS, "stopped": BOOL,
                            "message": {"type": "string", "description": "when nothing was stopped"}},
                           required=["task_id", "status", "stopped"]),
        "ApprovalRequest": {
            "type": "object", "additionalProperties": False, "required": ["decision"],
            "properties": {
                "decision": {"type": "string", "enum": ["allow", "deny"]},
                "reason": _nullable({"type": "string", "maxLength": MAX_REASON_CHARS}),
                "tool_use_id": _nullable({"type": "string", "minLength": 1, "maxLength": 256,
                                          "description": "which open approval; default the oldest"}),
            },
        },
        "ApprovalResult": _obj({"task_id": TASK_ID, "tool_use_id": STR,
                                "decision": {"type": "string", "enum": ["allow", "deny"]}}),
        "TaskDeleted": _obj({"task_id": TASK_ID, "deleted": {"const": True}, "session_deleted": {
            **BOOL, "description": "the task was its session's last: the session is gone too"}}),
        "SessionSummary": _obj({
            "session_id": STR, "cwd": STR_OR_NULL, "task_count": INT,
            "first_message": {**STR_OR_NULL, "description": "the first task's message: the session's title"},
            "last_message": STR_OR_NULL,
            "last_status": {"type": ["string", "null"], "enum": [*STATUSES, None]},
            "total_cost_usd": NUM, "created_at": TIME, "last_activity": TIME,
            "can_continue": CAN_CONTINUE,
        }),
        "SessionList": _obj({"sessions": {"type": "array", "items": _ref("SessionSummary")},
                             "next_cursor": {**STR_OR_NULL, "description": "pass as ?cursor= for older sessions"}}),
        "Config": _obj({
            "default_cwd": {**STR, "description": "where a task runs when it does not say"},
            "allowed_roots": {"type": "array", "items": STR,
                              "description": "a task's cwd must be inside one of these"},
            "default_mode": STR, "max_message_bytes": INT}),
        "SessionDetail": _obj({
            "session_id": STR, "cwd": STR_OR_NULL, "created_at": TIME, "last_activity": TIME,
            "claude_session_id": STR_OR_NULL, "workspace": _ref("Workspace"), "can_continue": CAN_CONTINUE,
            "history_lost": {**STR_OR_NULL, "description": "why the session cannot be continued (its "
                             "earlier conversation is gone), or null"},
            "tasks": {"type": "array", "description": "oldest first", "items": _obj({
                "task_id": TASK_ID, "status": STATUS, "message": STR, "result_text": STR_OR_NULL,
                "error": STR_OR_NULL, "cost_usd": NUM_OR_NULL, "mode": STR_OR_NULL,
                "created_at": TIME, "finished_at": TIME_OR_NULL})},
        }),
        "SessionDeleted": _obj({"session_id": STR, "deleted": {"const": True}, "tasks_deleted": INT}),
        "Mode": _obj({
            "name": STR, "description": STR, "prompt": STR,
            "allowed_tools": {"type": "array", "items": STR},
            "disallowed_tools": {"type": "array", "items": STR},
            "approval_tools": {"type": "array", "items": STR},
            "auto_approve_read_only": BOOL,
            "permission_mode": {"type": "string", "enum": list(PERMISSION_MODES)},
            "model": STR_OR_NULL, "max_turns": INT_OR_NULL,
            "sandbox": {"type": "string", "enum": list(SANDBOX_CHOICES)},
            "sandbox_writes": {"type": "string", "enum": list(WRITE_CHOICES)},
            "allowed_domains": {"type": "array", "items": STR},
            "workspace": {"type": "string", "enum": list(WORKSPACES)},
            "mcp_servers": {"type": "array", "items": STR,
                            "description": "Names of the MCP servers the mode gives Claude Code (its tools are "
                                           "mcp__NAME__TOOL); their commands, URLs and secrets are not shown."},
        }),
        "PruneRequest": {"type": "object", "additionalProperties": False, "properties": {
            "older_than_days": _nullable({"type": "number", "minimum": 0, "maximum": 1e6})}},
        "PruneResult": _obj({"deleted_tasks": INT, "deleted_events": INT, "deleted_sessions": INT,
                             "freed_bytes": INT,
                             "database_full": {"type": "boolean", "description": "still out of room afterwards "
                                               "(SCOUT_DB_MAX_MB or the disk): prune younger tasks or raise the cap"}}),
        "ModeList": _obj({"default": STR, "modes": {"type": "array", "items": _ref("Mode")}}),
        "Health": _obj({
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "version": STR,
            "database": _obj({"path": STR, "ok": BOOL, "schema_version": INT, "size_bytes": INT,
                              "error": STR}, required=["path", "ok"]),
            "claude": _obj({"path": STR_OR_NULL, "version": STR_OR_NULL, "missing": BOOL, "error": STR},
                           required=["path", "version", "missing"]),
            "tasks": _obj({RUNNING: INT, WAITING: INT, PENDING: INT}),
            "workers": _obj({"max": INT, "active": INT, "zygote_alive": BOOL}),
            "warm": _obj({"idle": {"type": "integer", "description": "idle warm Claude Code processes"},
                          "max": {"type": "integer", "description": "SCOUT_MAX_WARM"},
                          "idle_limit_s": {"type": "number", "description": "SCOUT_SESSION_IDLE (0: off)"}}),
            "streams": {"type": "integer", "description": "open SSE streams"},
            "max_streams": {"type": "integer", "description": "SCOUT_MAX_STREAMS"},
            "sandbox": _obj({"available": BOOL, "error": STR}, required=["available"]),
            "containment": _obj({"method": {"type": "string", "enum": ["cgroup", "subreaper"]},
                                 "cgroup": STR, "reason": STR}, required=["method"]),
            "node": _obj({"id": STR, "shared": {"type": "boolean", "description": "other nodes share the log"},
                          "running": INT, "lease_s": NUM, "heartbeat_error": STR_OR_NULL,
                          "leader": {"type": "boolean", "description": "this node runs retention and webhooks"}},
                         required=["id", "shared", "running"]),
        }),
        "Node": _obj({
            "node": STR, "state": {"type": "string", "enum": ["live", "lost"]}, "version": STR_OR_NULL,
            "url": STR_OR_NULL, "lease_s": NUM_OR_NULL, "max_workers": INT_OR_NULL,
            "running": {"type": "integer", "description": "its tasks running or waiting"},
            "started_at": TIME_OR_NULL, "heartbeat_at": TIME_OR_NULL,
            "lease_expires_in": {"type": ["number", "null"], "description": "seconds; below 0: lapsed"},
        }, required=["node", "state", "running"]),
        "NodeList": _obj({"nodes": {"type": "array", "items": _ref("Node")}, "this_node": STR}),
    }


SSE_DESCRIPTION = """Server-sent events: the task's log replayed from the start (or after
Last-Event-ID), then followed live. Each event is `id: <seq>`, `event: <type>`,
`data: {"task_id", "seq", "type", "time", "payload"}` (JSON on one line). Comment lines
(`: keep-alive`) come every 15 s while nothing happens. Once the task is finished the
stream sends `event: end` with `data: {"task_id", "status"}` (no id) and closes; a task
deleted meanwhile ends with status "deleted"."""


def build_spec(modes: list[str] | None = None, max_message_bytes: int = 100_000,
               auth: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 document. auth: whether this server wants a bearer token
    (SCOUT_API_TOKEN set); without one, operations declare no security requirement."""
    modes = list(modes or [DEFAULT_MODE])
    task_id = _param("task_id", "path", TASK_ID, "the task's id (a UUID)")
    session_id = _param("session_id", "path", STR, "the session's id")
    limit = _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
                   "how many to return")
    seq = {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}
    chat_body = {"required": True, "content": {"application/json": {"schema": _ref("ChatRequest")}}}
    approve_body = {"required": True, "content": {"application/json": {"schema": _ref("ApprovalRequest")}}}
    op = lambda *a, **k: _op(*a, auth=auth, **k)  # noqa: E731
    paths: dict[str, Any] = {
        "/chat": {"post": op(
            "Start a task: run the message through Claude Code in the background",
            {202: {**_ok(_ref("ChatAccepted"), "Accepted; the task is pending."),
                   "headers": {"Location": {"schema": STR, "required": True,
                                            "description": "/chat/{task_id}/status"}}}},
            (400, 403, 409, 413, 415, 429, 503), requestBody=chat_body, operationId="startChat")},
        "/chat/{task_id}/status": {"get": op(
            "A task's status, result and (by default) its events",
            {200: _ok(_ref("TaskDetail"), "The task.")}, (404, 503),
            parameters=[task_id, _param("events", "query", {"type": "boolean", "default": True},
                                        "false, 0 or no leaves the events out")],
            operationId="taskStatus")},
        "/chat/{task_id}/stream": {"get": op(
            "Follow a task's events as server-sent events",
            {200: {"description": SSE_DESCRIPTION,
                   "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            (400, 404, 503),
            parameters=[task_id,
                        _param("Last-Event-ID", "header", seq, "resume after this event seq"),
                        _param("last_event_id", "query", seq, "resume after this event seq"),
                        _param("after", "query", seq, "the same as last_event_id")],
            operationId="taskStream")},
        "/chat/{task_id}/stop": {"post": op(
            "Stop a task: its processes are gone when this answers",
            {200: _ok(_ref("StopResult"), "Stopped, or already finished (stopped: false).")},
            (404, 503), parameters=[task_id], operationId="stopTask")},
        "/chat/{task_id}/approve": {"post": op(
            "Answer a tool approval the task is waiting for",
            {200: _ok(_ref("ApprovalResult"), "The decision was recorded.")},
            (400, 404, 409, 413, 415, 503), parameters=[task_id], requestBody=approve_body,
            operationId="approveTool")},
        "/tasks": {"get": op(
            "List tasks, newest first",
            {200: _ok(_ref("TaskList"), "A page of tasks.")}, (400, 503),
            parameters=[_param("status", "query", STATUS, "only tasks in this status"),
                        _param("session_id", "query", STR, "only this session's tasks"),
                        limit,
                        _param("cursor", "query", seq, "next_cursor of the previous page")],
            operationId="listTasks")},
        "/tasks/{task_id}": {"delete": op(
            "Delete a task and its events (stopping it first)",
            {200: _ok(_ref("TaskDeleted"), "Deleted.")}, (404, 503), parameters=[task_id],
            operationId="deleteTask")},
        "/sessions": {"get": op(
            "List sessions, most recently active first",
            {200: _ok(_ref("SessionList"), "Sessions.")}, (400, 503),
            parameters=[limit, _param("cursor", "query", STR, "next_cursor of the previous page")],
            operationId="listSessions")},
        "/sessions/{session_id}": {
            "get": op("A session and its tasks", {200: _ok(_ref("SessionDetail"), "The session.")},
                      (404, 503), parameters=[session_id], operationId="showSession"),
            "delete": op("Delete a session with its tasks (stopping them first)",
                         {200: _ok(_ref("SessionDeleted"), "Deleted.")}, (404, 503),
                         parameters=[session_id], operationId="deleteSession")},
        # Workspaces (scout/workspace_api.py).
        "/sessions/{session_id}/changes": {"get": op(
            "What the session changed in its worktree, against base_commit",
            {200: {"description": "The changed files as JSON, or with ?format=patch (or Accept: "
                                  "text/x-diff) the unified diff.",
                   "content": {"application/json": {"schema": _ref("Changes")},
                               "text/x-diff": {"schema": STR}}}},
            (400, 404, 409, 503),
            parameters=[session_id, _param("format", "query", {"type": "string", "enum": ["json", "patch"]},
                                           "patch: the unified diff")],
            operationId="sessionChanges")},
        "/sessions/{session_id}/merge": {"post": op(
            "Commit the worktree's changes to its branch and merge that into the checkout's branch",
            {200: _ok(_ref("MergeResult"), "Merged; the user's branch and checkout have the changes.")},
            (400, 404, 409, 413, 415, 503), parameters=[session_id],
            requestBody={"required": False, "content": {"application/json": {"schema": _ref("MergeRequest")}}},
            operationId="mergeSession")},
        "/sessions/{session_id}/discard": {"post": op(
            "Remove the session's worktree and branch (the next message makes a fresh one)",
            {200: _ok(_ref("DiscardResult"), "Discarded.")}, (404, 409, 503), parameters=[session_id],
            operationId="discardSession")},
        "/modes": {"get": op(
            "The modes a task can run in", {200: _ok(_ref("ModeList"), "The modes.")}, (),
            operationId="listModes")},
        "/config": {"get": op(
            "Where tasks may run, and the defaults a client can show",
            {200: _ok(_ref("Config"), "The settings a client needs.")}, (),
            operationId="showConfig")},
        "/nodes": {"get": op(
            "The nodes (servers) on this log, with their lease, running count and version",
            {200: _ok(_ref("NodeList"), "The nodes; one on SQLite.")}, (503,), operationId="listNodes")},
        "/health": {"get": op(
            "Liveness and state (public)",
            {200: _ok(_ref("Health"), "Healthy or degraded."),
             503: _ok(_ref("Health"), "The database is unusable.")}, (), public=True,
            operationId="health")},
        # Operations (scout/ops.py).
        "/chat/{task_id}/logs": {"get": op(
            "The task's worker log (Claude Code's stderr), as plain text",
            {200: {"description": "The log.", "content": {"text/plain": {"schema": STR}}}},
            (400, 404, 503),
            parameters=[task_id, _param("tail", "query", {"type": "integer", "minimum": 1, "maximum": 2**40},
                                        "only the last N bytes")],
            operationId="taskLogs")},
        "/chat/{task_id}/transcript": {"get": op(
            "The task as a Markdown transcript",
            {200: {"description": "Markdown.", "content": {"text/markdown": {"schema": STR}}}},
            (404, 503), parameters=[task_id], operationId="taskTranscript")},
        "/sessions/{session_id}/transcript": {"get": op(
            "The session's tasks as one Markdown transcript",
            {200: {"description": "Markdown.", "content": {"text/markdown": {"schema": STR}}}},
            (404, 503), parameters=[session_id], operationId="sessionTranscript")},
        "/admin/prune": {"post": op(
            "Delete finished tasks older than N days now (default SCOUT_RETENTION_DAYS)",
            {200: _ok(_ref("PruneResult"), "What was deleted.")}, (400, 413, 415, 503),
            requestBody={"required": False, "content": {"application/json": {"schema": _ref("PruneRequest")}}},
            operationId="prune")},
        "/metrics": {"get": op(
            "Prometheus metrics",
            {200: {"description": "Prometheus text exposition format.",
                   "content": {"text/plain": {"schema": STR}}}}, (), operationId="metrics")},
        "/openapi.json": {"get": op(
            "This document (public)", {200: _ok({"type": "object"}, "The OpenAPI document.")}, (),
            public=True, operationId="openapi")},
    }
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Scout", "version": __version__,
                 "description": "Runs Claude Code tasks in the background; follow them over HTTP "
                                "and SSE. Every error is a JSON body {\"error\": {\"code\", "
                                "\"message\"}}. See docs/api-brief.md."},
        "paths": paths,
        "components": {"schemas": schemas(modes, max_message_bytes),
                       "securitySchemes": {"bearerAuth": {
                           "type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer <SCOUT_API_TOKEN>; needed on every "
                                          "endpoint but /health and /openapi.json when the token is set"}}},
    }
    if auth:
        spec["security"] = [{"bearerAuth": []}]
    return spec
