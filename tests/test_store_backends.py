"""The store contract on both backends: every test runs on SQLite and on PostgreSQL
(`db_url` is parametrised in conftest.py), plus what only a shared PostgreSQL log has:
claims by many nodes at once, LISTEN/NOTIFY, leases and lost nodes."""
from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest

from scout.backends import open_store
from scout.store import EventCapError
from scout.vocab import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, WAITING


@pytest.fixture
def store(db_url: str):
    s = open_store(db_url)
    yield s
    s.close()


def _seqs(store, task_id: str) -> list[int]:
    return [e.seq for e in store.iter_events(task_id)]


def test_create_task_logs_pending_and_makes_the_session(store):
    task = store.create_task("hello", {"cwd": "/tmp"}, session_id="s1")
    assert task.status == PENDING and task.session_id == "s1" and task.options == {"cwd": "/tmp"}
    assert store.get_task(task.id).message == "hello"
    events = list(store.iter_events(task.id))
    assert [(e.seq, e.type, e.payload) for e in events] == [(1, "status", {"status": "pending"})]
    assert store.get_session("s1").cwd == "/tmp"
    assert store.get_task("nope") is None


def test_max_pending_refuses_without_writing(store):
    store.create_task("a", {}, max_pending=1)
    assert store.create_task("b", {}, max_pending=1) is None
    assert store.count_by_status()[PENDING] == 1


def test_transition_checks_the_from_status_and_logs_it(store):
    task = store.create_task("a", {})
    assert not store.transition(task.id, COMPLETED, only_from=(RUNNING,))
    assert store.transition(task.id, RUNNING, only_from=(PENDING,))
    assert store.transition(task.id, FAILED, only_from=(RUNNING,), error="boom", result={"text": "x"})
    done = store.get_task(task.id)
    assert (done.status, done.error, done.result) == (FAILED, "boom", {"text": "x"})
    assert done.started_at and done.finished_at
    statuses = [e.payload for e in store.iter_events(task.id) if e.type == "status"]
    assert statuses[-1] == {"status": FAILED, "error": "boom"}
    assert _seqs(store, task.id) == [1, 2, 3]


def test_unless_stop_requested(store):
    task = store.create_task("a", {})
    store.transition(task.id, RUNNING, only_from=(PENDING,))
    store.request_stop(task.id)
    assert not store.transition(task.id, COMPLETED, only_from=(RUNNING,), unless_stop_requested=True)
    assert store.get_task(task.id).stop_requested


def test_claim_takes_oldest_and_one_task_per_session(store):
    a1 = store.create_task("a1", {}, session_id="A")
    a2 = store.create_task("a2", {}, session_id="A")
    b1 = store.create_task("b1", {}, session_id="B")
    claimed = store.claim(10, node="n1")
    assert [t.id for t in claimed] == [a1.id, b1.id]
    assert all(t.status == RUNNING for t in claimed)
    assert store.claim(10, node="n1") == []  # a2 waits for a1
    store.transition(a1.id, COMPLETED, only_from=(RUNNING,))
    assert [t.id for t in store.claim(10, node="n1")] == [a2.id]
    assert [e.payload["status"] for e in store.iter_events(a2.id)] == [PENDING, RUNNING]


def test_requeue_and_delete(store):
    task = store.create_task("a", {}, session_id="S")
    store.claim(1)
    assert store.requeue(task.id)
    assert store.get_task(task.id).status == PENDING
    assert store.delete_task(task.id)
    assert store.get_task(task.id) is None and list(store.iter_events(task.id)) == []
    assert store.get_session("S") is None  # its last task gone, the session goes too


def test_event_cap(store):
    store.max_events_per_task = 3
    task = store.create_task("a", {})
    store.append_event(task.id, "assistant", {"text": "1"})
    store.append_event(task.id, "assistant", {"text": "2"})
    with pytest.raises(EventCapError):
        store.append_event(task.id, "assistant", {"text": "3"})
    assert store.transition(task.id, FAILED, only_from=(PENDING,), error="cap")  # an ending is always logged
    assert _seqs(store, task.id) == [1, 2, 3, 4]


def test_raw_and_json_reads_paste_the_payload(store):
    task = store.create_task("a", {})
    store.append_event(task.id, "assistant", {"text": "héllo \"q\""})
    seq, type_, _, payload = store.raw_events_after(task.id, 1)[0]
    assert (seq, type_) == (2, "assistant") and payload == '{"text": "h\\u00e9llo \\"q\\""}'
    import json
    docs = [json.loads(j) for j in store.iter_event_json(task.id)]
    assert [d["seq"] for d in docs] == [1, 2] and docs[1]["payload"] == {"text": "héllo \"q\""}


