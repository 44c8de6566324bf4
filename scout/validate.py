"""Request validation: turns untrusted JSON into checked values or a precise ApiError.

Pure functions with no Flask or database in them, so they can be tested on their own.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

SESSION_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.:*()\-/ ]{1,200}$")
ON_BUSY = ("queue", "reject", "interrupt")


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


CHAT_FIELDS = {
    "message": str, "session_id": str, "mode": str, "cwd": str, "append_system_prompt": str,
    "on_busy": str, "model": str, "max_turns": int, "allowed_tools": list, "disallowed_tools": list,
    "max_budget_usd": float, "stream_deltas": bool,
}


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "a list"}[t]


def check_object(body: Any, fields: dict[str, type], required: tuple[str, ...]) -> dict[str, Any]:
    """Check a JSON object's field names and types; unknown fields are errors (typos)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the request body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(unknown)}; "
                       f"known: {', '.join(sorted(fields))}")
    for name in required:
        if name not in body or body[name] is None:
            raise ApiError(400, "missing_field", f"'{name}' is required")
    out: dict[str, Any] = {}
    for name, value in body.items():
        if value is None:
            continue
        want = fields[name]
        ok = isinstance(value, want) and not (want in (int, float) and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            ok, value = True, float(value)
        if not ok:
            raise ApiError(400, "invalid_field", f"'{name}' must be {_type_name(want)}")
        out[name] = value
    return out


def check_chat(body: Any, max_message_bytes: int) -> dict[str, Any]:
    """Validate a POST /chat body (everything but cwd, modes and sessions, which need state)."""
    req = check_object(body, CHAT_FIELDS, ("message",))
    message = req["message"]
    if not message.strip():
        raise ApiError(400, "invalid_field", "'message' must not be empty")
    if len(message.encode("utf-8", "surrogatepass")) > max_message_bytes:
        raise ApiError(413, "message_too_large", f"'message' is longer than {max_message_bytes} bytes")
    if "\x00" in message:
        raise ApiError(400, "invalid_field", "'message' must not contain NUL characters")
    if "session_id" in req and not SESSION_ID.match(req["session_id"]):
        raise ApiError(400, "invalid_field",
                       "'session_id' must be 1-128 letters, digits, '.', '_' or '-'")
    if req.get("on_busy", "queue") not in ON_BUSY:
        raise ApiError(400, "invalid_field", f"'on_busy' must be one of: {', '.join(ON_BUSY)}")
    if "max_turns" in req and not 1 <= req["max_turns"] <= 1000:
        raise ApiError(400, "invalid_field", "'max_turns' must be between 1 and 1000")
    if "max_budget_usd" in req and not 0 < req["max_budget_usd"] <= 10_000:
        raise ApiError(400, "invalid_field", "'max_budget_usd' must be above 0 and at most 10000")
    for name in ("allowed_tools", "disallowed_tools"):
        if name in req:
            tools = req[name]
            if len(tools) > 100 or not all(isinstance(t, str) and TOOL_NAME.match(t) for t in tools):
                raise ApiError(400, "invalid_field", f"'{name}' must be a list of tool names")
    if "model" in req and not re.match(r"^[A-Za-z0-9._:\[\]/-]{1,100}$", req["model"]):
        raise ApiError(400, "invalid_field", "'model' is not a valid model name")
    for name in ("append_system_prompt", "cwd", "mode"):
        if name in req and (len(req[name]) > max_message_bytes or "\x00" in req[name]):
            raise ApiError(400, "invalid_field", f"'{name}' is too long or contains NUL")
    return req


def check_cwd(cwd: str, allowed_roots: list[str]) -> str:
    """Resolve cwd (symlinks and '..' included) and require an existing directory inside a root."""
    if not os.path.isabs(cwd):
        raise ApiError(400, "invalid_cwd", f"cwd must be an absolute path: {cwd!r}")
    real = os.path.realpath(cwd)
    if not os.path.exists(real):
        raise ApiError(400, "invalid_cwd", f"cwd does not exist: {cwd}")
    if not os.path.isdir(real):
        raise ApiError(400, "invalid_cwd", f"cwd is not a directory: {cwd}")
    for root in allowed_roots:
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return real
    raise ApiError(403, "cwd_not_allowed",
                   f"cwd {cwd} (resolved: {real}) is outside the allowed roots (SCOUT_ALLOWED_ROOTS)")


def check_task_id(task_id: str) -> str:
    if not TASK_ID.match(task_id):
        raise ApiError(404, "not_found", f"no task {task_id!r}: task ids are UUIDs")
    return task_id


def check_approval(body: Any) -> dict[str, Any]:
    req = check_object(body, {"decision": str, "reason": str, "tool_use_id": str}, ("decision",))
    if req["decision"] not in ("allow", "deny"):
        raise ApiError(400, "invalid_field", "'decision' must be 'allow' or 'deny'")
    return req


def int_arg(value: str | None, name: str, default: int | None, low: int, high: int) -> int | None:
    """A query-string integer within [low, high]."""
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"'{name}' must be a whole number") from None
    if not low <= n <= high:
        raise ApiError(400, "invalid_parameter", f"'{name}' must be between {low} and {high}")
    return n
