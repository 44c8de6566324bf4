"""MCP: `scout mcp` (Scout's tools for MCP clients) and MCP servers named by a mode.

`scout mcp` runs as a real subprocess, driven over stdio by the `mcp` package's own
client, in front of a real Scout server whose tasks run the real Claude Code CLI
against the scripted model (see conftest.py). One test puts the real CLI on the
other side too: Claude Code, configured with `claude mcp add` as the README says,
calls start_task and the task runs in Scout.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import claude_agent_sdk
import pytest
from mcp import Client, StdioServerParameters

from conftest import ROOT, ScoutServer, free_port, processes_matching, wait_for
from model_server import last_user_message, user_text

from scout.modes import ModeError, load_modes, tool_matches

CLI = Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude"
ECHO_SERVER = Path(__file__).resolve().parent / "mcp_echo_server.py"
TOOLS = {"start_task", "get_task", "list_tasks", "stop_task", "answer_approval", "get_changes"}


# -- helpers -----------------------------------------------------------------------------

def scout_command() -> list[str]:
    """`scout mcp` as an installed user runs it: the venv's `scout` script (else the module)."""
    script = Path(sys.executable).parent / "scout"
    return [str(script), "mcp"] if script.exists() else [sys.executable, "-m", "scout.cli", "mcp"]


def scout_mcp(url: str, token: str | None = None) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env.update({"SCOUT_URL": url, "PYTHONPATH": str(ROOT)})
    if token:
        env["SCOUT_API_TOKEN"] = token
    command, *args = scout_command()
    return StdioServerParameters(command=command, args=args, env=env)


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A successful tool call's structured result (and its text says the same)."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {result.content}"
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    """The message of a tool call that must fail as a tool error."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} should have failed: {result.structured_content}"
    return result.content[0].text


def modes_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "modes.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "project"
    d.mkdir()
    return d


# -- `scout mcp` over stdio ----------------------------------------------------------------

def test_scout_mcp_tools_start_wait_stop_and_approve(make_server, tmp_path: Path, work: Path):
    server: ScoutServer = make_server(SCOUT_API_TOKEN="mcp-secret", SCOUT_MODES_FILE=modes_file(tmp_path, """
