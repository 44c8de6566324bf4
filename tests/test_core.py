"""The task API on the event log, end to end: real server, real CLI, scripted model."""
from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from conftest import processes_matching, read_sse, tagged_processes
from scout import proctree, worker
from scout.taskspec import WorkerSpec
from scout.store import Store

LONG_COMMAND = "python3 -c 'import time; time.sleep(300)' # scout-long-{}"


def assert_gap_free(events: list[dict]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs


@pytest.mark.both_backends
def test_seed_example_session(server, tmp_path: Path):
    """The seed contract's curl session: start, status, stream, stop, delete."""
    resp = server.post("/chat", json={"message": "List files in current directory"})
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "pending" and body["task_id"] and body["session_id"]
    task_id = body["task_id"]

    status = server.status(task_id)
    assert set(status) >= {"task_id", "status", "events", "error"}
    assert status["status"] in ("pending", "running", "completed")

    with server.get(f"/chat/{task_id}/stream", stream=True) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        events = list(read_sse(stream))
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "completed"
    assert [int(e["id"]) for e in events[:-1]] == list(range(1, len(events)))

    done = server.status(task_id)
    assert done["status"] == "completed" and done["error"] is None
    assert done["result"]["text"] == "ECHO: List files in current directory"
    assert done["result"]["num_turns"] == 1 and done["result"]["total_cost_usd"] > 0
    assert done["result"]["usage"]["output_tokens"] > 0
    assert done["started_at"] >= done["created_at"] and done["finished_at"] >= done["started_at"]

    stop = server.post(f"/chat/{task_id}/stop")
    assert stop.status_code == 200
    assert stop.json()["status"] == "completed" and stop.json()["stopped"] is False

    tasks = server.get("/tasks").json()["tasks"]
    assert [t["task_id"] for t in tasks] == [task_id]
    assert "events" not in tasks[0]

    deleted = server.delete(f"/tasks/{task_id}").json()
    assert deleted == {"task_id": task_id, "deleted": True, "session_deleted": True}
    assert server.get(f"/chat/{task_id}/status").status_code == 404
    assert server.get(f"/chat/{task_id}/stream").status_code == 404
    health = server.get("/health").json()
    assert health["status"] == "ok"
    assert health["claude"]["version"] and not health["claude"]["missing"]


def test_tool_using_task_logs_call_and_real_result(server, tmp_path: Path):
    work = tmp_path / "project"
    work.mkdir()
    (work / "alpha.txt").write_text("a")
    (work / "beta.py").write_text("b")
    task_id = server.chat("BASH: ls", cwd=str(work))
    doc = server.wait(task_id)
    assert doc["status"] == "completed", doc
    types = [e["type"] for e in doc["events"]]
    tool_use = next(e for e in doc["events"] if e["type"] == "tool_use")
    assert tool_use["payload"]["name"] == "Bash" and tool_use["payload"]["input"]["command"] == "ls"
    tool_result = next(e for e in doc["events"] if e["type"] == "tool_result")
    assert tool_result["payload"]["tool_use_id"] == tool_use["payload"]["id"]
    assert "alpha.txt" in tool_result["payload"]["content"] and "beta.py" in tool_result["payload"]["content"]
    assert types.index("tool_use") < types.index("tool_result") < types.index("result")
    assert "alpha.txt" in doc["result"]["text"]
    assert doc["cwd"] == str(work)
    assert_gap_free(doc["events"])


@pytest.mark.both_backends
def test_ten_tasks_at_once_complete_with_gap_free_logs(make_server):
    server = make_server(SCOUT_MAX_WORKERS="10")
    ids: list[str] = []
    lock = threading.Lock()

    def post(i: int) -> None:
        task_id = server.chat(f"task number {i}")
        with lock:
            ids.append(task_id)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 10
    for task_id in ids:
        doc = server.wait(task_id, timeout=120)
        assert doc["status"] == "completed", doc
        assert_gap_free(doc["events"])
        statuses = [e["payload"]["status"] for e in doc["events"] if e["type"] == "status"]
        assert statuses == ["pending", "running", "completed"]
        assert doc["result"]["text"] == f"ECHO: {doc['message']}"


@pytest.mark.both_backends
def test_stop_slow_streaming_task(server):
    task_id = server.chat("SLOW: 200 0.1")
    server.wait(task_id, statuses=("running",))
    deadline = time.time() + 30
    while not any(e["type"] == "text_delta" for e in server.status(task_id)["events"]):
        assert time.time() < deadline
        time.sleep(0.05)
    resp = server.post(f"/chat/{task_id}/stop")
    assert resp.status_code == 200
    assert resp.json() == {"task_id": task_id, "status": "cancelled", "stopped": True}
    assert tagged_processes(task_id) == []
    doc = server.status(task_id)
    assert doc["status"] == "cancelled"
    assert doc["events"][-1]["payload"]["status"] == "cancelled"
    # Stopping again changes nothing and says so.
    again = server.post(f"/chat/{task_id}/stop").json()
    assert again["status"] == "cancelled" and again["stopped"] is False


@pytest.mark.both_backends
def test_stop_kills_a_long_bash_command(server, tmp_path: Path):
    marker = f"{time.time_ns()}"
    command = LONG_COMMAND.format(marker)
    task_id = server.chat(f"BASH: {command}", cwd=str(tmp_path))
    deadline = time.time() + 60
    while not processes_matching(f"scout-long-{marker}"):
        assert time.time() < deadline, server.status(task_id)
        time.sleep(0.1)
    procs = tagged_processes(task_id)
    assert len(procs) >= 3  # leader, worker, CLI, the command's shell and python
    resp = server.post(f"/chat/{task_id}/stop")
    assert resp.json()["status"] == "cancelled"
    assert processes_matching(f"scout-long-{marker}") == []
    assert tagged_processes(task_id) == []
    assert server.status(task_id)["status"] == "cancelled"


def test_stop_finds_a_leader_that_has_not_set_its_title_yet():
    """Just after the zygote forks it, a leader carries neither tag nor title; the stop
    still finds it by the pid and start time the zygote reported."""
    task_id = "00000000-0000-0000-0000-00000000feed"
    young = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(young.pid).create_time()
        assert proctree.task_processes(task_id, young.pid) == []
        assert [p.pid for p in proctree.task_processes(task_id, young.pid, started)] == [young.pid]
        assert proctree.task_processes(task_id, young.pid, started - 5) == []  # another process
        assert proctree.kill_tree(task_id, young.pid, 2.0, started) >= 1
        assert young.wait(timeout=5) == -signal.SIGTERM
    finally:
        young.kill()
        young.wait()


def test_a_worker_whose_task_is_being_stopped_does_not_start(tmp_path: Path):
    """The other half of that race: a worker forked after the stop's sweep ends at once."""
    store = Store(str(tmp_path / "unit.db"))
    task = store.create_task("never run", {})
    store.transition(task.id, "running")
    store.request_stop(task.id)
    before = store.events_after(task.id)
    spec = WorkerSpec(task_id=task.id, db=store.path, claude_path=str(tmp_path / "no-claude"))
    assert worker.run(spec) == 0
    assert store.events_after(task.id) == before


@pytest.mark.both_backends
def test_pending_task_is_cancelled_without_starting(make_server):
    server = make_server(SCOUT_MAX_WORKERS="1")
    first = server.chat("SLOW: 100 0.1")
    second = server.chat("never runs")
    server.wait(first, statuses=("running",))
    assert server.status(second)["status"] == "pending"
    assert server.post(f"/chat/{second}/stop").json()["status"] == "cancelled"
    server.post(f"/chat/{first}/stop")
    doc = server.status(second)
    assert doc["started_at"] is None and doc["worker_pid"] is None
    assert [e["payload"]["status"] for e in doc["events"]] == ["pending", "cancelled"]


def test_worker_cap_holds_and_tasks_start_in_arrival_order(make_server):
    server = make_server(SCOUT_MAX_WORKERS="2")
    ids = [server.chat(f"SLOW: 6 0.1 task {i}") for i in range(5)]
    most = 0
    done: dict[str, dict] = {}
    deadline = time.time() + 120
    while len(done) < 5:
        assert time.time() < deadline
        health = server.get("/health").json()
        most = max(most, health["tasks"]["running"] + health["tasks"]["waiting"])
        for task_id in ids:
            if task_id not in done:
                doc = server.status(task_id)
                if doc["status"] in ("completed", "failed", "cancelled"):
                    done[task_id] = doc
        time.sleep(0.05)
    assert most <= 2
    assert all(d["status"] == "completed" for d in done.values())
    starts = [done[i]["started_at"] for i in ids]
    assert starts == sorted(starts)
    # Never more than two overlapping runs, from the log's own times.
    spans = [(done[i]["started_at"], done[i]["finished_at"]) for i in ids]
    for start, _ in spans:
        overlapping = sum(1 for s, f in spans if s <= start < f)
        assert overlapping <= 2


@pytest.mark.both_backends
def test_history_survives_restart(make_server):
    server = make_server()
    ids = [server.chat(f"remember {i}") for i in range(3)]
    ids.append(server.chat("BASH: echo persisted"))
    before = {i: server.wait(i) for i in ids}
    listing = server.get("/tasks").json()
    assert server.stop() == 0
    again = make_server(start=False)
    again.env = server.env
    again.start()
    after = {i: again.status(i) for i in ids}
    assert after == before
    assert again.get("/tasks").json() == listing


@pytest.mark.both_backends
def test_sse_resume_with_last_event_id_gets_exactly_the_missing_events(server):
    task_id = server.chat("SLOW: 30 0.05")
    with server.get(f"/chat/{task_id}/stream", stream=True) as first:
        seen = []
        for event in read_sse(first):
            seen.append(event)
            if len(seen) == 4:
                break
    last_id = seen[-1]["id"]
    with requests.get(f"{server.url}/chat/{task_id}/stream", headers={"Last-Event-ID": last_id},
                      stream=True, timeout=60) as second:
        rest = list(read_sse(second))
    full = server.status(task_id)["events"]
    got = [int(e["id"]) for e in seen] + [int(e["id"]) for e in rest if e["event"] != "end"]
    assert got == [e["seq"] for e in full]
    assert rest[-1] == {"event": "end", "data": {"task_id": task_id, "status": "completed"}}
    # The query-string form, on the finished task: replay after N, then close.
    with server.get(f"/chat/{task_id}/stream?last_event_id={len(full) - 2}", stream=True) as third:
        tail = list(read_sse(third))
    assert [int(e["id"]) for e in tail[:-1]] == [len(full) - 1, len(full)]


def test_unknown_task_is_404_json(server):
    for path in ("/chat/00000000-0000-0000-0000-000000000000/status",
                 "/chat/00000000-0000-0000-0000-000000000000/stream",
                 "/chat/not-a-uuid/status"):
        resp = server.get(path)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"


def test_sigterm_exits_promptly_with_open_streams_and_idle_connections(make_server):
    """Open SSE streams and idle keep-alive connections must not hold up a shutdown."""
    for _ in range(3):
        server = make_server()
        task_id = server.chat("SLOW: 100 0.1")
        session = requests.Session()
        assert session.get(server.url + "/health", timeout=10).status_code == 200  # stays open, idle
        stream = requests.get(f"{server.url}/chat/{task_id}/stream", stream=True, timeout=30)
        next(stream.iter_lines())
        started = time.time()
        assert server.stop() == 0
        assert time.time() - started < 10
        stream.close()
        session.close()
