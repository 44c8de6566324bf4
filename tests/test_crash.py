"""Nothing lost: crashes of the server, a worker or the CLI, with real processes and signals."""
from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, processes_matching, tagged_processes, wait_for
from scout import store as store_mod
from scout.store import Store

FAKE_CLAUDE = str(ROOT / "tests" / "fake_claude.py")


def events_ok(doc: dict) -> None:
    seqs = [e["seq"] for e in doc["events"]]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.both_backends
def test_server_sigkill_then_restart_adopts_running_tasks(make_server):
    server = make_server()
    ids = [server.chat(f"SLOW: 40 0.3 adopt {i}") for i in range(3)]  # long enough to outlive the crash
    keep = server.chat("SLOW: 400 0.1 to be stopped after adoption")
    for task_id in ids + [keep]:
        server.wait(task_id, statuses=("running",))
    wait_for(lambda: all(any(e["type"] == "text_delta" for e in server.status(t)["events"])
                         for t in ids + [keep]), what="first deltas")
    pids = {t: server.status(t)["worker_pid"] for t in ids + [keep]}
    server.kill()

    time.sleep(0.5)  # the workers go on writing while no server runs
    for task_id, pid in pids.items():
        assert psutil.pid_exists(pid), "a worker died with the server"

    again = make_server(start=False)
    again.env = server.env
    again.start()
    for task_id in ids:
        doc = again.wait(task_id, timeout=90)
        assert doc["status"] == "completed", doc
        events_ok(doc)
        deltas = [e for e in doc["events"] if e["type"] == "text_delta"]
        assert "".join(d["payload"]["text"] for d in deltas).split() == [f"word{i}" for i in range(40)]
    assert again.status(keep)["status"] == "running"
    resp = again.post(f"/chat/{keep}/stop")
    assert resp.json()["status"] == "cancelled"
    assert tagged_processes(keep) == []
    for task_id in ids:  # these ended by themselves: their CLIs may still be on their way out
        wait_for(lambda: not tagged_processes(task_id), 10, "the finished tasks' processes to go")


def test_sigkilled_adopted_worker_fails_and_its_tree_goes(make_server, tmp_path: Path):
    server = make_server()
    marker = f"adopted-{time.time_ns()}"
    task_id = server.chat(f"BASH: python3 -c 'import time; time.sleep(300)' # {marker}", cwd=str(tmp_path))
    wait_for(lambda: processes_matching(marker), 60, "the long command")
    server.kill()
    again = make_server(start=False)
    again.env = server.env
    again.start()
    assert again.status(task_id)["status"] == "running"  # adopted
    leader = psutil.Process(again.status(task_id)["worker_pid"])
    killed_at = time.time()
    leader.kill()
    doc = again.wait(task_id, timeout=10)
    # Its real end, as the zygote it still belongs to saw it (not "worker lost").
    assert doc["status"] == "failed" and doc["error"].startswith("the worker was killed by SIGKILL"), doc["error"]
    assert doc["finished_at"] - killed_at < 1.5
    wait_for(lambda: not processes_matching(marker), 5, "the long command to go")
    wait_for(lambda: not tagged_processes(task_id), 5, "every process of the task to go")


@pytest.mark.parametrize("victim", ["leader", "sdk-worker"])
def test_sigkilled_worker_fails_fast_and_leaves_nothing(server, tmp_path: Path, victim: str):
    marker = f"sigkill-{victim}-{time.time_ns()}"
    task_id = server.chat(f"BASH: python3 -c 'import time; time.sleep(300)' # {marker}", cwd=str(tmp_path))
    wait_for(lambda: processes_matching(marker), 60, "the long command")
    leader = psutil.Process(server.status(task_id)["worker_pid"])
    target = leader if victim == "leader" else leader.children()[0]
    killed_at = time.time()
    target.kill()
    doc = server.wait(task_id, timeout=10)
    assert doc["status"] == "failed"
    assert doc["finished_at"] - killed_at < 1.0
    assert "SIGKILL" in doc["error"]
    wait_for(lambda: not processes_matching(marker), 5, "the long command to go")
    wait_for(lambda: not tagged_processes(task_id), 5, "every process of the task to go")


@pytest.mark.parametrize("mode,expect", [
    ("crash", "exit"),
    ("garbage", "without a result"),
    ("badjson", "JSON"),
    ("hang", "idle timeout"),
])
def test_broken_claude_cli_fails_with_readable_error(make_server, mode: str, expect: str):
    # Only the hang needs a short idle limit; on the others it could fire first on a slow start.
    idle = {"SCOUT_IDLE_TIMEOUT": "2"} if mode == "hang" else {}
    server = make_server(SCOUT_CLAUDE_PATH=FAKE_CLAUDE, FAKE_CLAUDE_MODE=mode,
                         SCOUT_WORKER_ENV="FAKE_CLAUDE_MODE", **idle)
    task_id = server.chat("anything")
    doc = server.wait(task_id, timeout=30)
    assert doc["status"] == "failed", doc
    assert expect.lower() in doc["error"].lower(), doc["error"]
    wait_for(lambda: not tagged_processes(task_id), 5, "the fake CLI to go")


def test_hard_time_limit(make_server):
    server = make_server(SCOUT_TASK_TIMEOUT="2")
    task_id = server.chat("SLOW: 100 0.1")
    doc = server.wait(task_id, timeout=30)
    assert doc["status"] == "failed" and "time limit" in doc["error"]
    assert tagged_processes(task_id) == []


