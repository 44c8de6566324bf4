"""Several Scout nodes on one PostgreSQL log, on loopback: three real servers with their own
SCOUT_NODE_ID, port and HOME, the real CLI, one database. What the issue's "done when" asks:
tasks spread over the nodes, a stream and a stop from another node, a node's machine dying
(its server and every task process SIGKILLed) and coming back."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from conftest import ScoutServer, read_sse, tagged_processes, wait_for
from test_ops import Receiver

LEASE = 3.0


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.httpd.shutdown()


@pytest.fixture
def cluster(make_server, pg_url: str, tmp_path: Path, receiver: Receiver) -> dict[str, Any]:
    """Nodes A, B and C on one PostgreSQL database, each with a HOME of its own."""
    def node(name: str) -> ScoutServer:
        home = tmp_path / f"home-{name}"
        home.mkdir(exist_ok=True)
        return make_server(SCOUT_DB=pg_url, SCOUT_NODE_ID=name, SCOUT_NODE_LEASE=str(LEASE), HOME=str(home),
                           SCOUT_MAX_WORKERS="3", SCOUT_WEBHOOK_URL=receiver.url + "/hook")
    return {"A": node("A"), "B": node("B"), "C": node("C"), "node": node}


def events(server: ScoutServer, task_id: str) -> list[dict[str, Any]]:
    return server.status(task_id)["events"]


def assert_whole_log(server: ScoutServer, task_id: str) -> dict[str, Any]:
    doc = server.status(task_id)
    seqs = [e["seq"] for e in doc["events"]]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert doc["events"][-1]["type"] == "status" and doc["events"][-1]["payload"]["status"] == doc["status"]
    return doc


def kill_machine(server: ScoutServer, task_ids: list[str]) -> None:
    """What a dead machine looks like: the server, its zygote and every task process, SIGKILLed."""
    procs = [psutil.Process(server.proc.pid)]
    procs += procs[0].children(recursive=True)
    for task_id in task_ids:
        procs += tagged_processes(task_id)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    server.proc.wait(10)


def test_three_nodes_share_one_log(cluster, receiver: Receiver, tmp_path: Path):
    a, b, c = cluster["A"], cluster["B"], cluster["C"]
    nodes = b.get("/nodes").json()
    assert nodes["this_node"] == "B"
    assert {n["node"]: n["state"] for n in nodes["nodes"]} == {"A": "live", "B": "live", "C": "live"}
    assert a.get("/health").json()["node"]["id"] == "A"

    # 30 tasks posted round-robin: pending work is global, any node with a free slot runs it.
    servers = [a, b, c]
    ids = [servers[i % 3].chat(f"hello {i}") for i in range(30)]
    docs = [servers[(i + 1) % 3].wait(task_id, timeout=240) for i, task_id in enumerate(ids)]
    assert all(d["status"] == "completed" for d in docs), [d["error"] for d in docs if d["status"] != "completed"]
    ran_on = {d["node"] for d in docs}
    assert len(ran_on) >= 2 and ran_on <= {"A", "B", "C"}
    for task_id in ids:
        assert_whole_log(c, task_id)
    # Exactly one node sends each webhook.
    wait_for(lambda: {json.loads(x["body"])["task_id"] for x in receiver.at("/hook")} >= set(ids), 30,
             "a webhook for each task")
    time.sleep(1.0)
    hooks = [json.loads(x["body"]) for x in receiver.at("/hook")]
    assert sorted(h["task_id"] for h in hooks if h["task_id"] in ids) == sorted(ids)

    # A stream opened on B follows a task running on A; a stop sent to B ends it on A.
    slow = c.chat("SLOW: 300 0.1", node="A")
    stream = read_sse(b.get(f"/chat/{slow}/stream", stream=True))
    seen = []
    for event in stream:
        seen.append(event)
        if event.get("event") == "text_delta":
            break
    assert b.status(slow)["node"] == "A"
    started = time.monotonic()
    stopped = b.post(f"/chat/{slow}/stop").json()
    assert stopped == {"task_id": slow, "status": "cancelled", "stopped": True}
    assert time.monotonic() - started < 10
    assert tagged_processes(slow) == []
    rest = list(stream)
    assert rest[-1]["event"] == "end" and rest[-1]["data"]["status"] == "cancelled"
    assert [int(e["id"]) for e in seen + rest[:-1]] == list(range(1, len(seen) + len(rest)))

    # A conversation moves: its first turn runs on A, its second on B, in another HOME with
    # no Claude Code transcript of it; the model still sees the first turn.
    first = a.wait(c.chat("remember the lighthouse", node="A", session_id="conv-moves"), timeout=120)
    assert (first["status"], first["node"]) == ("completed", "A")
    second = b.wait(c.chat("ECHO-HISTORY", node="B", session_id="conv-moves"), timeout=120)
    assert (second["status"], second["node"]) == ("completed", "B"), second["error"]
    assert second["result"]["text"].startswith("remember the lighthouse | "), second["result"]["text"]

    # A's machine dies with a task running there and a follow-up queued behind it.
    session = "conv-on-a"
    running = b.chat("SLOW: 300 0.1", node="A", session_id=session)
    a.wait(running, statuses=("running",))
    wait_for(lambda: any(e["type"] == "text_delta" for e in events(b, running)), 60, "the task on A streaming")
    queued = c.chat("ECHO-HISTORY", session_id=session)
    assert c.status(queued)["status"] == "pending"
    kill_machine(a, [running])
    died = time.monotonic()
    doc = wait_for(lambda: (d := b.status(running))["status"] != "running" and d, LEASE + 10, "node lost")
    assert time.monotonic() - died <= LEASE + 2 + 1.5  # lease + 2 s, plus one heartbeat tick
    assert (doc["status"], doc["error"]) == ("failed", "node lost")
    follow = c.wait(queued, timeout=120)
    assert follow["node"] in ("B", "C") and follow["started_at"] is not None
    # The follow-up resumes a conversation whose Claude Code transcript was in A's HOME: the
    # lines mirrored into the shared log before the kill carry it to B or C.
    assert follow["status"] == "completed", follow["error"]
    assert follow["result"]["text"].startswith("SLOW: 300 0.1 | "), follow["result"]["text"]
    for task_id in (running, queued):
        assert_whole_log(b, task_id)
    lost = [n for n in c.get("/nodes").json()["nodes"] if n["node"] == "A"]
    assert lost[0]["state"] == "lost"
    # The node that marked it lost (or whoever leads now) sends its webhook, once.
    wait_for(lambda: [h for h in receiver.at("/hook") if json.loads(h["body"])["task_id"] == running], 30,
             "the lost task's webhook")
    time.sleep(1.0)
    assert [json.loads(h["body"])["status"] for h in receiver.at("/hook")
            if json.loads(h["body"])["task_id"] == running] == ["failed"]

    # A comes back with the same id and serves again.
    again = cluster["node"]("A")
    assert {n["node"]: n["state"] for n in again.get("/nodes").json()["nodes"]}["A"] == "live"
    back = again.wait(b.chat("hello again", node="A"), timeout=120)
    assert (back["status"], back["node"]) == ("completed", "A")
    assert b.status(running)["status"] == "failed"  # never run again


def test_unknown_node_is_refused(make_server, pg_url: str):
    server = make_server(SCOUT_DB=pg_url, SCOUT_NODE_ID="B")
    resp = server.post("/chat", json={"message": "hi", "node": "Z"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_node"
    resp = server.post("/chat", json={"message": "hi", "node": "no spaces"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_field"
