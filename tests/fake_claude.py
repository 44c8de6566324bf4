#!/usr/bin/env python3
"""A fake ``claude`` executable for failure modes the real CLI can't show.

Pick the behaviour with ``FAKE_CLAUDE_MODE``:

* ``crash``   - prints the system init line and one assistant line, writes
  "boom" to stderr and exits with code 3.
* ``garbage`` - prints lines that are not JSON, then exits 0.
* ``badjson`` - prints one truncated JSON line (starts with "{"), then exits 0.
* ``hang``    - prints the system init line, then sleeps forever.
* ``silent``  - prints nothing at all (not even the answer to initialize) and
  sleeps forever.

Every mode but ``silent`` speaks the SDK's control protocol: a thread reads
stdin, answers each ``control_request`` (``initialize`` first) with a success
``control_response``, and the failure starts once the first ``user`` message
arrives (or stdin closes), as the real CLI prints its init line only then.
Command-line arguments are accepted and ignored, except that ``--session-id``
or ``--resume`` sets the session id reported. If ``FAKE_CLAUDE_PIDFILE`` is
set, the process writes its pid there so a test can check it was killed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import uuid
from typing import Any

MODES = ("crash", "garbage", "badjson", "hang", "silent")
VERSION = "2.1.332"  # what the SDK's version check expects to see in init
MODEL = "claude-fake"

_write_lock = threading.Lock()


def emit(line: str) -> None:
    """Write one line to stdout and flush it."""
    with _write_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def emit_json(message: dict[str, Any]) -> None:
    """Write one stream-json message (compact, as the CLI does)."""
    emit(json.dumps(message, separators=(",", ":")))


def session_id_from(argv: list[str]) -> str:
    """The id given by ``--session-id`` / ``--resume``, else a new one."""
    for flag in ("--session-id", "--resume"):
        if flag in argv[:-1]:
            return argv[argv.index(flag) + 1]
    return str(uuid.uuid4())


def init_message(session_id: str) -> dict[str, Any]:
    """The ``system``/``init`` line, trimmed to the fields the SDK and Scout read."""
    return {
        "type": "system",
        "subtype": "init",
        "cwd": os.getcwd(),
        "session_id": session_id,
        "tools": ["Bash", "Read", "Write"],
        "mcp_servers": [],
        "model": MODEL,
        "permissionMode": "default",
        "slash_commands": [],
        "apiKeySource": "ANTHROPIC_API_KEY",
        "claude_code_version": VERSION,
        "output_style": "default",
        "agents": [],
        "skills": [],
        "plugins": [],
        "uuid": str(uuid.uuid4()),
    }


def assistant_message(session_id: str, text: str) -> dict[str, Any]:
    """An ``assistant`` line holding one text block."""
    return {
        "type": "assistant",
        "message": {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": text}],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        },
        "parent_tool_use_id": None,
        "session_id": session_id,
        "uuid": str(uuid.uuid4()),
    }


def initialize_response() -> dict[str, Any]:
    """The payload of the answer to ``initialize`` (the real one, minus lists)."""
    return {
        "commands": [],
        "agents": [],
        "output_style": "default",
        "available_output_styles": ["default"],
        "models": [],
        "account": {"tokenSource": "none", "apiKeySource": "ANTHROPIC_API_KEY", "apiProvider": "firstParty"},
        "pid": os.getpid(),
        "claude_code_version": VERSION,
        "current_permission_mode": "default",
        "hook_on_failure_supported": True,
    }


class StdinReader(threading.Thread):
    """Answers control requests; signals the first user message or stdin EOF."""

    def __init__(self, answer: bool) -> None:
        super().__init__(name="fake-claude-stdin", daemon=True)
        self.answer = answer
        self.prompted = threading.Event()

    def run(self) -> None:
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("type") == "user":
                self.prompted.set()
            elif message.get("type") == "control_request" and self.answer:
                request = message.get("request") or {}
                payload = initialize_response() if request.get("subtype") == "initialize" else {}
                emit_json(
                    {
                        "type": "control_response",
                        "response": {
                            "subtype": "success",
                            "request_id": message.get("request_id"),
                            "response": payload,
                        },
                    }
                )
        self.prompted.set()  # stdin closed (e.g. `-p` runs): go ahead anyway


def exit_now(code: int) -> None:
    """Exit at once; a daemon thread blocked on stdin must not stall shutdown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def sleep_forever() -> None:
    """Block until killed."""
    threading.Event().wait()


def main() -> None:
    """Run the failure mode named by ``FAKE_CLAUDE_MODE``."""
    if sys.argv[1:] == ["--version"]:  # the server asks at start-up, before any task
        print(f"{VERSION} (Claude Code)", flush=True)
        return
    mode = os.environ.get("FAKE_CLAUDE_MODE", "")
    if mode not in MODES:
        sys.stderr.write(f"fake_claude: set FAKE_CLAUDE_MODE to one of {', '.join(MODES)} (got {mode!r})\n")
        exit_now(2)
    pidfile = os.environ.get("FAKE_CLAUDE_PIDFILE")
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))

    reader = StdinReader(answer=mode != "silent")
    reader.start()
    if mode == "silent":
        sleep_forever()
    reader.prompted.wait()
    session_id = session_id_from(sys.argv[1:])

    if mode == "crash":
        emit_json(init_message(session_id))
        emit_json(assistant_message(session_id, "partial answer before the crash"))
        sys.stderr.write("boom\n")
        exit_now(3)
    elif mode == "garbage":
        emit("this is not json")
        emit("<html><body>502 Bad Gateway</body></html>")
        exit_now(0)
    elif mode == "badjson":
        emit('{"type":"assistant","message":{"content":[')
        exit_now(0)
    elif mode == "hang":
        emit_json(init_message(session_id))
        sleep_forever()


if __name__ == "__main__":
    main()
