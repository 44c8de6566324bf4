#!/usr/bin/env python3
"""A scripted fake of the Anthropic Messages API for Scout's tests.

The reply to each ``POST /v1/messages`` is chosen from the text of the last
user message (see :func:`plan_reply`):

* a ``tool_result`` block          -> text ``TOOL RESULT: <its text>``
* ``BASH: <command>``              -> tool_use of ``Bash`` with that command
* ``TOOL: <Name> <json>``          -> tool_use of any tool with that JSON input
* ``SLOW: <n> <seconds>``          -> n text deltas ``word{i} ``, one every <seconds>
* ``ERROR: <status>``              -> HTTP error with Anthropic's JSON error body
* ``ECHO-HISTORY``                 -> every user text of the request joined by `` | ``
* anything else                    -> ``ECHO: <the user text>``

Directives may appear anywhere in the text; the leftmost one wins. Side
requests the CLI makes on its own (titles, summaries: no tools) get a short
plain text reply. Only the standard library is used.

Run as a script, ``python tests/model_server.py --port 0`` prints
``READY http://127.0.0.1:PORT`` and serves until killed.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

SYSTEM_REMINDER = "<system-reminder>"
SIDE_REPLY = "Scripted title"

# Anthropic's error type for each HTTP status (anything else is "api_error").
ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "scripted invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "scripted permission error"),
    404: ("not_found_error", "scripted not found"),
    413: ("request_too_large", "scripted request too large"),
    429: ("rate_limit_error", "scripted rate limit"),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}

# Statuses the real API marks retryable (x-should-retry: true).
RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

DIRECTIVE = re.compile(
    r"BASH:[ \t]*(?P<bash>[^\n]*)"
    r"|TOOL:[ \t]*(?P<tool>[A-Za-z_][\w.-]*)[ \t]*"
    r"|SLOW:[ \t]*(?P<slow_n>\d+)[ \t]+(?P<slow_s>\d+(?:\.\d*)?|\.\d+)"
    r"|ERROR:[ \t]*(?P<error>\d{3})"
    r"|(?P<history>ECHO-HISTORY)"
)


@dataclass
class Reply:
    """What to answer one request with: content blocks or an HTTP error."""

    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    delay: float = 0.0  # seconds to sleep before each text delta
    per_word: bool = False  # stream text one word a delta (else 2-3 chunks)
    error_status: int | None = None


# ---------------------------------------------------------------------------
# Reading requests


def block_text(block: Any) -> str:
    """Text of a content block (or plain string), "" for non-text blocks."""
    if isinstance(block, str):
        return block
    if isinstance(block, dict) and block.get("type") == "text":
        return str(block.get("text", ""))
    return ""


def user_text(message: dict[str, Any]) -> str:
    """The user's own text in a message, skipping ``<system-reminder>`` blocks."""
    content = message.get("content", "")
    blocks = [content] if isinstance(content, str) else list(content or [])
    texts = [block_text(b) for b in blocks]
    return "\n".join(t for t in texts if t and not t.lstrip().startswith(SYSTEM_REMINDER))


def tool_result_text(block: dict[str, Any]) -> str:
    """Text content of a ``tool_result`` block."""
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    return "\n".join(t for t in (block_text(b) for b in content or []) if t)


