"""Tests of the scripted model server, mostly through the real bundled CLI."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import claude_agent_sdk
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from model_server import ScriptedModel  # noqa: E402

CLI = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    """A running scripted model, stopped afterwards."""
    server = ScriptedModel().start()
    yield server
    server.stop()


def cli_env(model: ScriptedModel, home: Path) -> dict[str, str]:
    """The caller's environment without its own credentials, pointed at the fake."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    return {**base, **model.env(home=str(home))}


def run_cli(
    model: ScriptedModel, tmp_path: Path, prompt: str, *args: str, cwd: Path | None = None
) -> list[dict[str, Any]]:
    """Run ``claude [args] -p prompt`` against the fake; returns its stream-json messages."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    proc = subprocess.run(
        [str(CLI), *args, "-p", prompt, "--output-format", "stream-json", "--verbose"],
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=cli_env(model, home),
        cwd=cwd or tmp_path,
        timeout=60,
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def post(model: ScriptedModel, body: dict[str, Any], path: str = "/v1/messages") -> tuple[int, str, bytes]:
    """POST a JSON body straight to the fake; returns status, content type, body."""
    conn = http.client.HTTPConnection(model.host, model.port, timeout=10)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheader("Content-Type", ""), data


def sse_data(raw: bytes) -> list[dict[str, Any]]:
    """The data payloads of an SSE body."""
    return [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]


MAIN = {"model": "m", "max_tokens": 100, "tools": [{"name": "Bash"}]}


# --- through the real CLI ---------------------------------------------------


def test_cli_echo_reaches_result(model: ScriptedModel, tmp_path: Path) -> None:
    messages = run_cli(model, tmp_path, "hello scout")
    result = messages[-1]
    assert result["type"] == "result" and not result["is_error"]
    assert result["result"] == "ECHO: hello scout"
    assert result["total_cost_usd"] > 0
    assert model.prompts() == ["hello scout"]


def test_cli_bash_ls_shows_tool_output(model: ScriptedModel, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text("hi")
    messages = run_cli(model, tmp_path, "please BASH: ls", cwd=work)
    tool_results = [
        block
        for m in messages
        if m["type"] == "user"
        for block in m["message"]["content"]
        if block.get("type") == "tool_result"
    ]
    assert tool_results and "hello.txt" in str(tool_results[0]["content"])
    assert messages[-1]["result"] == "TOOL RESULT: hello.txt"
    assert len(model.requests) == 2


def test_cli_error_401_gives_error_result(model: ScriptedModel, tmp_path: Path) -> None:
    messages = run_cli(model, tmp_path, "ERROR: 401")
    result = messages[-1]
    assert result["type"] == "result" and result["is_error"]
    assert result["api_error_status"] == 401
    assert len(model.requests) == 1  # x-should-retry: false stops the CLI retrying


def test_cli_resume_carries_history(model: ScriptedModel, tmp_path: Path) -> None:
    first = run_cli(model, tmp_path, "first turn")[-1]
    result = run_cli(model, tmp_path, "ECHO-HISTORY", "--resume", first["session_id"])[-1]
    assert result["session_id"] == first["session_id"]
    assert result["result"] == "first turn | ECHO-HISTORY"


# --- straight HTTP ----------------------------------------------------------


def test_health_probes(model: ScriptedModel) -> None:
    for method in ("HEAD", "GET"):
        conn = http.client.HTTPConnection(model.host, model.port, timeout=5)
        conn.request(method, "/")
        assert conn.getresponse().status == 200
        conn.close()


def test_streamed_tool_use_events(model: ScriptedModel) -> None:
    prompt = 'x TOOL: Write {"file_path": "/f", "content": "hi"}'
    body = {**MAIN, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    status, ctype, raw = post(model, body, "/v1/messages?beta=true")
    assert status == 200 and ctype.startswith("text/event-stream")
    events = sse_data(raw)
    assert [e["type"] for e in events][:2] == ["message_start", "content_block_start"]
    assert events[-2]["delta"]["stop_reason"] == "tool_use" and events[-1]["type"] == "message_stop"
    partial = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta")
    assert json.loads(partial) == {"file_path": "/f", "content": "hi"}
    assert events[1]["content_block"]["name"] == "Write"


def test_non_streaming_and_system_tail(model: ScriptedModel) -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                {"type": "text", "text": "hi"},
            ],
        },
        {"role": "system", "content": "env"},
    ]
    status, ctype, raw = post(model, {**MAIN, "stream": False, "messages": messages})
    reply = json.loads(raw)
    assert status == 200 and ctype == "application/json"
    assert reply["content"] == [{"type": "text", "text": "ECHO: hi"}] and reply["stop_reason"] == "end_turn"
    assert reply["usage"]["input_tokens"] > 0 and reply["usage"]["output_tokens"] > 0


def test_side_request_gets_plain_or_schema_reply(model: ScriptedModel) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
    body = {
        "model": "m",
        "max_tokens": 100,
        "tools": [],
        "stream": False,
        "messages": [{"role": "user", "content": "BASH: rm -rf /"}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    reply = json.loads(post(model, body)[2])
    assert json.loads(reply["content"][0]["text"]) == {"title": "Scripted title"}
    del body["output_config"]
    assert json.loads(post(model, body)[2])["content"][0]["text"] == "Scripted title"
    assert len(model.requests) == 2


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, "authentication_error"), (429, "rate_limit_error"), (500, "api_error"), (529, "overloaded_error")],
)
def test_error_bodies(model: ScriptedModel, status: int, kind: str) -> None:
    got, _, raw = post(model, {**MAIN, "stream": True, "messages": [{"role": "user", "content": f"ERROR: {status}"}]})
    body = json.loads(raw)
    assert got == status and body["type"] == "error" and body["error"]["type"] == kind


def test_slow_and_history(model: ScriptedModel) -> None:
    _, _, raw = post(model, {**MAIN, "stream": True, "messages": [{"role": "user", "content": "SLOW: 3 0.01"}]})
    deltas = [e["delta"]["text"] for e in sse_data(raw) if e["type"] == "content_block_delta"]
    assert deltas == ["word0 ", "word1 ", "word2 "]
    history = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "ECHO: one"},
        {"role": "user", "content": "ECHO-HISTORY"},
    ]
    reply = json.loads(post(model, {**MAIN, "messages": history})[2])
    assert reply["content"][0]["text"] == "one | ECHO-HISTORY"


def test_tool_result_is_reported(model: ScriptedModel) -> None:
    messages = [
        {"role": "user", "content": "BASH: ls"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a.txt"}]}],
        },
    ]
    reply = json.loads(post(model, {**MAIN, "messages": messages})[2])
    assert reply["content"][0]["text"] == "TOOL RESULT: a.txt"


def test_runs_as_a_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "model_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