[modes.Ask]
description = "asks before writing"
allowed_tools = ["Read"]
approval_tools = ["Write"]
"""))

    async def scenario() -> None:
        async with Client(scout_mcp(server.url, server.token)) as mcp:
            tools = {t.name: t for t in (await mcp.list_tools()).tools}
            assert set(tools) == TOOLS
            for tool in tools.values():
                assert len(tool.description or "") > 40 and tool.input_schema["type"] == "object"
            assert tools["get_task"].input_schema["properties"]["wait_seconds"]["maximum"] == 60
            assert tools["start_task"].input_schema["required"] == ["message"]

            # Start a task, wait for it, read its answer.
            started = await call(mcp, "start_task", message="hello over mcp", cwd=str(work))
            done = await call(mcp, "get_task", task_id=started["task_id"], wait_seconds=60)
            assert done["status"] == "completed" and done["finished"] is True
            assert done["answer"] == "ECHO: hello over mcp"
            assert done["result"]["text"] == "ECHO: hello over mcp" and done["error"] is None
            assert done["session_id"] == started["session_id"] and done["cwd"] == str(work)
            listed = await call(mcp, "list_tasks", session_id=started["session_id"])
            assert [t["task_id"] for t in listed["tasks"]] == [started["task_id"]]

            # A slow one: its answer grows while it runs, then stop it.
            slow = await call(mcp, "start_task", message="SLOW: 400 0.1", session_id=started["session_id"])
            running = await wait_for_report(mcp, slow["task_id"], lambda r: "word2 " in r["answer"] + " ")
            assert running["status"] == "running" and running["finished"] is False
            assert running["answer"].startswith("word0 word1 word2")
            stopped = await call(mcp, "stop_task", task_id=slow["task_id"])
            assert stopped == {"task_id": slow["task_id"], "status": "cancelled", "stopped": True}
            assert (await call(mcp, "get_task", task_id=slow["task_id"]))["status"] == "cancelled"
            assert server.status(slow["task_id"])["status"] == "cancelled"

            # An approval: get_task's wait ends when the task starts waiting, long before 60 s.
            target = work / "approved.txt"
            asking = await call(mcp, "start_task", mode="Ask", cwd=str(work), message="TOOL: Write "
                                + json.dumps({"file_path": str(target), "content": "written via mcp"}))
            t0 = time.monotonic()
            waiting = await call(mcp, "get_task", task_id=asking["task_id"], wait_seconds=60)
            assert time.monotonic() - t0 < 45
            assert waiting["status"] == "waiting"
            assert waiting["pending_approval"]["tool"] == "Write"
            assert waiting["pending_approval"]["input"]["file_path"] == str(target)
            answered = await call(mcp, "answer_approval", task_id=asking["task_id"], decision="allow",
                                  reason="fine by the test")
            assert answered["decision"] == "allow"
            assert answered["tool_use_id"] == waiting["pending_approval"]["tool_use_id"]
            finished = await call(mcp, "get_task", task_id=asking["task_id"], wait_seconds=60)
            assert finished["status"] == "completed", finished
            assert target.read_text() == "written via mcp"
            assert finished["recent_steps"] == [f"Write: {target}"]

            # Mistakes are tool errors with a sentence to act on; the server goes on answering.
            unknown = str(uuid.uuid4())
            assert "no task" in (await call_error(mcp, "get_task", task_id=unknown)).lower()
            assert "task already completed" in await call_error(mcp, "answer_approval",
                                                                task_id=started["task_id"], decision="allow")
            assert "unknown mode" in await call_error(mcp, "start_task", message="x", mode="NoSuchMode")
            assert "less than or equal to 60" in await call_error(mcp, "get_task", task_id=unknown,
                                                                  wait_seconds=600)
            assert "decision" in await call_error(mcp, "answer_approval", task_id=unknown, decision="maybe")
            assert "not a Scout id" in await call_error(mcp, "stop_task", task_id="..")
            assert "Scout refused the request" in await call_error(mcp, "get_changes", session_id="no-such-session")
            assert (await call(mcp, "list_tasks", status="completed", limit=1))["more"] is True

        # The token is honoured: without it, Scout's refusal says what to set.
        async with Client(scout_mcp(server.url)) as anonymous:
            assert "SCOUT_API_TOKEN" in await call_error(anonymous, "list_tasks")

    asyncio.run(scenario())


async def wait_for_report(mcp: Client, task_id: str, predicate, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = await call(mcp, "get_task", task_id=task_id)
        if predicate(report):
            return report
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} never got there: {report}")


def test_scout_mcp_with_scout_down_answers_tool_errors():
    url = f"http://127.0.0.1:{free_port()}"

    async def scenario() -> None:
        async with Client(scout_mcp(url)) as mcp:
            for _ in range(2):  # still there after the first failure
                message = await call_error(mcp, "start_task", message="anyone there?")
                assert f"Scout is not reachable at {url}" in message and "SCOUT_URL" in message
            assert {t.name for t in (await mcp.list_tools()).tools} == TOOLS

    asyncio.run(scenario())


# -- the real Claude Code CLI calling `scout mcp` ------------------------------------------

def test_claude_code_delegates_to_scout_through_scout_mcp(make_server, model, tmp_path: Path, work: Path):
    server: ScoutServer = make_server(SCOUT_API_TOKEN="cc-secret")
    home = tmp_path / "claude-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOUT_", "ANTHROPIC_", "CLAUDE"))}
    env.update(model.env(str(home)))
    # One-shot `claude -p` starts its turn without waiting long for MCP servers; on this loaded
    # machine `scout mcp` (a Python process) may take longer than that to come up.
    env["CLAUDE_CODE_MCP_STARTUP_WAIT_MS"] = "60000"
    # Exactly what the README tells a user to run (plus PYTHONPATH, to test this checkout).
    add = subprocess.run([str(CLI), "mcp", "add", "--scope", "user", "scout", "-e", f"SCOUT_URL={server.url}",
                          "-e", f"SCOUT_API_TOKEN={server.token}", "-e", f"PYTHONPATH={ROOT}", "--",
                          *scout_command()], env=env, cwd=str(work), capture_output=True, text=True, timeout=60)
    assert add.returncode == 0, add.stderr

    prompt = "TOOL: mcp__scout__start_task " + json.dumps({"message": "hello from claude code", "cwd": str(work)})
    run = subprocess.run([str(CLI), "-p", prompt, "--output-format", "stream-json", "--verbose",
                          "--allowedTools", "mcp__scout__start_task"],
                         env=env, cwd=str(work), capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr + run.stdout
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    init = next(m for m in lines if m.get("type") == "system" and m.get("subtype") == "init")
    assert [s["name"] for s in init["mcp_servers"]] == ["scout"]
    # Claude Code announces the server's tools to the model (as deferred tools, loaded on use).
    ours = [json.dumps(body) for body in model.requests if user_text(last_user_message(body) or {}) == prompt]
    assert ours and set(re.findall(r"mcp__scout__\w+", ours[0])) == {f"mcp__scout__{t}" for t in TOOLS}

    # The task Claude Code started runs in Scout, and Claude Code got its ids back.
    tasks = server.get("/tasks").json()["tasks"]
    delegated = [t for t in tasks if t["message"] == "hello from claude code"]
    assert len(delegated) == 1
    doc = server.wait(delegated[0]["task_id"])
    assert doc["status"] == "completed" and doc["result"]["text"] == "ECHO: hello from claude code"
    result = next(m for m in lines if m.get("type") == "result")
    assert not result["is_error"] and delegated[0]["task_id"] in result["result"]


# -- MCP servers for tasks -----------------------------------------------------------------

def test_task_uses_an_mcp_server_its_mode_names(make_server, tmp_path: Path, work: Path):
    server: ScoutServer = make_server(SCOUT_MODES_FILE=modes_file(tmp_path, f"""
