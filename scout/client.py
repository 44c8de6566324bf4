"""A small HTTP client for Scout's API (requests + Server-Sent Events).

Used by the web UI and meant for any other Python client (the `scout` command line
included). Every method returns the decoded JSON document the API answers with
(see docs/api-brief.md); every failure is a :class:`ScoutAPIError`:

* the API's own errors carry its stable ``code`` and its ``message`` for people,
  plus the HTTP ``status``;
* a server that cannot be reached raises :class:`ScoutUnreachable` (a subclass,
  ``code == "unreachable"``, ``status is None``) whose message names the URL.

    >>> client = ScoutClient("http://127.0.0.1:8000", token=None)
    >>> task = client.post_chat("What does this repo do?", cwd="/srv/repo")
    >>> for event in client.stream(task["task_id"]):
    ...     if event.type == "text_delta":
    ...         print(event.payload["text"], end="")

The client holds no state besides its connection pool; one instance may be
shared between threads (each :meth:`stream` opens a connection of its own).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterator, cast

import requests
import requests.adapters

from .vocab import END, TERMINAL

__all__ = ["ScoutAPIError", "ScoutUnreachable", "SSEEvent", "ScoutClient", "DEFAULT_URL", "TERMINAL"]

DEFAULT_URL = "http://127.0.0.1:8000"


class ScoutAPIError(Exception):
    """The API answered with an error, or could not be asked.

    Attributes:
        status: the HTTP status (None when no answer came back).
        code: the API's stable error code (``invalid_cwd``, ``not_found``, ...), or
            ``unreachable`` / ``timeout`` / ``http_<status>`` / ``bad_response``.
        message: a sentence for people; also ``str(error)``.
    """

    def __init__(self, message: str, code: str = "error", status: int | None = None,
                 body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.body = body

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class ScoutUnreachable(ScoutAPIError):
    """No answer from the server: it is down, the address is wrong, or it timed out."""

    def __init__(self, url: str, reason: str, code: str = "unreachable") -> None:
        super().__init__(f"Scout API server unreachable at {url}: {reason}", code=code)
        self.url = url
        self.reason = reason


@dataclass
class SSEEvent:
    """One Server-Sent Event of ``GET /chat/{id}/stream``.

    ``type`` is the ``event:`` field (``status``, ``text_delta``, ``tool_use``, ...,
    and finally ``end``); ``data`` the decoded ``data:`` JSON. For log events
    ``data`` is ``{task_id, seq, type, time, payload}`` and ``id`` equals ``seq``;
    the closing ``end`` event has no id and ``data == {task_id, status}``.
    """

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    @property
    def payload(self) -> dict[str, Any]:
        """The event's payload (``{}`` for ``end``)."""
        value = self.data.get("payload")
        return value if isinstance(value, dict) else {}

    @property
    def seq(self) -> int | None:
        """The event's sequence number in the task's log (None for ``end``)."""
        return self.id

    @property
    def time(self) -> float | None:
        """When the event was logged (Unix time), if known."""
        value = self.data.get("time")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def is_end(self) -> bool:
        return self.type == END


