"""Warm sessions (SCOUT_SESSION_IDLE): a conversation's Claude Code stays alive between turns.

Real CLI, real SDK, scripted model. The rules a warm process follows (which options it
can take, the process state machine) have fast tests in test_taskspec.py and
test_supervisor_states.py; these check what only the real processes show.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import tagged_processes, wait_for

WARM = {"SCOUT_SESSION_IDLE": "60"}


def claude_pids(run_id: str) -> set[int]:
    """The Claude Code CLI processes of a process tree (tagged with the task it started for)."""
    out = set()
    for proc in tagged_processes(run_id):
        try:
            if os.path.basename(proc.cmdline()[0]) == "claude":
                out.add(proc.pid)
        except (psutil.Error, IndexError):
            continue
    return out


def warm_idle(server: Any) -> int:
    return server.get("/health").json()["warm"]["idle"]


def converse(server: Any, session: str, messages: list[str], **fields: Any) -> list[dict[str, Any]]:
    docs = []
    for text in messages:
        doc = server.wait(server.chat(text, session_id=session, **fields))
        assert doc["status"] == "completed", doc
        docs.append(doc)
    return docs


def warm_session(server: Any, session: str, messages: list[str], **fields: Any) -> dict[str, Any]:
    """Start a conversation and wait until its Claude Code waits, warm; its first task's document."""
    first = converse(server, session, messages, **fields)[0]
    wait_for(lambda: warm_idle(server) == 1, 10, "the session to be warm")
    return first


def test_three_turns_run_in_one_claude_code_process(make_server: Any, model: Any) -> None:
    server = make_server(**WARM)
    first = server.wait(server.chat("my name is Ada", session_id="w1"))
    assert first["status"] == "completed" and first["warm"] is False
    run_id = first["task_id"]
    cli = wait_for(lambda: claude_pids(run_id), 10, "the warm CLI")
    wait_for(lambda: warm_idle(server) == 1, 10, "the session to be warm")
    second, third = converse(server, "w1", ["I like tea", "ECHO-HISTORY what do you know?"])
    assert second["warm"] and third["warm"]
    assert first["worker_pid"] == second["worker_pid"] == third["worker_pid"]
    assert claude_pids(run_id) == cli  # the very same Claude Code, no new one
    # The model saw the whole conversation in the third turn's request.
    assert third["result"]["text"] == "my name is Ada | I like tea | ECHO-HISTORY what do you know?"
    metrics = server.get("/metrics").text
    assert "scout_warm_sessions 1.0" in metrics


def test_a_follow_up_with_another_cwd_starts_cold(make_server: Any, tmp_path: Path) -> None:
    server = make_server(**WARM)
    other = tmp_path / "elsewhere"
    other.mkdir()
    first = warm_session(server, "w2", ["hello"])
    old_cli = claude_pids(first["task_id"])
    second = converse(server, "w2", ["ECHO-HISTORY and now?"], cwd=str(other))[0]
    assert second["warm"] is False and second["worker_pid"] != first["worker_pid"]
    assert second["result"]["text"] == "hello | ECHO-HISTORY and now?"  # resumed, cold
    wait_for(lambda: not claude_pids(first["task_id"]), 10, "the old warm process to end")
    assert old_cli and not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                               for p in old_cli)


def test_a_model_change_is_applied_in_the_warm_process(make_server: Any, model: Any) -> None:
    server = make_server(**WARM)
    first = warm_session(server, "w3", ["hi"])
    second = converse(server, "w3", ["again"], model="claude-other-model")[0]
    assert second["warm"] and second["worker_pid"] == first["worker_pid"]
    asked = [r.get("model") for r in model.requests if "again" in json.dumps(r.get("messages", []))]
    assert asked and asked[-1] == "claude-other-model"


def test_idle_expiry_ends_the_process_and_the_next_turn_starts_cold(make_server: Any) -> None:
    server = make_server(SCOUT_SESSION_IDLE="2")
    first = warm_session(server, "w4", ["remember 42"])
    assert tagged_processes(first["task_id"])
    wait_for(lambda: not tagged_processes(first["task_id"]), 15, "the idle process to end")
    wait_for(lambda: warm_idle(server) == 0, 5, "the server to forget it")
    second = converse(server, "w4", ["ECHO-HISTORY and?"])[0]
    assert second["warm"] is False and second["result"]["text"] == "remember 42 | ECHO-HISTORY and?"


