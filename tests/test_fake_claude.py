"""Drive each fake_claude failure mode through the real claude_agent_sdk."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    CLIJSONDecodeError,
    Message,
    ProcessError,
    SystemMessage,
    query,
)

FAKE = Path(__file__).parent / "fake_claude.py"


@dataclass
class Outcome:
    """What the SDK yielded before it ended, raised, or was seen to block."""

    messages: list[Message] = field(default_factory=list)
    error: BaseException | None = None
    blocked: bool = False  # still running when the wait ran out (the fake was then killed)
    stderr: list[str] = field(default_factory=list)


def drive(mode: str, tmp_path: Path, wait: float = 5.0) -> Outcome:
    """Run ``query("hi")`` against the fake in ``mode``; kill the fake if it blocks past ``wait``."""
    pidfile = tmp_path / f"{mode}.pid"
    outcome = Outcome()
    options = ClaudeAgentOptions(
        cli_path=str(FAKE),
        cwd=str(tmp_path),
        env={"FAKE_CLAUDE_MODE": mode, "FAKE_CLAUDE_PIDFILE": str(pidfile)},
        stderr=outcome.stderr.append,
    )

    async def consume() -> None:
        async for message in query(prompt="hi", options=options):
            outcome.messages.append(message)

    async def main() -> None:
        task = asyncio.create_task(consume())
        done, _ = await asyncio.wait({task}, timeout=wait)
        if not done:
            outcome.blocked = True
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        try:
            await asyncio.wait_for(task, timeout=15)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcome.error = exc

    asyncio.run(main())
    return outcome


def test_crash_surfaces_exit_code(tmp_path: Path) -> None:
    outcome = drive("crash", tmp_path)
    assert not outcome.blocked
    init, assistant = outcome.messages
    assert isinstance(init, SystemMessage) and init.subtype == "init"
    assert isinstance(assistant, AssistantMessage)
    assert isinstance(outcome.error, ProcessError) and outcome.error.exit_code == 3
    assert "exit code 3" in str(outcome.error)
    assert "boom" in outcome.stderr


def test_garbage_yields_nothing(tmp_path: Path) -> None:
    outcome = drive("garbage", tmp_path)
    # The SDK skips stdout lines that don't start with "{", so the run just ends empty.
    assert not outcome.blocked
    assert outcome.messages == []
    assert outcome.error is None


def test_badjson_raises_decode_error(tmp_path: Path) -> None:
    outcome = drive("badjson", tmp_path)
    assert outcome.messages == []
    assert isinstance(outcome.error, CLIJSONDecodeError)


def test_hang_yields_init_then_blocks(tmp_path: Path) -> None:
    outcome = drive("hang", tmp_path, wait=5.0)  # time for a slow start to print init
    assert outcome.blocked
    [init] = outcome.messages
    assert isinstance(init, SystemMessage) and init.data["session_id"]
    # Once the hung process is killed, the SDK reports the signal as the exit code.
    assert isinstance(outcome.error, ProcessError) and outcome.error.exit_code == -signal.SIGKILL


def test_silent_blocks_in_initialize(tmp_path: Path) -> None:
    outcome = drive("silent", tmp_path, wait=5.0)
    assert outcome.blocked
    assert outcome.messages == []
    assert isinstance(outcome.error, ProcessError)


def test_accepts_cli_arguments_without_stdin(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(FAKE), "-p", "x", "--output-format", "stream-json", "--verbose", "--session-id", "abc"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "FAKE_CLAUDE_MODE": "crash"},
        timeout=10,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 3 and proc.stderr == "boom\n"
    assert [(m["type"], m["session_id"]) for m in lines] == [("system", "abc"), ("assistant", "abc")]


def test_unknown_mode_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(FAKE)],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, "FAKE_CLAUDE_MODE": "nope"},
        timeout=10,
    )
    assert proc.returncode == 2 and "FAKE_CLAUDE_MODE" in proc.stderr


@pytest.mark.parametrize("mode", ["crash", "garbage"])
def test_answers_initialize(mode: str) -> None:
    request = {"type": "control_request", "request_id": "req_1", "request": {"subtype": "initialize", "hooks": None}}
    proc = subprocess.run(
        [str(FAKE), "--input-format", "stream-json"],
        check=False,
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, "FAKE_CLAUDE_MODE": mode},
        timeout=10,
    )
    first = json.loads(proc.stdout.splitlines()[0])
    assert first["type"] == "control_response"
    assert first["response"]["subtype"] == "success" and first["response"]["request_id"] == "req_1"
    assert first["response"]["response"]["claude_code_version"]