def _reason(exc: BaseException) -> str:
    """A short, readable cause for a connection failure (no nested repr soup)."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "Connection reset", "Remote end closed connection", "No route to host"):
        if marker in text:
            return marker.lower() if marker != "Connection refused" else "connection refused"
    return type(exc).__name__ if not text or len(text) > 200 else text


class ScoutClient:
    """Typed access to every endpoint of the Scout API.

    Args:
        base_url: where the API listens (``SCOUT_API_URL``; default http://127.0.0.1:8000).
        token: the bearer token (``SCOUT_API_TOKEN``), when the server requires one.
        timeout: seconds to wait for an ordinary answer.
        stream_timeout: seconds of silence after which a stream is considered broken
            (the server sends a keep-alive every 15 s, so keep this above that).
    """

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30.0,
                 stream_timeout: float = 45.0) -> None:
        self.base_url = (base_url or DEFAULT_URL).rstrip("/")
        self.token = token or None
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._http = requests.Session()
        # Many UI tabs (threads) share one client: keep enough connections to reuse.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
        self._http.mount("http://", adapter)
        self._http.mount("https://", adapter)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **kwargs: Any) -> "ScoutClient":
        """A client configured from ``SCOUT_API_URL`` and ``SCOUT_API_TOKEN``."""
        env = dict(os.environ if env is None else env)
        return cls(env.get("SCOUT_API_URL") or DEFAULT_URL, env.get("SCOUT_API_TOKEN") or None, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ScoutClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        """Headers every request carries (the bearer token, when there is one)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def request(self, method: str, path: str, *, json_body: Any = None,
                params: dict[str, Any] | None = None, ok: tuple[int, ...] = (),
                timeout: float | None = None, text: bool = False) -> Any:
        """Send one request and return the decoded JSON body (with ``text``, the body as text).

        Statuses below 400, and those listed in ``ok``, are answers; anything else
        raises :class:`ScoutAPIError` with the API's code and message.
        """
        url = self.base_url + path
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            resp = self._http.request(method, url, json=json_body, params=clean or None,
                                      headers=self.headers(), timeout=timeout or self.timeout)
        except requests.Timeout as exc:
            raise ScoutUnreachable(self.base_url, f"no answer within {timeout or self.timeout:g} s",
                                   code="timeout") from exc
        except requests.RequestException as exc:
            raise ScoutUnreachable(self.base_url, _reason(exc)) from exc
        if resp.status_code >= 400 and resp.status_code not in ok:
            raise self._error(resp)
        if text:
            resp.encoding = resp.encoding or "utf-8"
            return resp.text
        try:
            return resp.json()
        except ValueError as exc:
            raise ScoutAPIError(f"the server at {self.base_url} did not answer with JSON "
                                f"(HTTP {resp.status_code} for {method} {path})",
                                code="bad_response", status=resp.status_code) from exc

    @staticmethod
    def _error(resp: requests.Response) -> ScoutAPIError:
        try:
            body = resp.json()
        except ValueError:
            body = None
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return ScoutAPIError(str(err["message"]), code=str(err.get("code") or f"http_{resp.status_code}"),
                                 status=resp.status_code, body=body)
        text = (resp.text or resp.reason or "").strip()
        return ScoutAPIError(f"HTTP {resp.status_code}: {text[:300] or 'no details'}",
                             code=f"http_{resp.status_code}", status=resp.status_code, body=body)

    # -- tasks ------------------------------------------------------------------------

    def post_chat(self, message: str, *, session_id: str | None = None, mode: str | None = None,
                  cwd: str | None = None, append_system_prompt: str | None = None,
                  on_busy: str | None = None, **options: Any) -> dict[str, Any]:
        """``POST /chat``: start a task; returns ``{task_id, status, session_id}``.

        Fields left as None are not sent (the server's defaults apply). Further
        API fields (``model``, ``max_turns``, ``allowed_tools``, ``disallowed_tools``,
        ``max_budget_usd``, ``stream_deltas``) go through ``options``.
        """
        body: dict[str, Any] = {"message": message, "session_id": session_id, "mode": mode, "cwd": cwd,
                                "append_system_prompt": append_system_prompt, "on_busy": on_busy, **options}
        return self.request("POST", "/chat", json_body={k: v for k, v in body.items() if v is not None})

    def status(self, task_id: str, events: bool = True) -> dict[str, Any]:
        """``GET /chat/{id}/status``: the task, its result and (unless events=False) its event log."""
        return self.request("GET", f"/chat/{task_id}/status", params=None if events else {"events": "false"})

    def stop(self, task_id: str) -> dict[str, Any]:
        """``POST /chat/{id}/stop``: cancel a task; returns ``{task_id, status, stopped}``."""
        return self.request("POST", f"/chat/{task_id}/stop", timeout=max(self.timeout, 60.0))

    def approve(self, task_id: str, decision: str, reason: str | None = None,
                tool_use_id: str | None = None) -> dict[str, Any]:
        """``POST /chat/{id}/approve``: answer a tool approval ("allow" or "deny")."""
        body = {"decision": decision, "reason": reason, "tool_use_id": tool_use_id}
        return self.request("POST", f"/chat/{task_id}/approve",
                            json_body={k: v for k, v in body.items() if v is not None})

    def tasks(self, status: str | None = None, session_id: str | None = None, limit: int | None = None,
              cursor: int | None = None) -> dict[str, Any]:
        """``GET /tasks``: ``{tasks: [...], next_cursor}``, newest first."""
        return self.request("GET", "/tasks", params={"status": status, "session_id": session_id,
                                                     "limit": limit, "cursor": cursor})

    def delete_task(self, task_id: str) -> dict[str, Any]:
        """``DELETE /tasks/{id}`` (stops it first if it runs)."""
        return self.request("DELETE", f"/tasks/{task_id}", timeout=max(self.timeout, 60.0))

    # -- sessions, modes, health ------------------------------------------------------

    def sessions(self, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """``GET /sessions``: ``{sessions: [...], next_cursor}``, most recent activity first."""
        return self.request("GET", "/sessions", params={"limit": limit, "cursor": cursor})

    def session(self, session_id: str) -> dict[str, Any]:
        """``GET /sessions/{id}``: the session and its tasks, oldest first."""
        return self.request("GET", f"/sessions/{session_id}")

    def delete_session(self, session_id: str) -> dict[str, Any]:
        """``DELETE /sessions/{id}``."""
        return self.request("DELETE", f"/sessions/{session_id}", timeout=max(self.timeout, 60.0))

    def changes(self, session_id: str) -> dict[str, Any]:
        """``GET /sessions/{id}/changes``: ``{files: [{path, status, additions, deletions, binary}],
        additions, deletions, workspace}``, what the session changed in its worktree."""
        return self.request("GET", f"/sessions/{session_id}/changes", timeout=max(self.timeout, 120.0))

    def patch(self, session_id: str) -> str:
        """``GET /sessions/{id}/changes?format=patch``: the session's changes as a unified diff."""
        return self.request("GET", f"/sessions/{session_id}/changes", params={"format": "patch"},
                            timeout=max(self.timeout, 120.0), text=True)

    def merge(self, session_id: str, message: str | None = None, squash: bool = False) -> dict[str, Any]:
        """``POST /sessions/{id}/merge``: ``{merged, commit, files}``; a conflict raises
        ScoutAPIError with code ``merge_conflict`` (its ``body`` names the paths)."""
        body: dict[str, Any] = {"message": message, "squash": squash or None}
        return self.request("POST", f"/sessions/{session_id}/merge", timeout=max(self.timeout, 300.0),
                            json_body={k: v for k, v in body.items() if v is not None})

    def discard(self, session_id: str) -> dict[str, Any]:
        """``POST /sessions/{id}/discard``: remove the session's worktree and its branch."""
        return self.request("POST", f"/sessions/{session_id}/discard", timeout=max(self.timeout, 120.0))

    def prune(self, older_than_days: float | None = None) -> dict[str, Any]:
        """``POST /admin/prune``: run retention now; ``{deleted_tasks, deleted_events, freed_bytes, ...}``."""
        body = {} if older_than_days is None else {"older_than_days": older_than_days}
        return self.request("POST", "/admin/prune", json_body=body, timeout=max(self.timeout, 300.0))

    def config(self) -> dict[str, Any]:
        """``GET /config``: ``{default_cwd, allowed_roots, default_mode, max_message_bytes}``."""
        return self.request("GET", "/config")

    def modes(self) -> dict[str, Any]:
        """``GET /modes``: ``{default, modes: [{name, description, ...}]}``."""
        return self.request("GET", "/modes")

    def health(self) -> dict[str, Any]:
        """``GET /health``; a degraded server (503) still answers with its document."""
        return self.request("GET", "/health", ok=(503,))

    # -- streaming --------------------------------------------------------------------

    def stream(self, task_id: str, last_event_id: int | None = None, *, reconnect: int = 3,
               reconnect_delay: float = 1.0,
               until: Callable[[], bool] | None = None) -> Generator[SSEEvent, None, None]:
        """``GET /chat/{id}/stream``: the task's events as they are logged, then ``end``.

        Starts after ``last_event_id`` (0 or None replays the whole log). If the
        connection breaks before ``end``, it is opened again from the last event
        seen, up to ``reconnect`` times in a row, ``reconnect_delay`` seconds
        more apart each time (a restarting server is back within that). After
        that, when the first connection already fails, or when the API answers
        with an error, :class:`ScoutAPIError` is raised. The iterator ends after
        yielding the ``end`` event.

        ``until``, if given, is asked on every line the server sends (its
        keep-alive comments included, every 15 s while a task is quiet): once it
        answers true, the stream is closed and the iterator ends without ``end``.
        That is how a reader that has lost interest lets go of a quiet task.
        """
        last = last_event_id or 0
        failures = 0
        connected = False
        while True:
            if until is not None and until():
                return
            try:
                for event in self._stream_once(task_id, last, until):
                    failures, connected = 0, True
                    if event.id is not None:
                        last = event.id
                    yield event
                    if event.is_end:
                        return
                if until is not None and until():
                    return
                # The server closed the stream without an `end`: go round again.
                raise ScoutUnreachable(self.base_url, "the event stream closed early")
            except ScoutUnreachable:
                failures += 1
                if failures > reconnect or not connected:
                    raise  # gone too long, or never there
                time.sleep(reconnect_delay * failures)

    def _stream_once(self, task_id: str, after: int,
                     until: Callable[[], bool] | None = None) -> Iterator[SSEEvent]:
        headers = {**self.headers(), "Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = str(after)
        url = f"{self.base_url}/chat/{task_id}/stream"
        # A connection of its own: a stream holds it for as long as the task runs, and the
        # shared pool stays free for ordinary calls (from other threads too).
        with requests.Session() as http:
            try:
                resp = http.get(url, headers=headers, stream=True, timeout=(self.timeout, self.stream_timeout))
            except requests.RequestException as exc:
                raise ScoutUnreachable(self.base_url, _reason(exc)) from exc
            with resp:
                if resp.status_code >= 400:
                    raise self._error(resp)
                lines = cast(Iterator[str], resp.iter_lines(decode_unicode=True))  # str: decode_unicode
                if until is not None:
                    lines = _lines_until(lines, until)
                try:
                    yield from parse_sse(lines)
                except (requests.RequestException, ConnectionError) as exc:
                    raise ScoutUnreachable(self.base_url, _reason(exc)) from exc


def _lines_until(lines: Iterator[str], until: Callable[[], bool]) -> Iterator[str]:
    for line in lines:
        if until():
            return
        yield line


def parse_sse(lines: Iterator[str | bytes]) -> Iterator[SSEEvent]:
    """Parse Server-Sent Event lines into :class:`SSEEvent` (comments and ``retry:`` skipped)."""
    fields: dict[str, str] = {}
    for raw in lines:
        if raw is None:
            continue
        line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if line == "":
            if "data" in fields or "event" in fields:
                yield _make_event(fields)
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data" and "data" in fields:
            fields["data"] += "\n" + value
        elif name in ("data", "event", "id"):
            fields[name] = value
    if "data" in fields or "event" in fields:
        yield _make_event(fields)


def _make_event(fields: dict[str, str]) -> SSEEvent:
    try:
        data = json.loads(fields.get("data") or "{}")
    except ValueError:
        data = {"raw": fields.get("data")}
    if not isinstance(data, dict):
        data = {"value": data}
    raw_id = fields.get("id")
    try:
        event_id = int(raw_id) if raw_id not in (None, "") else None
    except ValueError:
        event_id = None
    return SSEEvent(type=fields.get("event") or str(data.get("type") or "message"), data=data, id=event_id)