def test_the_least_recently_used_warm_session_is_evicted(make_server: Any) -> None:
    server = make_server(SCOUT_SESSION_IDLE="60", SCOUT_MAX_WARM="1")
    a = warm_session(server, "lru-a", ["one"])
    b = converse(server, "lru-b", ["two"])[0]
    wait_for(lambda: not tagged_processes(a["task_id"]), 15, "a's process to be evicted")
    assert tagged_processes(b["task_id"]) and warm_idle(server) == 1
    again = converse(server, "lru-a", ["ECHO-HISTORY a again"])[0]
    assert again["warm"] is False and again["result"]["text"] == "one | ECHO-HISTORY a again"


def test_interrupt_keeps_the_process_and_the_next_turn_runs_in_it(make_server: Any) -> None:
    server = make_server(**WARM)
    first = warm_session(server, "w5", ["start"])
    slow = server.chat("SLOW: 200 0.1", session_id="w5")
    server.wait(slow, statuses=("running",))
    wait_for(lambda: any(e["type"] == "text_delta" for e in server.status(slow)["events"]), 20, "the slow reply")
    follow = server.chat("ECHO-HISTORY after the interrupt", session_id="w5", on_busy="interrupt")
    interrupted = server.wait(slow)
    assert interrupted["status"] == "cancelled" and interrupted["warm"]
    done = server.wait(follow)
    assert done["status"] == "completed" and done["warm"], done
    assert done["worker_pid"] == first["worker_pid"]
    assert done["result"]["text"].startswith("start | SLOW: 200 0.1")


def test_stop_kills_the_warm_process_and_the_next_turn_runs_cold(make_server: Any) -> None:
    server = make_server(**WARM)
    first = warm_session(server, "w6", ["before"])
    slow = server.chat("SLOW: 200 0.1", session_id="w6")
    server.wait(slow, statuses=("running",))
    assert server.post(f"/chat/{slow}/stop").json()["status"] == "cancelled"
    assert not tagged_processes(first["task_id"])  # the whole tree, Claude Code included
    assert warm_idle(server) == 0
    after = converse(server, "w6", ["ECHO-HISTORY after"])[0]
    assert after["warm"] is False and after["worker_pid"] != first["worker_pid"]
    assert after["result"]["text"].startswith("before | ")


def test_a_warm_worker_that_does_not_answer_is_ended_and_the_task_runs_cold(make_server: Any) -> None:
    """A hand-over the worker does not take within its time (here: the worker is stopped with
    SIGSTOP) ends the warm process, and the task runs cold, once, with the history."""
    server = make_server(**WARM)
    first = warm_session(server, "w12", ["frozen?"])
    title = f"scout: worker {first['task_id']}"
    worker = next(p for p in tagged_processes(first["task_id"]) if p.cmdline()[:1] == [title])
    worker.send_signal(signal.SIGSTOP)
    doc = server.wait(server.chat("ECHO-HISTORY thawed", session_id="w12"), timeout=90)
    assert doc["status"] == "completed" and doc["warm"] is False, doc
    assert doc["result"]["text"] == "frozen? | ECHO-HISTORY thawed"
    assert not tagged_processes(first["task_id"])  # the stopped tree was killed, not left
    starts = [e for e in server.status(doc["task_id"])["events"]
              if e["type"] == "system" and e["payload"].get("subtype") == "init"]
    assert len(starts) == 1  # it ran once


def test_a_killed_warm_worker_only_means_the_next_turn_starts_cold(make_server: Any) -> None:
    server = make_server(**WARM)
    first = warm_session(server, "w13", ["still here"])
    for cli in claude_pids(first["task_id"]):
        os.kill(cli, signal.SIGKILL)  # Claude Code dies; its worker sees the end of its stream
    wait_for(lambda: not tagged_processes(first["task_id"]), 10, "the rest of the warm tree to end")
    wait_for(lambda: warm_idle(server) == 0, 5, "the server to forget it")
    doc = converse(server, "w13", ["ECHO-HISTORY after the kill"])[0]
    assert doc["warm"] is False and doc["result"]["text"] == "still here | ECHO-HISTORY after the kill"
    assert server.status(first["task_id"])["status"] == "completed"  # the finished task stays as it was


def test_retention_that_deletes_the_session_ends_its_warm_process(make_server: Any) -> None:
    server = make_server(**WARM)
    first = warm_session(server, "w14", ["old news"])
    assert server.post("/admin/prune", json={"older_than_days": 0}).json()["deleted_sessions"] == 1
    wait_for(lambda: not tagged_processes(first["task_id"]), 10, "the warm process to end")
    assert warm_idle(server) == 0


