"""The server's own log: one line per record, as text or as JSON (SCOUT_LOG_FORMAT).

Records may carry structured fields (``extra=fields(...)``): JSON lines hold them as
keys; text lines show only the message, which is written to say the same. Nothing here knows about
requests or tasks; the server and scout.ops decide what to log.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", ...fields} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                doc.setdefault(key, value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger: message` (messages are written to be complete without fields)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(fmt: str = "text", level: str | int = "INFO", stream: Any = None) -> logging.Handler:
    """Send every logger's records to `stream` (stderr) in the chosen format. An unknown
    format falls back to text (Settings.from_env reports it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    try:
        root.setLevel(level.upper() if isinstance(level, str) else level)
    except (ValueError, TypeError):
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return handler


def fields(**kw: Any) -> dict[str, Any]:
    """`extra=` for a log call with structured fields: log.info(msg, extra=fields(a=1))."""
    return {"fields": kw}


request_log = logging.getLogger("scout.requests")


def log_request(method: str, path: str, status: int, started: float) -> None:
    """The one line per HTTP request (`started` from time.monotonic() at its start). The
    path has no query string and no header is logged, so tokens never reach the log."""
    ms = (time.monotonic() - started) * 1000
    if not path.isprintable():  # a decoded %0A must not start a line of its own
        path = path.encode("unicode_escape").decode("ascii")
    request_log.info("%s %s %s %.1fms", method, path, status, ms, extra=fields(
        event="request", method=method, path=path, status=status, duration_ms=round(ms, 1)))


def banner(text: str, fmt: str, **kw: Any) -> str:
    """A line printed to stdout whatever the log level (e.g. where the server listens),
    as JSON in JSON mode so that every line of the output parses."""
    if fmt != "json":
        return text
    now = time.time()
    return json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
                       "level": "info", "logger": "scout.server", "message": text, **kw})