def last_user_message(body: dict[str, Any]) -> dict[str, Any] | None:
    """The last element of ``messages`` whose role is "user"."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def is_side_request(body: dict[str, Any]) -> bool:
    """True for requests outside the main conversation (titles, summaries).

    The main agent loop always sends its tool list; the CLI's own calls
    (e.g. the session title, sent with ``"tools": []`` and the same
    ``max_tokens`` as the main loop) send none.
    """
    return not body.get("tools")


# ---------------------------------------------------------------------------
# Choosing a reply


def text_reply(text: str) -> Reply:
    """A plain text answer ending the turn."""
    return Reply(content=[{"type": "text", "text": text}])


def tool_reply(name: str, tool_input: dict[str, Any]) -> Reply:
    """A single tool call."""
    block = {
        "type": "tool_use",
        "id": f"toolu_{uuid.uuid4().hex[:24]}",
        "name": name,
        "input": tool_input,
    }
    return Reply(content=[block], stop_reason="tool_use")


def schema_instance(schema: dict[str, Any]) -> Any:
    """A minimal value matching a JSON schema (strings are ``SIDE_REPLY``)."""
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: schema_instance(props.get(k, {})) for k in schema.get("required", props)}
    defaults = {"array": [], "integer": 0, "number": 0, "boolean": False, "null": None}
    return defaults.get(str(kind), SIDE_REPLY)


def side_reply(body: dict[str, Any]) -> Reply:
    """Short answer to a side request; JSON when it asks for structured output.

    The CLI's session-title request sets ``output_config.format`` to a JSON
    schema ``{"title": string}`` and parses the reply as JSON.
    """
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return text_reply(json.dumps(schema_instance(fmt["schema"])))
    return text_reply(SIDE_REPLY)


def plan_reply(body: dict[str, Any]) -> Reply:
    """Decide the scripted answer to one Messages API request body."""
    if is_side_request(body):
        return side_reply(body)
    message = last_user_message(body) or {}
    content = message.get("content")
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                return text_reply(f"TOOL RESULT: {tool_result_text(block)}")
    text = user_text(message)
    match = DIRECTIVE.search(text)
    if match is None:
        return text_reply(f"ECHO: {text.strip()}")
    if match["bash"] is not None:
        return tool_reply("Bash", {"command": match["bash"].strip(), "description": "scripted"})
    if match["tool"] is not None:
        try:
            tool_input, _ = json.JSONDecoder().raw_decode(text, match.end())
        except json.JSONDecodeError:
            tool_input = None
        if not isinstance(tool_input, dict):
            return text_reply(f"SCRIPT ERROR: TOOL {match['tool']} needs a JSON object input")
        return tool_reply(match["tool"], tool_input)
    if match["slow_n"] is not None:
        count, delay = int(match["slow_n"]), float(match["slow_s"])
        words = "".join(f"word{i} " for i in range(count))
        return Reply(content=[{"type": "text", "text": words}], delay=delay, per_word=True)
    if match["error"] is not None:
        return Reply(error_status=int(match["error"]))
    history = [user_text(m) for m in body.get("messages") or [] if m.get("role") == "user"]
    return text_reply(" | ".join(t.strip() for t in history if t.strip()))


# ---------------------------------------------------------------------------
# Rendering replies


def estimate_tokens(value: Any) -> int:
    """Rough token count (4 characters a token), at least 1."""
    text = value if isinstance(value, str) else json.dumps(value)
    return max(1, len(text) // 4)


def error_body(status: int) -> dict[str, Any]:
    """Anthropic's JSON error body for an HTTP status."""
    kind, message = ERROR_TYPES.get(status, ("api_error", f"scripted error {status}"))
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }


def split_chunks(text: str, parts: int = 3) -> list[str]:
    """Split text into up to ``parts`` non-empty pieces."""
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def text_deltas(reply: Reply, block: dict[str, Any]) -> list[str]:
    """The text deltas to stream for a text block (one per word when slow)."""
    text = block["text"]
    if reply.per_word:
        return re.findall(r"\S+\s*", text) or [text]
    return split_chunks(text)


def sse_events(reply: Reply, model: str, input_tokens: int) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events of a streamed reply, in order (text deltas not yet delayed)."""
    output_tokens = estimate_tokens(reply.content)
    message: dict[str, Any] = {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
        },
    }
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": message})]
    for index, block in enumerate(reply.content):
        if block["type"] == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": t} for t in text_deltas(reply, block)]
        else:
            start = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in split_chunks(raw)]
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def json_message(reply: Reply, model: str, input_tokens: int) -> dict[str, Any]:
    """The non-streaming equivalent of a reply."""
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": reply.content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": estimate_tokens(reply.content),
        },
    }


# ---------------------------------------------------------------------------
# HTTP server


class _Server(ThreadingHTTPServer):
    """Threading server whose handler threads never block shutdown."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # benchmarks open many connections at once
    model: ScriptedModel


