"""What the API answers with: task and session documents and SSE frames, and the lookups
that turn an unknown id into a 404.

Pure functions of the store's records. Both route modules (scout/server.py and
scout/ops.py) render through them, so a transcript or a log route says exactly what
GET /chat/{id}/status and GET /sessions/{id} say; this module imports neither.
"""
from __future__ import annotations

import json
from typing import Any

from .store import Event, EventLog, Session, Task
from .validate import SESSION_ID, ApiError, check_task_id
from .vocab import END, TERMINAL, EventType
from .workspace import Workspace


def task_or_404(store: EventLog, task_id: str) -> Task:
    """The task, or ApiError 404 (400 for a malformed id)."""
    check_task_id(task_id)
    task = store.get_task(task_id)
    if task is None:
        raise ApiError(404, "not_found", f"no task {task_id}")
    return task


def session_or_404(store: EventLog, session_id: str) -> Session:
    """The session, or ApiError 404."""
    if not SESSION_ID.match(session_id):
        raise ApiError(404, "not_found", f"no session {session_id!r}")
    session = store.get_session(session_id)
    if session is None:
        raise ApiError(404, "not_found", f"no session {session_id}")
    return session


def session_detail(session: Session, tasks: list[Task]) -> dict[str, Any]:
    """The session document (GET /sessions/{id}): the session and a line per task."""
    return {
        "session_id": session.id, "cwd": session.cwd, "created_at": session.created_at,
        "last_activity": session.updated_at, "claude_session_id": session.claude_session_id,
        "can_continue": session.can_continue, "history_lost": session.history_lost,
        "workspace": Workspace.from_dict(session.workspace).public(),
        "tasks": [{"task_id": t.id, "status": t.status, "message": t.message,
                   "result_text": (t.result or {}).get("text"), "error": t.error,
                   "cost_usd": (t.result or {}).get("total_cost_usd"), "mode": t.options.get("mode"),
                   "created_at": t.created_at, "finished_at": t.finished_at} for t in tasks],
    }


def task_summary(task: Task) -> dict[str, Any]:
    """A task without its events (for lists)."""
    out = {
        "task_id": task.id, "status": task.status, "session_id": task.session_id,
        "message": task.message if len(task.message) <= 200 else task.message[:200] + "…",
        "mode": task.options.get("mode"), "cwd": task.options.get("cwd"),
        "created_at": task.created_at, "started_at": task.started_at,
        "finished_at": task.finished_at, "error": task.error, "cursor": task.num,
    }
    if task.result:
        out["cost_usd"] = task.result.get("total_cost_usd")
    return out


def task_detail(task: Task, events: list[Event] | None) -> dict[str, Any]:
    """The status document: the seed contract's fields plus times, result and options."""
    out: dict[str, Any] = {
        "task_id": task.id, "status": task.status, "error": task.error,
        "session_id": task.session_id, "message": task.message, "mode": task.options.get("mode"),
        "cwd": task.options.get("cwd"), "sandboxed": bool(task.options.get("sandboxed")),
        "created_at": task.created_at,
        "started_at": task.started_at, "finished_at": task.finished_at,
        "worker_pid": task.worker_pid, "result": None, "node": task.node,
        "warm": task.ran_warm,
        "workspace": Workspace.from_dict(task.options.get("workspace")).public(),
    }
    if task.result:
        r = task.result
        out["result"] = {"text": r.get("text"), "duration_ms": r.get("duration_ms"),
                         "num_turns": r.get("num_turns"), "total_cost_usd": r.get("total_cost_usd"),
                         "usage": r.get("usage"), "subtype": r.get("subtype"),
                         "is_error": bool(r.get("is_error"))}
    if events is not None:
        out["events"] = [e.to_dict() for e in events]
    return out


def sse_frame(task_id: str, seq: int, type_: str, at: float, payload: str) -> tuple[int, bytes, str | None]:
    """One logged event as SSE bytes, its stored payload JSON pasted in as it is; plus the
    task's final status when this is the status event that ends it."""
    data = (f'{{"task_id":{json.dumps(task_id)},"seq":{seq},"type":{json.dumps(type_)},'
            f'"time":{at!r},"payload":{payload}}}')
    final = None
    if type_ == EventType.STATUS:
        status = json.loads(payload).get("status")
        final = status if status in TERMINAL else None
    return seq, f"id: {seq}\nevent: {type_}\ndata: {data}\n\n".encode(), final


def sse_end(task_id: str, status: str) -> bytes:
    data = json.dumps({"task_id": task_id, "status": status})
    return f"event: {END}\ndata: {data}\n\n".encode()
