"""Worktrees end to end: real Scout servers, the real Claude Code CLI against the scripted
model (`BASH: <cmd>` makes it edit files), and real git repositories in temp folders."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import ScoutServer, wait_for
from test_workspace import branches, fingerprint, sh


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "sub").mkdir(parents=True)
    sh(r, "init", "-q", "-b", "main")
    sh(r, "config", "user.name", "Tester")
    sh(r, "config", "user.email", "t@example.com")
    (r / "a.txt").write_text("one\ntwo\nthree\n")
    (r / "sub" / "b.txt").write_text("b\n")
    sh(r, "add", ".")
    sh(r, "commit", "-q", "-m", "init")
    return r


def edit(server: ScoutServer, repo: Path, command: str, **fields: Any) -> dict[str, Any]:
    """A Code task that runs one Bash command, waited for."""
    task_id = server.chat(f"BASH: {command}", mode="Code", cwd=str(fields.pop("cwd", repo)), **fields)
    doc = server.wait(task_id, timeout=120)
    assert doc["status"] == "completed", doc
    return doc


def changes_event(doc: dict[str, Any]) -> dict[str, Any]:
    found = [e for e in doc["events"] if e["type"] == "changes"]
    assert len(found) == 1, [e["type"] for e in doc["events"]]
    last_status = max(e["seq"] for e in doc["events"] if e["type"] == "status")
    assert found[0]["seq"] < last_status  # logged before the ending, so streams see it
    return found[0]["payload"]


def test_two_sessions_edit_one_file_then_merge_conflict_and_discard(make_server: Any, repo: Path) -> None:
    server = make_server()
    before = fingerprint(repo)
    one = server.chat("BASH: printf 'one\\nFIRST\\nthree\\n' > ../a.txt && pwd", mode="Code", cwd=str(repo / "sub"),
                      session_id="one")
    two = server.chat("BASH: printf 'one\\nSECOND\\nthree\\n' > a.txt", mode="Code", cwd=str(repo), session_id="two")
    doc1, doc2 = server.wait(one, timeout=120), server.wait(two, timeout=120)
    assert doc1["status"] == doc2["status"] == "completed", (doc1, doc2)
    ws1 = doc1["workspace"]
    assert ws1["kind"] == "worktree" and ws1["branch"] == "scout/one" and ws1["repo"] == str(repo)
    assert ws1["base_commit"] == sh(repo, "rev-parse", "HEAD") and ws1["target_branch"] == "main"
    assert ws1["path"] != doc2["workspace"]["path"]
    # the task ran in the same relative path inside its worktree
    pwd = [e for e in doc1["events"] if e["type"] == "tool_result"][0]["payload"]["content"]
    assert pwd.strip().endswith(os.path.join(ws1["path"], "sub")), pwd
    assert fingerprint(repo) == before
    for doc, word in ((doc1, "FIRST"), (doc2, "SECOND")):
        event = changes_event(doc)
        assert event == {"files": [{"path": "a.txt", "status": "modified", "additions": 1, "deletions": 1,
                                    "binary": False}], "additions": 1, "deletions": 1}
        session = doc["session_id"]
        body = server.get(f"/sessions/{session}/changes").json()
        assert [f["path"] for f in body["files"]] == ["a.txt"] and body["workspace"]["kind"] == "worktree"
        patch = server.get(f"/sessions/{session}/changes?format=patch")
        assert patch.headers["Content-Type"].startswith("text/x-diff")
        assert f"+{word}" in patch.text and "-two" in patch.text
        other = "SECOND" if word == "FIRST" else "FIRST"
        assert other not in patch.text
        assert f"+{word}" in requests.get(f"{server.url}/sessions/{session}/changes",
                                             headers={"Accept": "text/x-diff"}, timeout=30).text
    session_doc = server.get("/sessions/one").json()
    assert session_doc["workspace"]["path"] == ws1["path"]

    merged = server.post("/sessions/one/merge", json={})
    assert merged.status_code == 200, merged.text
    assert merged.json()["merged"] is True and merged.json()["commit"] == sh(repo, "rev-parse", "main")
    assert [f["path"] for f in merged.json()["files"]] == ["a.txt"]
    assert (repo / "a.txt").read_text() == "one\nFIRST\nthree\n"
    assert sh(repo, "status", "--porcelain") == ""

    before = fingerprint(repo)
    conflict = server.post("/sessions/two/merge")
    assert conflict.status_code == 409, conflict.text
    err = conflict.json()["error"]
    assert err["code"] == "merge_conflict" and err["paths"] == ["a.txt"]
    assert fingerprint(repo) == before

    # the merged session's changes now count from what was merged
    assert server.get("/sessions/one/changes").json()["files"] == []
    path2 = doc2["workspace"]["path"]
    gone = server.post("/sessions/two/discard")
    assert gone.status_code == 200 and gone.json()["removed"] is True
    assert not os.path.exists(path2) and branches(repo) == ["scout/one"]
    assert server.get("/sessions/two/changes").json()["error"]["code"] == "no_worktree"
    # a later message in that session starts a fresh worktree, from where main is now
    doc3 = edit(server, repo, "cat a.txt", session_id="two")
    assert doc3["workspace"]["base_commit"] == sh(repo, "rev-parse", "main") and os.path.isdir(path2)
    assert "FIRST" in [e for e in doc3["events"] if e["type"] == "tool_result"][0]["payload"]["content"]
    assert changes_event(doc3)["files"] == []
    assert fingerprint(repo) == before


def test_choosing_the_workspace(make_server: Any, repo: Path, tmp_path: Path) -> None:
    server = make_server()
    plain = tmp_path / "plain"
    plain.mkdir()
    resp = server.post("/chat", json={"message": "hi", "mode": "Code", "cwd": str(plain), "workspace": "worktree"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "not_a_git_repo"
    assert server.post("/chat", json={"message": "hi", "workspace": "elsewhere"}).status_code == 400
    assert server.post("/chat", json={"message": "hi", "cwd": str(repo), "workspace": "worktree",
                                      "base": "no-such-ref"}).json()["error"]["code"] == "invalid_base"
    # auto (Code's default) outside git: shared, runs in cwd itself
    doc = edit(server, repo, "echo made > made.txt", cwd=plain)
    assert doc["workspace"] == {"kind": "shared"} and (plain / "made.txt").exists()
    assert not [e for e in doc["events"] if e["type"] == "changes"]
    # Scout mode in a repository is shared: exactly as before
    task = server.chat("BASH: pwd", cwd=str(repo), session_id="scouting")
    doc = server.wait(task, timeout=120)
    assert doc["status"] == "completed" and doc["workspace"] == {"kind": "shared"}
    assert server.get("/sessions/scouting").json()["workspace"] == {"kind": "shared"}
    assert server.get("/sessions/scouting/changes").json()["error"]["code"] == "no_worktree"
    # a session's workspace is fixed by its first task; switching modes keeps it
    resp = server.post("/chat", json={"message": "x", "session_id": "scouting", "workspace": "worktree"})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "workspace_mismatch"
    code_task = server.chat("hello", mode="Code", session_id="scouting")
    assert server.wait(code_task, timeout=120)["workspace"] == {"kind": "shared"}
    # a worktree session refuses a cwd in another repository, and 'base' once it exists
    edit(server, repo, "true", session_id="wt")
    resp = server.post("/chat", json={"message": "x", "session_id": "wt", "cwd": str(plain)})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "workspace_mismatch"
    resp = server.post("/chat", json={"message": "x", "session_id": "wt", "base": "HEAD"})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "workspace_mismatch"


def test_busy_stop_delete_and_a_folder_deleted_by_hand(make_server: Any, repo: Path) -> None:
    server = make_server()
    task = server.chat("BASH: echo started > new.txt && python3 -c 'import time; time.sleep(60)'",
                       mode="Code", cwd=str(repo), session_id="busy")
    wait_for(lambda: any(e["type"] == "tool_use" for e in server.status(task)["events"]), 120, "the tool call")
    path = server.status(task)["workspace"]["path"]
    wait_for(lambda: os.path.exists(os.path.join(path, "new.txt")), 60, "the edit")
    for action in ("merge", "discard"):
        resp = server.post(f"/sessions/busy/{action}")
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "session_busy"
    assert server.post(f"/chat/{task}/stop").json()["status"] == "cancelled"
    doc = server.status(task)
    assert changes_event(doc)["files"][0]["path"] == "new.txt"  # logged by the supervisor's stop

    shutil.rmtree(path)  # by hand
    resp = server.post("/chat", json={"message": "again", "session_id": "busy", "mode": "Code"})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "workspace_missing"
    assert path in resp.json()["error"]["message"]
    assert server.post("/sessions/busy/discard").status_code == 200
    edit(server, repo, "true", session_id="busy")
    assert os.path.isdir(path)

    assert server.delete("/sessions/busy").status_code == 200
    assert not os.path.exists(path) and branches(repo) == []
    # deleting a session's last task deletes the session, and so its worktree
    doc = edit(server, repo, "true", session_id="lasttask")
    assert os.path.isdir(doc["workspace"]["path"])
    assert server.delete(f"/tasks/{doc['task_id']}").json()["session_deleted"] is True
    assert not os.path.exists(doc["workspace"]["path"]) and branches(repo) == []


def test_restart_keeps_worktrees_and_prunes_those_of_deleted_sessions(make_server: Any, repo: Path) -> None:
    from scout.store import Store

    server = make_server()
    kept = edit(server, repo, "echo kept > kept.txt", session_id="kept")["workspace"]["path"]
    lost = edit(server, repo, "echo lost > lost.txt", session_id="lost")["workspace"]["path"]
    server.stop(signal.SIGKILL)
    store = Store(server.db)
    store.delete_session("lost")  # as if deleted while its worktree could not be removed
    store.close()
    server.start()
    assert os.path.isdir(kept) and not os.path.exists(lost)
    assert branches(repo) == ["scout/kept"]
    assert [f["path"] for f in server.get("/sessions/kept/changes").json()["files"]] == ["kept.txt"]
    doc = edit(server, repo, "cat kept.txt", session_id="kept")
    assert doc["workspace"]["path"] == kept


def test_a_server_killed_during_a_worktree_task_adopts_it(make_server: Any, repo: Path) -> None:
    server = make_server()
    task = server.chat("BASH: echo x > during.txt && python3 -c 'import time; time.sleep(4)'",
                       mode="Code", cwd=str(repo), session_id="crash")
    wait_for(lambda: any(e["type"] == "tool_use" for e in server.status(task)["events"]), 120, "the tool call")
    path = server.status(task)["workspace"]["path"]
    server.stop(signal.SIGKILL)
    server.start()
    doc = server.wait(task, timeout=120)
    assert doc["status"] == "completed", doc
    assert os.path.isdir(path) and changes_event(doc)["files"][0]["path"] == "during.txt"
    assert subprocess.run(["git", "-C", path, "status", "--porcelain"], capture_output=True, text=True,
                          check=True).stdout.strip() == "?? during.txt"


def test_cli_ask_changes_merge_discard(make_server: Any, repo: Path, tmp_path: Path) -> None:
    from test_cli import run_cli

    server = make_server()
    res = run_cli("ask", "BASH: printf 'one\\ncli\\nthree\\n' > a.txt && echo new > n.txt", "--mode", "Code",
                  "--cwd", str(repo), server=server, cwd=tmp_path, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "📝 2 files changed, +2 −1" in res.stdout
    session = res.stdout.split(" · session ")[1].split()[0]
    res = run_cli("changes", session[:8], server=server, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert f"scout/{session} in " in lines[0] and any(x.startswith("M  a.txt") and "+1 −1" in x for x in lines)
    assert any(x.startswith("A  n.txt") for x in lines) and lines[-1].startswith("2 files changed, +2 −1 since ")
    patch = run_cli("changes", session, "--patch", server=server, cwd=tmp_path).stdout
    assert "+cli" in patch and "diff --git a/n.txt b/n.txt" in patch
    (repo / "a.txt").write_text("dirty\n")
    res = run_cli("merge", session, server=server, cwd=tmp_path)
    assert res.returncode == 2 and "uncommitted changes to tracked files: a.txt" in res.stderr
    sh(repo, "checkout", "-q", "a.txt")
    res = run_cli("merge", session, "-m", "From the CLI", server=server, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "merged into main" in res.stdout and "2 files changed" in res.stdout
    assert sh(repo, "log", "-1", "--format=%s", "main") == "From the CLI"
    res = run_cli("discard", session, "--yes", server=server, cwd=tmp_path)
    assert res.returncode == 0 and f"discarded the worktree of session {session}" in res.stdout
    assert branches(repo) == []