def test_status_feed_follows_every_change_in_order(store):
    start = store.status_head()
    t1 = store.create_task("a", {})
    store.append_event(t1.id, "assistant", {"text": "not a status"})
    store.transition(t1.id, RUNNING, only_from=(PENDING,))
    cursor, events = store.status_events_since(start)
    assert [(e.task_id, e.payload["status"]) for e in events] == [(t1.id, PENDING), (t1.id, RUNNING)]
    assert store.status_events_since(cursor) == (cursor, [])
    store.transition(t1.id, COMPLETED, only_from=(RUNNING,))
    _, more = store.status_events_since(cursor)
    assert [e.payload["status"] for e in more] == [COMPLETED]


def test_event_feed_hands_over_new_events(store):
    feed = store.event_feed()
    made: list[Any] = []

    def write() -> None:  # from another connection, as a worker would
        made.append(store.create_task("a", {}))
        store.append_event(made[0].id, "assistant", {"text": "x"})
        store.close_thread()
    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    task = made[0]
    rows, deadline = [], time.monotonic() + 5
    while len(rows) < 2 and time.monotonic() < deadline:
        rows += feed.poll(0.2).rows
    assert [(r[1], r[2], r[3]) for r in rows] == [(task.id, 1, "status"), (task.id, 2, "assistant")]


def test_approvals(store):
    task = store.create_task("a", {})
    store.claim(1)
    store.ask_approval(task.id, "tu1", "Bash", {"command": "ls"}, {"tool_use_id": "tu1"})
    assert store.get_task(task.id).status == WAITING
    assert [a["tool"] for a in store.open_approvals(task.id)] == ["Bash"]
    assert store.approval_decision(task.id, "tu1") is None
    assert store.decide_approval(task.id, "allow", "ok") == "tu1"
    assert store.approval_decision(task.id, "tu1") == ("allow", "ok")
    assert store.decide_approval(task.id, "deny", None) is None


def test_sessions_listing_and_paging(store):
    for i in range(3):
        store.create_task(f"m{i}", {}, session_id=f"s{i}")
        time.sleep(0.01)
    second = store.create_task("again", {}, session_id="s0")
    first = store.claim(5)[0]
    assert store.transition(first.id, COMPLETED)
    assert [t.id for t in store.claim(5)] == [second.id]
    assert store.transition(second.id, COMPLETED, result={"total_cost_usd": 0.25})
    page = store.list_sessions(limit=2)
    assert [p["session_id"] for p in page] == ["s0", "s2"]
    assert page[0]["task_count"] == 2 and page[0]["first_message"] == "m0" and page[0]["last_message"] == "again"
    assert page[0]["total_cost_usd"] == pytest.approx(0.25)
    rest = store.list_sessions(limit=2, after=(page[-1]["last_activity"], page[-1]["session_id"]))
    assert [p["session_id"] for p in rest] == ["s1"]
    tasks = store.list_tasks(limit=2)
    assert len(tasks) == 2 and store.list_tasks(before=tasks[-1].num)[0].num < tasks[-1].num


def test_prune_keeps_unfinished_tasks(store):
    done = store.create_task("old", {}, session_id="old")
    store.transition(done.id, CANCELLED, only_from=(PENDING,))
    keep = store.create_task("keep", {})
    out = store.prune_finished(time.time() + 1, batch_events=1)
    assert out["tasks"] == 1 and out["sessions"] == 1 and out["task_ids"] == [done.id]
    assert store.get_task(done.id) is None and store.get_task(keep.id) is not None
    store.compact()


def test_schema_and_health_probes(store):
    assert store.schema_version() >= 1
    assert store.integrity_check() == "ok"
    store.check_writable()
    assert store.size_bytes() > 0


# -- many writers, many claimers -------------------------------------------------------------

def _write_events(url: str, task_ids: list[str], n: int) -> None:
    s = open_store(url, migrate=False)
    for i in range(n):
        s.append_event(task_ids[i % len(task_ids)], "assistant", {"i": i})
    s.close()