def test_a_worktree_session_runs_warm_and_discard_ends_it(make_server: Any, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "T"], ["config", "user.email", "t@x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (repo / "a.txt").write_text("one\n")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=repo, check=True)
    server = make_server(**WARM)
    first = warm_session(server, "wt", ["BASH: echo two >> a.txt"], mode="Code", cwd=str(repo))
    second = converse(server, "wt", ["BASH: cat a.txt"], mode="Code", cwd=str(repo))[0]
    assert second["warm"] and second["worker_pid"] == first["worker_pid"]
    assert second["workspace"]["path"] == first["workspace"]["path"]
    output = [e["payload"]["content"] for e in server.status(second["task_id"])["events"] if e["type"] == "tool_result"]
    assert output and "one\ntwo" in output[0]  # the first turn's edit, in the same worktree
    wait_for(lambda: warm_idle(server) == 1, 10, "the session to be warm again")
    assert server.post("/sessions/wt/discard").status_code == 200
    wait_for(lambda: not tagged_processes(first["task_id"]), 10, "the warm process to end")


def test_deleting_the_session_ends_its_warm_process(make_server: Any) -> None:
    server = make_server(**WARM)
    first = warm_session(server, "w7", ["bye"])
    assert server.delete("/sessions/w7").status_code == 200
    wait_for(lambda: not tagged_processes(first["task_id"]), 10, "the warm process to end")
    assert warm_idle(server) == 0


def test_server_sigkill_with_a_warm_session_then_restart(make_server: Any) -> None:
    """The warm worker outlives the crash, says hello to the next server, is adopted, and the
    conversation goes on in it; nothing is orphaned and nothing is left a zombie."""
    server = make_server(**WARM)
    first = warm_session(server, "w8", ["I was here first"])
    cli = claude_pids(first["task_id"])
    server.kill()
    again = make_server(**WARM)
    wait_for(lambda: warm_idle(again) == 1, 15, "the next server to adopt the warm worker")
    second = converse(again, "w8", ["ECHO-HISTORY still there?"])[0]
    assert second["warm"] and second["worker_pid"] == first["worker_pid"]
    assert claude_pids(first["task_id"]) == cli
    assert second["result"]["text"] == "I was here first | ECHO-HISTORY still there?"
    for proc in tagged_processes(first["task_id"]):
        assert proc.ppid() != 1  # still in Scout's tree (the zygote's), not init's
    zygote = psutil.Process(psutil.Process(first["worker_pid"]).ppid())
    assert again.delete("/sessions/w8").status_code == 200  # the adopted process ends as any other
    wait_for(lambda: not tagged_processes(first["task_id"]), 10, "the adopted warm process to end")
    wait_for(lambda: not [c for c in zygote.children() if c.status() == psutil.STATUS_ZOMBIE], 5,
             "the zygote to reap it (no zombie left)")


def test_shutdown_cancel_ends_warm_sessions_and_detach_keeps_them(make_server: Any) -> None:
    server = make_server(SCOUT_SESSION_IDLE="60", SCOUT_SHUTDOWN="cancel")
    first = warm_session(server, "w9", ["cancel me"])
    assert server.stop(signal.SIGTERM) == 0
    wait_for(lambda: not tagged_processes(first["task_id"]), 10, "the warm process to end")
    detach = make_server(SCOUT_SESSION_IDLE="60", SCOUT_SHUTDOWN="detach")
    kept = warm_session(detach, "w10", ["keep me"])
    detach.stop(signal.SIGTERM)
    time.sleep(0.5)
    assert claude_pids(kept["task_id"])  # left to be adopted by the next server
    again = make_server(SCOUT_SESSION_IDLE="60")
    wait_for(lambda: warm_idle(again) == 1, 15, "the next server to adopt it")


@pytest.mark.parametrize("idle", ["0"])
def test_warm_sessions_off_every_task_runs_cold(make_server: Any, idle: str) -> None:
    server = make_server(SCOUT_SESSION_IDLE=idle)
    first, second = converse(server, "w11", ["one", "ECHO-HISTORY two"])
    assert not first["warm"] and not second["warm"] and first["worker_pid"] != second["worker_pid"]
    assert not tagged_processes(first["task_id"]) and warm_idle(server) == 0