[modes.Echo]
description = "has the echo MCP server"
allowed_tools = ["Read"]

[modes.Echo.mcp_servers.echo]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(ECHO_SERVER))}]
env = {{ ECHO_SUFFIX = "!", OPERATOR_SECRET = "s3cret" }}

[modes.EchoAsk]
description = "asks before any echo tool"
approval_tools = ["mcp__echo"]
mcp_servers = {{ echo = {{ command = {json.dumps(sys.executable)}, args = [{json.dumps(str(ECHO_SERVER))}] }} }}
"""))
    task_id = server.chat("TOOL: mcp__echo__shout " + json.dumps({"text": "hi there"}), mode="Echo", cwd=str(work))
    doc = server.wait(task_id, timeout=120)
    assert doc["status"] == "completed", doc
    events = doc["events"]
    use = next(e["payload"] for e in events if e["type"] == "tool_use")
    assert use["name"] == "mcp__echo__shout" and use["input"] == {"text": "hi there"}
    result = next(e["payload"] for e in events if e["type"] == "tool_result")
    assert result == {"tool_use_id": use["id"], "content": "HI THERE FROM ECHO SERVER!", "is_error": False}
    assert doc["result"]["text"] == "TOOL RESULT: HI THERE FROM ECHO SERVER!"
    assert not [e for e in events if e["type"] == "permission_denied"]

    # A mode whose rules name the server decides for it: here every echo tool is asked of a person.
    asked = server.chat("TOOL: mcp__echo__shout " + json.dumps({"text": "may i"}), mode="EchoAsk", cwd=str(work))
    waiting = server.wait(asked, timeout=120, statuses=("waiting",))
    request = next(e["payload"] for e in waiting["events"] if e["type"] == "approval_request")
    assert request["tool"] == "mcp__echo__shout"
    assert server.post(f"/chat/{asked}/approve", json={"decision": "deny", "reason": "not now"}).status_code == 200
    denied = server.wait(asked, timeout=120)
    assert denied["status"] == "completed"
    assert next(e["payload"] for e in denied["events"] if e["type"] == "tool_result")["is_error"] is True

    # The servers Claude Code started for the tasks ended with them.
    wait_for(lambda: not processes_matching(str(ECHO_SERVER)), timeout=30, what="the echo servers to exit")

    # The API shows the server's name, never its command or environment, and takes none from clients.
    modes = {m["name"]: m for m in server.get("/modes").json()["modes"]}
    assert modes["Echo"]["mcp_servers"] == ["echo"] and modes["Scout"]["mcp_servers"] == []
    assert "s3cret" not in json.dumps(modes) and str(ECHO_SERVER) not in json.dumps(modes)
    sneaky = server.post("/chat", json={"message": "x", "mcp_servers": {"evil": {"command": "/bin/sh"}}})
    assert sneaky.status_code == 400 and "mcp_servers" in sneaky.json()["error"]["message"]


def test_modes_file_mcp_servers_are_checked(tmp_path: Path):
    def load(text: str) -> Any:
        return load_modes(modes_file(tmp_path, text))

    modes = load("""