def _writer(db: str, task_id: str, n: int, shared: str) -> None:
    store = Store(db, migrate=False)
    for i in range(n):
        store.append_event(task_id, "assistant", {"text": f"{task_id}:{i}"})
        store.append_event(shared, "assistant", {"text": f"{task_id}:{i}"})
    store.close()


def test_twenty_concurrent_writers_lose_nothing(tmp_path: Path):
    db = str(tmp_path / "w.db")
    store = Store(db)
    tasks = [store.create_task(f"t{i}", {}).id for i in range(20)]
    shared = store.create_task("shared", {}).id
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, t, 100, shared)) for t in tasks]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    for t in tasks:
        events = list(store.iter_events(t))
        assert [e.seq for e in events] == list(range(1, 102))
        assert [e.payload["text"] for e in events[1:]] == [f"{t}:{i}" for i in range(100)]
    shared_events = list(store.iter_events(shared))
    assert [e.seq for e in shared_events] == list(range(1, 2002))
    texts = [e.payload["text"] for e in shared_events[1:]]
    assert len(set(texts)) == 2000


def test_older_schema_migrates(tmp_path: Path):
    db = str(tmp_path / "old.db")
    conn = sqlite3.connect(db)
    for statement in store_mod._split_sql(store_mod._MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO sessions VALUES ('s1', NULL, '/tmp', 1.0, 1.0)")
    conn.execute("INSERT INTO tasks (id, session_id, status, message, options, created_at)"
                 " VALUES ('11111111-1111-1111-1111-111111111111', 's1', 'completed', 'old', '{}', 1.0)")
    conn.commit()
    conn.close()
    store = Store(db)
    assert store.schema_version() == store_mod.SCHEMA_VERSION
    assert store.get_task("11111111-1111-1111-1111-111111111111").message == "old"
    store.ask_approval("11111111-1111-1111-1111-111111111111", "tu1", "Write", {}, {"tool": "Write"})
    assert store.open_approvals("11111111-1111-1111-1111-111111111111")[0]["tool"] == "Write"


def test_newer_schema_is_refused(tmp_path: Path, scout_env):
    db = tmp_path / "new.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    env = {**scout_env, "SCOUT_DB": str(db), "SCOUT_PORT": "0"}
    out = subprocess.run([sys.executable, "-m", "scout.server"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "newer than this Scout" in out.stderr


def test_full_database_fails_task_clearly_and_server_stays_up(make_server):
    server = make_server(SCOUT_DB_MAX_MB="1")
    filler = "x" * 60_000
    outcomes = []
    for i in range(40):  # fill the capped database through the API itself
        resp = server.post("/chat", json={"message": f"{filler} {i}", "mode": "Plan"})
        outcomes.append(resp.status_code)
        if resp.status_code != 202:
            break
    assert outcomes[-1] == 503, outcomes
    body = resp.json()
    assert body["error"]["code"] == "database_unavailable" and "full" in body["error"]["message"]
    health = server.get("/health")
    assert health.status_code == 503
    assert health.json()["database"]["ok"] is False and "full" in health.json()["database"]["error"]
    # The tasks that got in run into the same full disk: each ends in a true, readable state.
    for task in server.get("/tasks?limit=100").json()["tasks"]:
        doc = server.wait(task["task_id"], timeout=120)
        assert doc["status"] in ("completed", "failed"), doc
        if doc["status"] == "failed":
            assert doc["error"]


@pytest.mark.both_backends
def test_stop_then_continue_in_one_session(server, model):
    first = server.chat("SLOW: 200 0.05 first question", session_id="conv-1")
    wait_for(lambda: any(e["type"] == "text_delta" for e in server.status(first)["events"]), 30, "deltas")
    assert server.post(f"/chat/{first}/stop").json()["status"] == "cancelled"
    second = server.chat("ECHO-HISTORY second question", session_id="conv-1")
    doc = server.wait(second)
    assert doc["status"] == "completed", doc
    assert "first question" in doc["result"]["text"] and "second question" in doc["result"]["text"]


def test_reused_pid_is_not_adopted(make_server, tmp_path: Path):
    """A 'running' task whose recorded pid now belongs to another process fails; that process lives."""
    server = make_server()
    task_id = server.chat("SLOW: 300 0.1")
    server.wait(task_id, statuses=("running",))
    server.kill()
    for proc in tagged_processes(task_id):
        proc.kill()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        conn = sqlite3.connect(server.db)
        conn.execute("UPDATE tasks SET worker_pid = ? WHERE id = ?", (stranger.pid, task_id))
        conn.commit()
        conn.close()
        again = make_server(start=False)
        again.env = server.env
        again.start()
        doc = again.status(task_id)
        assert doc["status"] == "failed" and "worker lost" in doc["error"]
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("mode", ["detach", "cancel"])
def test_graceful_shutdown_modes(make_server, mode: str):
    server = make_server(SCOUT_SHUTDOWN=mode)
    task_id = server.chat("SLOW: 150 0.1")  # outlives a stop and a start on a loaded machine
    server.wait(task_id, statuses=("running",))
    assert server.stop(signal.SIGTERM) == 0
    again = make_server(start=False)
    again.env = server.env
    again.start()
    if mode == "detach":
        assert again.status(task_id)["status"] == "running"
        doc = again.wait(task_id, timeout=60)
        assert doc["status"] == "completed"
        events_ok(doc)
    else:
        doc = again.status(task_id)
        assert doc["status"] == "cancelled"
        assert tagged_processes(task_id) == []
