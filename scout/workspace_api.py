"""The HTTP side of workspaces (server process): which workspace a POST /chat gets, the
session routes GET /sessions/{id}/changes, POST /sessions/{id}/merge and /discard, and the
clean-up of worktrees whose session is gone (DELETE /sessions/{id}, retention, start-up).

The git work itself is in scout/workspace.py; this module decides when it may run (a
session busy with a task is refused) and keeps the session's record in the store in step.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, request

from . import workspace as wsm
from .documents import session_or_404
from .modes import Mode
from .state import scout
from .store import EventLog, Session
from .validate import ApiError, check_object, load_json
from .vocab import UNFINISHED
from .workspace import AUTO, SHARED, WORKTREE, Workspace, WorkspaceError

log = logging.getLogger("scout.workspace")
bp = Blueprint("workspace", __name__)
PATCH_TYPE = "text/x-diff"


def choose(req: dict[str, Any], cwd: str, mode: Mode, session: Session | None, session_id: str | None,
           root: str) -> Workspace:
    """The workspace of a new task. A session's first task decides (the request's
    `workspace`, else the mode's); later ones keep it: asking for another kind, or a cwd in
    another repository, is a 409 workspace_mismatch. After a discard the next task plans a
    fresh worktree; one whose folder was deleted by hand is a 409 workspace_missing."""
    asked = req.get("workspace")
    if asked is not None and asked not in wsm.KINDS:
        raise ApiError(400, "invalid_field", f"'workspace' must be one of: {', '.join(wsm.KINDS)}")
    base = req.get("base")
    if base is not None and asked == SHARED:
        raise ApiError(400, "invalid_field", "'base' names where a worktree starts; workspace 'shared' has none")
    if session is None:
        kind = asked or mode.workspace
        if kind == AUTO:
            kind = WORKTREE if wsm.probe(cwd) is not None else SHARED
        if kind == SHARED:
            if base is not None:
                raise ApiError(400, "invalid_field", f"'base' needs a worktree, and {cwd} is not in a git work tree")
            return Workspace()
        return wsm.plan(cwd, session_id or "", root, base)  # session_id is set by the caller
    current = Workspace.from_dict(session.workspace)
    if asked in (SHARED, WORKTREE) and asked != current.kind:
        raise WorkspaceError(409, "workspace_mismatch", f"session {session.id} runs in workspace "
                             f"'{current.kind}', fixed by its first task; this message asks for '{asked}'")
    if current.kind == SHARED:
        if base is not None:
            raise WorkspaceError(409, "workspace_mismatch", f"session {session.id} has no worktree ('shared'); "
                                 "'base' cannot apply")
        return current
    if not wsm.contains(current, cwd):
        raise WorkspaceError(409, "workspace_mismatch", f"cwd {cwd} is outside {current.repo}, the repository "
                             f"of session {session.id}'s worktree")
    if current.base_commit is None:  # discarded: a fresh worktree, from where the checkout is now
        return wsm.plan(current.repo or cwd, session.id, root, base)
    if base is not None:
        raise WorkspaceError(409, "workspace_mismatch", f"session {session.id}'s worktree already exists "
                             f"(from {current.base_commit[:12]}); 'base' applies to a new one only")
    problem = wsm.missing_problem(current)
    if problem is not None:
        raise problem
    return current


def remove_for_session(store: EventLog, session: Session, root: str) -> None:
    """Remove a session's worktree and branch (DELETE /sessions/{id}); failures are logged,
    and the start-up prune takes what is left."""
    ws = Workspace.from_dict(session.workspace)
    if ws.kind != WORKTREE or not ws.path:
        return
    try:
        wsm.discard(ws, root)
    except WorkspaceError as exc:
        log.warning("could not remove the worktree of session %s: %s", session.id, exc.message)


def prune(store: EventLog, root: str) -> list[str]:
    """Remove worktrees (and their scout/ branches) whose session is gone."""
    try:
        keep = {str(w["path"]) for w in store.session_workspaces().values() if w.get("path")}
        removed = wsm.prune_orphans(root, keep)
    except Exception:  # noqa: BLE001 - a failed clean-up must not keep Scout from starting
        log.exception("pruning worktrees failed")
        return []
    for path in removed:
        log.info("removed the worktree %s: its session is gone", path)
    return removed


# -- routes ------------------------------------------------------------------------------

def _session(session_id: str) -> tuple[Session, Workspace]:
    session = session_or_404(scout().store, session_id)
    return session, Workspace.from_dict(session.workspace)


def _idle(store: EventLog, session: Session) -> None:
    busy = [t for t in store.session_tasks(session.id) if t.status in UNFINISHED]
    if busy:
        raise ApiError(409, "session_busy", f"session {session.id} has a task {busy[0].status} "
                       f"({busy[0].id}); wait for it to end, or stop it")


@bp.get("/sessions/<session_id>/changes")
def changes(session_id: str):
    _, ws = _session(session_id)
    wants_patch = request.args.get("format") == "patch" or (
        request.args.get("format") is None
        and request.accept_mimetypes.best_match([PATCH_TYPE, "application/json"]) == PATCH_TYPE
        and request.accept_mimetypes[PATCH_TYPE] > request.accept_mimetypes["application/json"])
    if request.args.get("format") not in (None, "json", "patch"):
        raise ApiError(400, "invalid_parameter", "'format' must be 'json' or 'patch'")
    if wants_patch:
        return Response(wsm.session_patch(ws), mimetype=PATCH_TYPE)
    out = wsm.session_changes(ws).to_dict()
    return {"session_id": session_id, "workspace": ws.public(), **out}


@bp.post("/sessions/<session_id>/merge")
def merge(session_id: str):
    s = scout()
    session, ws = _session(session_id)
    body: Any = {}
    if request.get_data(cache=True):
        if not request.is_json:
            raise ApiError(415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)")
        body = load_json(request.get_data(cache=True))
    req = check_object(body, {"message": str, "squash": bool}, ())
    if "message" in req and (not req["message"].strip() or "\x00" in req["message"] or len(req["message"]) > 10_000):
        raise ApiError(400, "invalid_field", "'message' must be 1-10000 characters, not blank, without NUL")
    _idle(s.store, session)
    result = wsm.merge(ws, s.settings.worktrees, session.id, req.get("message"), bool(req.get("squash")))
    ws.base_commit = result.base_commit  # later changes count from what was merged
    s.store.set_session_workspace(session.id, ws.to_dict())
    return {"session_id": session.id, **result.to_dict(), "target_branch": ws.public()["target_branch"]}


@bp.post("/sessions/<session_id>/discard")
def discard(session_id: str):
    s = scout()
    session, ws = _session(session_id)
    _idle(s.store, session)
    if ws.kind != WORKTREE:
        raise WorkspaceError(409, "no_worktree", f"session {session.id} runs in its cwd (workspace 'shared')")
    s.supervisor.end_session(session.id)  # its warm Claude Code runs in the worktree that goes
    removed = wsm.discard(ws, s.settings.worktrees) if ws.path else False
    ws.base_commit = None  # the next message makes a fresh worktree
    s.store.set_session_workspace(session.id, ws.to_dict())
    return {"session_id": session.id, "discarded": True, "removed": removed}