[modes.M.mcp_servers.db]
command = "db-mcp"
args = ["--ro"]
[modes.M.mcp_servers.web]
url = "https://mcp.example.com/mcp"
headers = { Authorization = "Bearer t" }
[modes.M.mcp_servers.old]
type = "sse"
url = "https://old.example.com/sse"
""")
    assert modes["M"].sdk_mcp_servers() == {
        "db": {"type": "stdio", "command": "db-mcp", "args": ["--ro"], "env": {}},
        "web": {"type": "http", "url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer t"}},
        "old": {"type": "sse", "url": "https://old.example.com/sse", "headers": {}},
    }
    assert modes["M"].tool_rules(["Read"], []) == ["Read", "mcp__db", "mcp__web", "mcp__old"]
    assert modes["M"].tool_rules(["mcp__db__query"], ["mcp__web"]) == ["mcp__db__query", "mcp__old"]
    assert modes["Scout"].mcp_servers == {} and load_modes()["Scout"].mcp_servers == {}
    for bad, says in [
        ('[modes.M.mcp_servers."a b"]\ncommand = "x"', "server name"),
        ("[modes.M.mcp_servers.x]\nargs = []", "needs `url`"),
        ('[modes.M.mcp_servers.x]\ntype = "stdio"\nurl = "http://h"', "needs `command`"),
        ('[modes.M.mcp_servers.x]\ncommand = "c"\nurl = "http://h"', "url do not apply"),
        ('[modes.M.mcp_servers.x]\ntype = "ws"\nurl = "ws://h"', "type must be one of"),
        ('[modes.M.mcp_servers.x]\ncommand = "c"\nenv = { A = 1 }', "env must be a table of strings"),
        ('[modes.M.mcp_servers.x]\ncommand = "c"\ncwd = "/"', "unknown keys: cwd"),
        ('[modes.M]\nmcp_servers = ["x"]', "must be a table"),
    ]:
        with pytest.raises(ModeError, match=says):
            load(bad)


def test_tool_rules_match_mcp_tools_as_claude_code_does():
    assert tool_matches("mcp__db__query", ["mcp__db"])
    assert tool_matches("mcp__db__query", ["mcp__db__*"])
    assert tool_matches("mcp__db__query", ["mcp__db__query"])
    assert tool_matches("Write", ["*"])
    assert not tool_matches("mcp__db__query", ["mcp__dbx", "mcp__d", "mcp__db__other", "Write"])
    assert not tool_matches("mcp__dbx__query", ["mcp__db"])
    assert not tool_matches("Write", ["mcp__db"])