class _Handler(BaseHTTPRequestHandler):
    """Serves the fake API for the ``ScriptedModel`` attached to the server."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Log to stderr only when the model is verbose."""
        if self.server.model.verbose:
            sys.stderr.write(f"model_server: {format % args}\n")

    def _record_call(self) -> str:
        path = urlsplit(self.path).path
        self.server.model._record_call(self.command, self.path)
        return path

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", str(payload.get("request_id", f"req_{uuid.uuid4().hex[:24]}")))
        if status >= 400:
            # As the real API does: retryable errors say so, others forbid a retry.
            self.send_header("x-should-retry", "true" if status in RETRYABLE else "false")
        self.end_headers()
        self.wfile.write(data)

    def do_HEAD(self) -> None:
        """Health probe the CLI sends at start."""
        self._record_call()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        """Health probe."""
        self._record_call()
        self._send_json(200, {"ok": True})

    def do_POST(self) -> None:
        """``/v1/messages`` (streamed or not) and ``/v1/messages/count_tokens``."""
        path = self._record_call()
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            self._send_json(400, error_body(400))
            return
        if path.rstrip("/") == "/v1/messages/count_tokens":
            self._send_json(200, {"input_tokens": estimate_tokens(body.get("messages", []))})
            return
        if path.rstrip("/") != "/v1/messages":
            self._send_json(404, error_body(404))
            return
        self.server.model._record_request(body, dict(self.headers.items()))
        reply = plan_reply(body)
        if reply.error_status is not None:
            self._send_json(reply.error_status, error_body(reply.error_status))
            return
        model = str(body.get("model", "claude-scripted"))
        input_tokens = estimate_tokens([body.get("system", ""), body.get("messages", [])])
        try:
            if body.get("stream"):
                self._stream(reply, model, input_tokens)
            else:
                time.sleep(reply.delay * sum(len(text_deltas(reply, b)) for b in reply.content if b["type"] == "text"))
                self._send_json(200, json_message(reply, model, input_tokens))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _stream(self, reply: Reply, model: str, input_tokens: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.send_header("request-id", f"req_{uuid.uuid4().hex[:24]}")
        self.end_headers()
        self.close_connection = True
        for event, data in sse_events(reply, model, input_tokens):
            if reply.delay and data.get("delta", {}).get("type") == "text_delta":
                time.sleep(reply.delay)
            self.wfile.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()


class ScriptedModel:
    """A fake Anthropic API in a background thread, recording every request."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> None:
        self.host = host
        self.port = port
        self.verbose = verbose
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # headers of each entry in ``requests``
        self.calls: list[tuple[str, str]] = []  # (method, path) of every HTTP request
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL for ``ANTHROPIC_BASE_URL``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Start serving in a daemon thread; returns self."""
        server = _Server((self.host, self.port), _Handler)
        server.model = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="scripted-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (in-flight streams are abandoned)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def prompts(self) -> list[str]:
        """The user text of the last user message of each recorded request."""
        with self._lock:
            bodies = list(self.requests)
        return [user_text(last_user_message(b) or {}) for b in bodies]

    def env(self, home: str) -> dict[str, str]:
        """Environment variables pointing the CLI at this server (merge into os.environ)."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "test-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "HOME": str(home),
        }

    def _record_request(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
        if self.verbose:
            sys.stderr.write(f"model_server: request {json.dumps(body)[:2000]}\n")

    def _record_call(self, method: str, path: str) -> None:
        with self._lock:
            self.calls.append((method, path))


def main(argv: list[str] | None = None) -> None:
    """Serve until killed, after printing ``READY <url>``."""
    parser = argparse.ArgumentParser(description="Scripted fake of the Anthropic Messages API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)
    model = ScriptedModel(args.host, args.port, verbose=args.verbose).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(f"READY {model.url}", flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    model.stop()


if __name__ == "__main__":
    main()
