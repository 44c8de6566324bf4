"""Sessions, modes, live text, results, errors and tool approvals, through the real CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import read_sse, tagged_processes
from scout.store import Store


def requests_with(model, text: str) -> list[dict]:
    return [r for r in model.requests if text in json.dumps(r.get("messages", []))]


# -- sessions ---------------------------------------------------------------------------

@pytest.mark.both_backends
def test_second_message_resumes_the_conversation(server, model):
    first = server.chat("my favourite colour is teal", session_id="chat-42")
    assert server.wait(first)["status"] == "completed"
    second = server.chat("ECHO-HISTORY what did I say?", session_id="chat-42")
    doc = server.wait(second)
    assert doc["status"] == "completed" and doc["session_id"] == "chat-42"
    assert "my favourite colour is teal" in doc["result"]["text"]
    # The model really received the first exchange in the second request.
    req = requests_with(model, "ECHO-HISTORY what did I say?")[-1]
    flat = json.dumps(req["messages"])
    assert "my favourite colour is teal" in flat and "ECHO: my favourite colour is teal" in flat
    session = server.get("/sessions/chat-42").json()
    assert [t["task_id"] for t in session["tasks"]] == [first, second]
    assert session["tasks"][0]["result_text"] == "ECHO: my favourite colour is teal"
    listed = server.get("/sessions").json()["sessions"]
    assert listed[0]["session_id"] == "chat-42" and listed[0]["task_count"] == 2
    assert listed[0]["total_cost_usd"] > 0 and listed[0]["last_message"] == "ECHO-HISTORY what did I say?"
    assert listed[0]["first_message"] == "my favourite colour is teal"  # its title


def test_sessions_page_through_with_a_cursor(server, tmp_path: Path):
    """Pages of GET /sessions, newest activity first, each session once, none left out."""
    for name in ("s-a", "s-b", "s-c", "s-d", "s-e"):
        server.wait(server.chat(f"hello from {name}", session_id=name))
    server.wait(server.chat("ECHO-HISTORY back to b", session_id="s-b"))  # s-b is now the most recent
    seen, cursor, pages = [], None, 0
    while True:
        doc = server.get("/sessions", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [s["session_id"] for s in doc["sessions"]]
        pages += 1
        cursor = doc["next_cursor"]
        if cursor is None:
            break
        assert len(doc["sessions"]) == 2
    assert seen == ["s-b", "s-e", "s-d", "s-c", "s-a"] and pages == 3
    whole = server.get("/sessions").json()
    assert [s["session_id"] for s in whole["sessions"]] == seen and whole["next_cursor"] is None
    for bad in ("nonsense", "nan_s-a", "1.5_bad id", "inf_s-a"):
        resp = server.get("/sessions", params={"cursor": bad})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_parameter", bad


def test_config_tells_clients_where_tasks_may_run(make_server, tmp_path: Path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    server = make_server(SCOUT_ALLOWED_ROOTS=f"{first}:{second}", SCOUT_MAX_MESSAGE_BYTES="5000")
    assert server.get("/config").json() == {
        "default_cwd": str(first.resolve()), "allowed_roots": [str(first.resolve()), str(second.resolve())],
        "default_mode": "Scout", "max_message_bytes": 5000}
    task = server.chat("where am I")  # no cwd: the default the config names
    assert server.wait(task)["cwd"] == str(first.resolve())


def test_new_session_without_id_is_generated_and_separate(server):
    a = server.post("/chat", json={"message": "one"}).json()
    b = server.post("/chat", json={"message": "ECHO-HISTORY two"}).json()
    assert a["session_id"] != b["session_id"]
    doc = server.wait(b["task_id"])
    assert "one" not in doc["result"]["text"].replace("two", "")


def test_follow_up_runs_in_the_session_cwd_and_can_move(server, tmp_path: Path):
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    for d in (first_dir, second_dir):
        d.mkdir()
        (d / f"in-{d.name}.txt").write_text(d.name)
    t1 = server.chat("BASH: ls", session_id="cwd-s", cwd=str(first_dir))
    assert "in-first.txt" in server.wait(t1)["result"]["text"]
    t2 = server.chat("BASH: ls", session_id="cwd-s")
    doc2 = server.wait(t2)
    assert doc2["cwd"] == str(first_dir) and "in-first.txt" in doc2["result"]["text"]
    t3 = server.chat("BASH: ls", session_id="cwd-s", cwd=str(second_dir))
    doc3 = server.wait(t3)
    assert doc3["status"] == "completed" and "in-second.txt" in doc3["result"]["text"]
    t4 = server.chat("ECHO-HISTORY where", session_id="cwd-s")
    assert server.wait(t4)["cwd"] == str(second_dir)


@pytest.mark.both_backends
def test_on_busy_queue_reject_interrupt(server):
    running = server.chat("SLOW: 30 0.05 queued-first", session_id="busy")
    server.wait(running, statuses=("running",))
    queued = server.chat("after the first", session_id="busy")
    assert server.status(queued)["status"] == "pending"
    rejected = server.post("/chat", json={"message": "no", "session_id": "busy", "on_busy": "reject"})
    assert rejected.status_code == 409 and rejected.json()["error"]["code"] == "session_busy"
    first_done, second_done = server.wait(running), server.wait(queued)
    assert first_done["status"] == second_done["status"] == "completed"
    assert first_done["finished_at"] <= second_done["started_at"]

    slow = server.chat("SLOW: 300 0.05 to interrupt", session_id="busy")
    server.wait(slow, statuses=("running",))
    interrupting = server.chat("ECHO-HISTORY interrupting", session_id="busy", on_busy="interrupt")
    doc = server.wait(interrupting)
    assert server.status(slow)["status"] == "cancelled"
    assert doc["status"] == "completed" and doc["started_at"] >= server.status(slow)["finished_at"]
    assert tagged_processes(slow) == []


@pytest.mark.both_backends
def test_delete_session(server):
    task_id = server.chat("bye", session_id="gone")
    server.wait(task_id)
    resp = server.delete("/sessions/gone")
    assert resp.json() == {"session_id": "gone", "deleted": True, "tasks_deleted": 1}
    assert server.get("/sessions/gone").status_code == 404
    assert server.get(f"/chat/{task_id}/status").status_code == 404


def test_deleting_a_sessions_last_task_deletes_the_session(server):
    """No empty conversation is left behind (History would show "(no message) · 0 tasks")."""
    first = server.chat("one")
    session_id = server.wait(first)["session_id"]
    second = server.chat("two", session_id=session_id)
    server.wait(second)
    assert server.delete(f"/tasks/{first}").json() == {"task_id": first, "deleted": True, "session_deleted": False}
    assert server.get(f"/sessions/{session_id}").json()["tasks"][0]["task_id"] == second
    assert server.delete(f"/tasks/{second}").json() == {"task_id": second, "deleted": True, "session_deleted": True}
    assert server.get(f"/sessions/{session_id}").status_code == 404
    assert session_id not in [s["session_id"] for s in server.get("/sessions").json()["sessions"]]
    # The id is free again: a message naming it starts a new conversation under it.
    again = server.chat("three", session_id=session_id)
    assert server.wait(again)["status"] == "completed"
    assert [t["message"] for t in server.get(f"/sessions/{session_id}").json()["tasks"]] == ["three"]


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "semi;colon", "ü"])
def test_session_id_is_validated(server, bad):
    resp = server.post("/chat", json={"message": "hi", "session_id": bad})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_field"


# -- modes -------------------------------------------------------------------------------

def tools_sent(model, marker: str) -> set[str]:
    req = requests_with(model, marker)[-1]
    return {t["name"] for t in req.get("tools", [])}


def test_builtin_modes_change_what_claude_code_is_given(server, model):
    modes = server.get("/modes").json()
    assert modes["default"] == "Scout"
    assert {m["name"] for m in modes["modes"]} >= {"Scout", "Plan", "Code"}
    seen = {}
    for mode in ("Scout", "Plan", "Code"):
        task_id = server.chat(f"mode probe {mode}", mode=mode)
        doc = server.wait(task_id)
        assert doc["status"] == "completed" and doc["mode"] == mode
        init = next(e for e in doc["events"] if e["type"] == "system" and e["payload"]["subtype"] == "init")
        seen[mode] = (init["payload"]["permissionMode"], tools_sent(model, f"mode probe {mode}"),
                      json.dumps(requests_with(model, f"mode probe {mode}")[-1].get("system")))
    assert seen["Scout"][0] == "default" and seen["Plan"][0] == "plan" and seen["Code"][0] == "acceptEdits"
    assert "Write" not in seen["Scout"][1] and "Edit" not in seen["Scout"][1]
    assert "Write" in seen["Code"][1] or "Edit" in seen["Code"][1]
    assert "You are Scout" in seen["Scout"][2] and "You are Scout" not in seen["Code"][2]


def test_unknown_mode_is_400_naming_valid_ones(server):
    resp = server.post("/chat", json={"message": "x", "mode": "Wizard"})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "unknown_mode" and "Scout" in err["message"] and "Plan" in err["message"]
    assert server.get("/tasks").json()["tasks"] == []


def test_toml_file_adds_a_mode_and_overrides_apply(make_server, model, tmp_path: Path):
    modes = tmp_path / "modes.toml"
    modes.write_text('[modes.Terse]\ndescription = "Short answers"\nprompt = "TERSE-MODE-MARKER"\n'
                     'allowed_tools = ["Read"]\ndisallowed_tools = ["Bash"]\nmax_turns = 3\n')
    server = make_server(SCOUT_MODES_FILE=str(modes))
    assert "Terse" in {m["name"] for m in server.get("/modes").json()["modes"]}
    task_id = server.chat("terse probe", mode="Terse", append_system_prompt="EXTRA-INSTRUCTION-MARKER")
    assert server.wait(task_id)["status"] == "completed"
    req = requests_with(model, "terse probe")[-1]
    system = json.dumps(req.get("system"))
    assert "TERSE-MODE-MARKER" in system and "EXTRA-INSTRUCTION-MARKER" in system
    assert "Bash" not in tools_sent(model, "terse probe")


def test_request_overrides_are_validated(server):
    for body, field in (({"max_turns": 0}, "max_turns"), ({"max_budget_usd": -1}, "max_budget_usd"),
                        ({"model": "bad model!"}, "model"), ({"allowed_tools": "Bash"}, "allowed_tools")):
        resp = server.post("/chat", json={"message": "x", **body})
        assert resp.status_code == 400 and field in resp.json()["error"]["message"]


def test_max_turns_reached_fails_readably(server, tmp_path: Path):
    task_id = server.chat("BASH: ls", max_turns=1, cwd=str(tmp_path))
    doc = server.wait(task_id)
    assert doc["status"] == "failed" and "turns" in doc["error"]


# -- live text, results, errors ---------------------------------------------------------

def test_deltas_arrive_before_the_whole_message(server):
    task_id = server.chat("SLOW: 8 0.3")  # 2.4 s of deltas: a stalled CLI cannot squeeze them into 0.3 s
    with server.get(f"/chat/{task_id}/stream", stream=True) as resp:
        events = list(read_sse(resp))
    types = [e["event"] for e in events]
    first_delta, whole = types.index("text_delta"), types.index("assistant")
    assert first_delta < whole
    deltas = "".join(e["data"]["payload"]["text"] for e in events if e["event"] == "text_delta")
    assert deltas == events[whole]["data"]["payload"]["text"] == "".join(f"word{i} " for i in range(8))
    assert events[first_delta]["data"]["time"] < events[whole]["data"]["time"] - 0.3


def test_deltas_can_be_turned_off(server):
    task_id = server.chat("no deltas please", stream_deltas=False)
    doc = server.wait(task_id)
    assert doc["status"] == "completed"
    assert "text_delta" not in {e["type"] for e in doc["events"]}
    assert any(e["type"] == "assistant" for e in doc["events"])


@pytest.mark.parametrize("status,words", [(401, "invalid api key"), (529, "overloaded")])
def test_api_errors_end_in_failed_tasks_with_readable_errors(make_server, status, words):
    server = make_server(CLAUDE_CODE_MAX_RETRIES="0")
    task_id = server.chat(f"ERROR: {status}")
    doc = server.wait(task_id, timeout=90)
    assert doc["status"] == "failed"
    assert str(status) in doc["error"] and words in doc["error"].lower(), doc["error"]


# -- approvals ---------------------------------------------------------------------------

@pytest.fixture
def careful(make_server, tmp_path: Path):
    modes = tmp_path / "modes.toml"
    modes.write_text('[modes.Careful]\ndescription = "Asks before writing"\n'
                     'allowed_tools = ["Read"]\napproval_tools = ["Write"]\n')
    return make_server(SCOUT_MODES_FILE=str(modes), SCOUT_APPROVAL_TIMEOUT="4")


def write_prompt(path: Path) -> str:
    return "TOOL: Write " + json.dumps({"file_path": str(path), "content": "approved content"})


def wait_waiting(server, task_id: str) -> dict:
    doc = server.wait(task_id, statuses=("waiting", "completed", "failed", "cancelled"))
    assert doc["status"] == "waiting", doc
    return next(e for e in doc["events"] if e["type"] == "approval_request")


def test_waiting_and_its_request_are_logged_together(tmp_path: Path):
    """Whoever reads "waiting" finds the approval_request too: one transaction writes both."""
    store = Store(str(tmp_path / "unit.db"))
    asked, stopping = (store.create_task("m", {}) for _ in range(2))
    for task in (asked, stopping):
        store.transition(task.id, "running")
    store.request_stop(stopping.id)
    for task in (asked, stopping):
        store.ask_approval(task.id, "tu1", "Write", {"file_path": "x"}, {"tool_use_id": "tu1", "tool": "Write"})
    tail = [(e.type, e.payload.get("status")) for e in store.events_after(asked.id)][-2:]
    assert store.get_task(asked.id).status == "waiting"
    assert tail == [("status", "waiting"), ("approval_request", None)]
    assert store.get_task(stopping.id).status == "running"  # a stop is on its way: no waiting
    assert store.events_after(stopping.id)[-1].type == "approval_request"
    assert [a["tool_use_id"] for a in store.open_approvals(asked.id)] == ["tu1"]


def test_approval_allow_runs_the_tool(careful, tmp_path: Path):
    target = tmp_path / "allowed.txt"
    task_id = careful.chat(write_prompt(target), mode="Careful", cwd=str(tmp_path))
    request = wait_waiting(careful, task_id)
    assert request["payload"]["tool"] == "Write"
    assert request["payload"]["input"]["file_path"] == str(target)
    resp = careful.post(f"/chat/{task_id}/approve", json={"decision": "allow", "reason": "fine"})
    assert resp.status_code == 200 and resp.json()["decision"] == "allow"
    doc = careful.wait(task_id)
    assert doc["status"] == "completed"
    assert target.read_text() == "approved content"
    result = next(e for e in doc["events"] if e["type"] == "tool_result")
    assert not result["payload"]["is_error"]
    statuses = [e["payload"]["status"] for e in doc["events"] if e["type"] == "status"]
    assert statuses == ["pending", "running", "waiting", "running", "completed"]


def test_approval_deny_does_not_run_the_tool(careful, tmp_path: Path):
    target = tmp_path / "denied.txt"
    task_id = careful.chat(write_prompt(target), mode="Careful", cwd=str(tmp_path))
    wait_waiting(careful, task_id)
    careful.post(f"/chat/{task_id}/approve", json={"decision": "deny", "reason": "not today"})
    doc = careful.wait(task_id)
    assert not target.exists()
    result = next(e for e in doc["events"] if e["type"] == "tool_result")
    assert result["payload"]["is_error"] and "not today" in result["payload"]["content"]


def test_approval_timeout_denies(careful, tmp_path: Path):
    target = tmp_path / "timeout.txt"
    task_id = careful.chat(write_prompt(target), mode="Careful", cwd=str(tmp_path))
    wait_waiting(careful, task_id)
    doc = careful.wait(task_id, timeout=60)
    assert not target.exists()
    approval = next(e for e in doc["events"] if e["type"] == "approval")
    assert approval["payload"]["decision"] == "deny" and "no answer" in approval["payload"]["reason"]


def test_stop_while_waiting_and_bad_approvals(careful, tmp_path: Path):
    task_id = careful.chat(write_prompt(tmp_path / "never.txt"), mode="Careful", cwd=str(tmp_path))
    wait_waiting(careful, task_id)
    bad = careful.post(f"/chat/{task_id}/approve", json={"decision": "maybe"})
    assert bad.status_code == 400
    assert careful.post(f"/chat/{task_id}/stop").json()["status"] == "cancelled"
    assert tagged_processes(task_id) == []
    late = careful.post(f"/chat/{task_id}/approve", json={"decision": "allow"})
    assert late.status_code == 409


@pytest.fixture
def bash_modes(make_server, tmp_path: Path):
    """Two modes that ask before Bash: one for every use, one that lets Claude Code
    approve the commands it takes for read-only (auto_approve_read_only)."""
    modes = tmp_path / "modes.toml"
    modes.write_text('[modes.Careful]\nallowed_tools = ["Read"]\napproval_tools = ["Bash"]\n\n'
                     '[modes.Trusting]\nallowed_tools = ["Read"]\napproval_tools = ["Bash"]\n'
                     'auto_approve_read_only = true\n')
    return make_server(SCOUT_MODES_FILE=str(modes), SCOUT_APPROVAL_TIMEOUT="30")


def test_approval_tools_ask_for_read_only_commands_too(bash_modes, tmp_path: Path):
    """`ls` is read-only to Claude Code, which would run it unasked; Scout asks anyway."""
    (tmp_path / "marker.txt").write_text("x")
    task_id = bash_modes.chat("BASH: ls -1", mode="Careful", cwd=str(tmp_path))
    request = wait_waiting(bash_modes, task_id)
    assert request["payload"]["tool"] == "Bash" and request["payload"]["input"]["command"] == "ls -1"
    bash_modes.post(f"/chat/{task_id}/approve", json={"decision": "allow"})
    doc = bash_modes.wait(task_id)
    assert doc["status"] == "completed"
    result = next(e for e in doc["events"] if e["type"] == "tool_result")
    assert "marker.txt" in result["payload"]["content"]


def test_auto_approve_read_only_lets_claude_code_decide(bash_modes, tmp_path: Path):
    task_id = bash_modes.chat("BASH: ls -1", mode="Trusting", cwd=str(tmp_path))
    doc = bash_modes.wait(task_id)
    assert doc["status"] == "completed"
    assert not [e for e in doc["events"] if e["type"] == "approval_request"]
    # A command that changes things is still asked.
    task_id = bash_modes.chat(f"BASH: touch {tmp_path / 'made'}", mode="Trusting", cwd=str(tmp_path))
    request = wait_waiting(bash_modes, task_id)
    assert request["payload"]["input"]["command"].startswith("touch")
    bash_modes.post(f"/chat/{task_id}/approve", json={"decision": "deny"})
    assert bash_modes.wait(task_id)["status"] == "completed" and not (tmp_path / "made").exists()