def test_seq_is_gap_free_with_many_writer_processes(db_url):
    store = open_store(db_url)
    ids = [store.create_task(f"t{i}", {}).id for i in range(3)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_events, args=(db_url, ids, 60)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    total = 0
    for task_id in ids:
        seqs = _seqs(store, task_id)
        assert seqs == list(range(1, len(seqs) + 1))
        total += len(seqs) - 1
    assert total == 6 * 60
    store.close()


def test_concurrent_claims_never_start_a_task_twice(db_url):
    store = open_store(db_url)
    for i in range(40):
        store.create_task(f"t{i}", {}, session_id=f"s{i % 10}")
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def claimer(node: str) -> None:
        s = open_store(db_url, migrate=False)
        deadline = time.monotonic() + 30
        while len(claimed) < 40 and time.monotonic() < deadline:
            got = s.claim(3, node=node)
            with lock:
                claimed.extend((node, t.id) for t in got)
            for t in got:  # finish it, so its session's next task becomes startable
                s.transition(t.id, COMPLETED, only_from=(RUNNING,))
        s.close()

    threads = [threading.Thread(target=claimer, args=(f"n{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [task_id for _, task_id in claimed]
    assert len(ids) == len(set(ids)) == 40
    for session in range(10):  # a session's tasks ran in order, one at a time
        tasks = store.session_tasks(f"s{session}")
        for before, after in zip(tasks, tasks[1:], strict=False):
            assert after.started_at >= before.started_at
    store.close()


# -- PostgreSQL only: notifications, pinning, nodes ---------------------------------------------

@pytest.fixture
def pg(pg_url: str):
    s = open_store(pg_url)
    yield s
    s.close()


def test_pg_stop_request_reaches_other_processes(pg, pg_url):
    seen: list[tuple[str, str | None]] = []
    got = threading.Event()
    pg.on_stop_request(lambda task_id, by: (seen.append((task_id, by)), got.set()))
    other = open_store(pg_url, migrate=False)
    task = other.create_task("a", {})
    other.request_stop(task.id, by="node-b")
    assert got.wait(5) and seen == [(task.id, "node-b")]
    other.close()


def test_pg_pinned_task_runs_only_on_its_node(pg):
    pinned = pg.create_task("a", {}, node="n2")
    assert pg.claim(5, node="n1") == []
    got = pg.claim(5, node="n2")
    assert [t.id for t in got] == [pinned.id] and got[0].node == "n2"
    assert pg.get_task(pinned.id).node == "n2"


def test_pg_one_running_task_per_session_is_enforced_by_the_database(pg):
    import psycopg
    a = pg.create_task("a", {}, session_id="S")
    b = pg.create_task("b", {}, session_id="S")
    pg.claim(1, node="n1")
    with pytest.raises((psycopg.IntegrityError, Exception)):
        pg.transition(b.id, RUNNING, only_from=(PENDING,))
    assert pg.get_task(b.id).status == PENDING and pg.get_task(a.id).status == RUNNING


def test_pg_lost_node_tasks_fail_once(pg, pg_url):
    pg.heartbeat("A", lease=0.3, version="x", max_workers=4, starting=True)
    pg.heartbeat("B", lease=30, version="x", max_workers=4, starting=True)
    task = pg.create_task("a", {})
    pg.claim(1, node="A")
    assert pg.reap_lost_nodes() == []
    time.sleep(0.5)
    other = open_store(pg_url, migrate=False)
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.reap_lost_nodes())) for s in (pg, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=len) == [[], [task.id]]
    done = pg.get_task(task.id)
    assert (done.status, done.error) == (FAILED, "node lost")
    assert [e.payload["status"] for e in pg.iter_events(task.id)] == [PENDING, RUNNING, FAILED]
    nodes = {n["node"]: n for n in pg.nodes()}
    assert nodes["A"]["state"] == "lost" and nodes["B"]["state"] == "live"
    pg.heartbeat("A", lease=30, version="x", max_workers=4, starting=True)  # it comes back
    assert {n["node"]: n["state"] for n in pg.nodes()}["A"] == "live"
    assert pg.get_task(task.id).status == FAILED
    other.close()


def test_pg_leadership_is_exclusive_and_passes_on(pg):
    first, second = pg.try_lead("retention"), pg.try_lead("retention")
    assert first.acquire() and not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_pg_migrations_are_versioned_and_run_once(pg_url):
    stores = []
    threads = [threading.Thread(target=lambda: stores.append(open_store(pg_url))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from scout.store_pg import SCHEMA_VERSION
    assert len(stores) == 3 and all(s.schema_version() == SCHEMA_VERSION for s in stores)
    for s in stores:
        s.close()
