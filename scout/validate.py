"""Request validation: turns untrusted JSON into checked values or a precise ApiError.

Pure functions with no Flask or database in them, so they can be tested on their own.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

# \Z, not $: "$" also matches before a trailing newline, which would let "id\n" through.
SESSION_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
NODE_ID = SESSION_ID  # SCOUT_NODE_ID and the `node` field: the same characters
TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.:*()\-/ ]{1,200}\Z")
MODEL_NAME = re.compile(r"^[A-Za-z0-9._:\[\]/-]{1,100}\Z")
INTEGER = re.compile(r"^-?[0-9]{1,20}\Z")
ON_BUSY = ("queue", "reject", "interrupt")
MAX_REASON_CHARS = 10_000


class ApiError(Exception):
    """An error with an HTTP status, a stable code and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 details: dict[str, Any] | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.details = details or {}  # more fields of the error object (e.g. a conflict's paths)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


CHAT_FIELDS = {
    "message": str, "session_id": str, "mode": str, "cwd": str, "append_system_prompt": str,
    "on_busy": str, "model": str, "max_turns": int, "allowed_tools": list, "disallowed_tools": list,
    "max_budget_usd": float, "stream_deltas": bool, "webhook_url": str, "workspace": str, "base": str, "node": str,
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
            try:
                ok, value = True, float(value)
            except OverflowError:
                raise ApiError(400, "invalid_field", f"'{name}' is out of range") from None
        if not ok:
            raise ApiError(400, "invalid_field", f"'{name}' must be {_type_name(want)}")
        if not _is_unicode(value):
            raise ApiError(400, "invalid_field", f"'{name}' is not valid Unicode (lone surrogate)")
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
    if "node" in req and not NODE_ID.match(req["node"]):
        raise ApiError(400, "invalid_field", "'node' must be 1-128 letters, digits, '.', '_' or '-'")
    if "model" in req and not MODEL_NAME.match(req["model"]):
        raise ApiError(400, "invalid_field", "'model' is not a valid model name")
    for name in ("append_system_prompt", "cwd", "mode", "workspace", "base"):
        if name in req and (len(req[name]) > max_message_bytes or "\x00" in req[name]):
            raise ApiError(400, "invalid_field", f"'{name}' is too long or contains NUL")
    if "webhook_url" in req:
        problem = webhook_url_problem(req["webhook_url"], None)
        if problem:
            raise ApiError(400, "invalid_field", f"'webhook_url': {problem}")
    return req


def webhook_url_problem(url: str, allowed_hosts: list[str] | None) -> str | None:
    """What is wrong with a webhook URL, or None: an http(s) URL without credentials whose
    host is one of allowed_hosts (compared as written, without DNS; None skips that check)."""
    from urllib.parse import urlsplit

    if len(url) > 2000 or any(c in url for c in "\x00\r\n\t ") or not url.isprintable():
        return "must be a URL of at most 2000 characters without spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.username is not None or parts.password is not None:
        return "must not contain a user name or password"
    if allowed_hosts is not None and parts.hostname.lower() not in allowed_hosts:
        return (f"host {parts.hostname!r} is not allowed; allowed hosts (SCOUT_WEBHOOK_HOSTS): "
                f"{', '.join(allowed_hosts) or 'none'}")
    return None


def check_webhook_url(url: str, allowed_hosts: list[str]) -> str:
    """A webhook URL checked against the allow-list, or a 400 ApiError that says why."""
    problem = webhook_url_problem(url, allowed_hosts)
    if problem:
        code = "webhook_not_allowed" if "not allowed" in problem else "invalid_field"
        raise ApiError(400, code, f"'webhook_url': {problem}")
    return url


def check_cwd(cwd: str, allowed_roots: list[str]) -> str:
    """Resolve cwd (symlinks and '..' included) and require an existing directory inside a root.

    Containment is decided on the resolved path before anything is said about what exists,
    so the answers do not tell a client which paths exist outside the roots.
    """
    if not isinstance(cwd, str) or not cwd:
        raise ApiError(400, "invalid_cwd", "cwd must be a non-empty string")
    if "\x00" in cwd or not _is_unicode(cwd):
        raise ApiError(400, "invalid_cwd", "cwd must not contain NUL characters or lone surrogates")
    if not os.path.isabs(cwd):
        raise ApiError(400, "invalid_cwd", f"cwd must be an absolute path: {cwd!r}")
    try:
        real = os.path.realpath(cwd)
    except (OSError, ValueError) as exc:
        raise ApiError(400, "invalid_cwd", f"cwd cannot be resolved: {exc}") from None
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in allowed_roots):
        raise ApiError(403, "cwd_not_allowed",
                       f"cwd {cwd} (resolved: {real}) is outside the allowed roots (SCOUT_ALLOWED_ROOTS)")
    if not os.path.exists(real):
        raise ApiError(400, "invalid_cwd", f"cwd does not exist: {cwd}")
    if not os.path.isdir(real):
        raise ApiError(400, "invalid_cwd", f"cwd is not a directory: {cwd}")
    return real


def check_task_id(task_id: str) -> str:
    if not TASK_ID.match(task_id):
        raise ApiError(404, "not_found", f"no task {task_id!r}: task ids are UUIDs")
    return task_id


def check_approval(body: Any) -> dict[str, Any]:
    req = check_object(body, {"decision": str, "reason": str, "tool_use_id": str}, ("decision",))
    if req["decision"] not in ("allow", "deny"):
        raise ApiError(400, "invalid_field", "'decision' must be 'allow' or 'deny'")
    if len(req.get("reason") or "") > MAX_REASON_CHARS:
        raise ApiError(400, "invalid_field", f"'reason' must be at most {MAX_REASON_CHARS} characters")
    if "tool_use_id" in req and not 1 <= len(req["tool_use_id"]) <= 256:
        raise ApiError(400, "invalid_field", "'tool_use_id' must be 1-256 characters")
    return req


def int_arg(value: str | None, name: str, default: int | None, low: int, high: int) -> int | None:
    """A query-string integer within [low, high]."""
    if value is None or value == "":
        return default
    if not INTEGER.match(value):  # int() alone would also take " 5", "5_0" and other digits
        raise ApiError(400, "invalid_parameter", f"'{name}' must be a whole number")
    n = int(value)
    if not low <= n <= high:
        raise ApiError(400, "invalid_parameter", f"'{name}' must be between {low} and {high}")
    return n


def _is_unicode(value: Any) -> bool:
    """False for a string (or a list holding one) with a lone surrogate: JSON can spell one
    ("\\ud800") but it cannot be stored as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list):
        return all(_is_unicode(v) for v in value)
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(raw: bytes) -> Any:
    """Parse a request body as strict JSON (UTF-8; no NaN or Infinity), or raise a 400."""
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {str(exc)[:200]}") from None


def body_limit(max_message_bytes: int) -> int:
    """The largest request body read at all (Flask's MAX_CONTENT_LENGTH): room for a message of
    max_message_bytes with every character escaped, plus the other fields; past it, 413."""
    return 16 * max_message_bytes + 1024 * 1024


def session_cursor(raw: str | None) -> tuple[float, str] | None:
    """``GET /sessions?cursor=``: the ``next_cursor`` of the previous page, ``<last_activity>_<session_id>``."""
    if raw is None or raw == "":
        return None
    when, _, session_id = raw.partition("_")
    try:
        value = float(when)
    except ValueError:
        value = float("nan")
    if value != value or value in (float("inf"), float("-inf")) or not SESSION_ID.match(session_id):
        raise ApiError(400, "invalid_parameter", f"cursor must be a next_cursor from GET /sessions, not {raw[:80]!r}")
    return value, session_id
