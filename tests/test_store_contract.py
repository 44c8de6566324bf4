"""The store's contract (scout.store.EventLog), held against a real database, no server.

Every test takes the `store` fixture, so a second backend runs the same tests by adding
itself to STORE_BACKENDS. Part of the fast layer (`make test-fast`).
"""
from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from scout.store import EventCapError, EventLog, Store
from scout.vocab import (ACTIVE, CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, STATUSES, TERMINAL, TRANSITIONS,
                         WAITING, EventType, TaskStatus, can_transition)


def _sqlite(tmp_path: Path) -> EventLog:
    return Store(str(tmp_path / "contract.db"))


def _postgresql(tmp_path: Path, request: pytest.FixtureRequest) -> EventLog:
    from scout.store_pg import PgStore
    return PgStore(request.getfixturevalue("pg_url"))  # a fresh schema in the tests' own cluster


# name -> factory(tmp_path, request) -> an empty store. Other backends add themselves here.
STORE_BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], EventLog]] = {
    "sqlite": lambda tmp_path, request: _sqlite(tmp_path), "postgresql": _postgresql}


@pytest.fixture(params=sorted(STORE_BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    log = STORE_BACKENDS[request.param](tmp_path, request)
    yield log
    log.close()


# How to bring a fresh task to each status by legal moves only.
PATH_TO: dict[TaskStatus, list[TaskStatus]] = {
    PENDING: [], RUNNING: [RUNNING], WAITING: [RUNNING, WAITING],
    COMPLETED: [RUNNING, COMPLETED], FAILED: [FAILED], CANCELLED: [CANCELLED],
}


def task_in(store: EventLog, status: TaskStatus, message: str = "hi") -> str:
    task = store.create_task(message, {"mode": "Scout"})
    assert task is not None
    for step in PATH_TO[status]:
        assert store.transition(task.id, step), f"{step} should be reachable"
    got = store.get_task(task.id)
    assert got is not None and got.status == status
    return task.id


def statuses_logged(store: EventLog, task_id: str) -> list[str]:
    return [e.payload["status"] for e in store.events_after(task_id) if e.type == EventType.STATUS]


# -- tasks and the transition table ----------------------------------------------------

def test_a_new_task_is_pending_with_its_first_status_event(store: EventLog) -> None:
    task = store.create_task("hello", {"mode": "Scout", "cwd": "/tmp"})
    assert task is not None and task.status == PENDING and task.message == "hello"
    assert task.options == {"mode": "Scout", "cwd": "/tmp"} and not task.finished
    session = store.get_session(task.session_id)
    assert session is not None and session.cwd == "/tmp"
    assert [(e.seq, e.type, e.payload) for e in store.events_after(task.id)] == [(1, "status", {"status": "pending"})]
    assert store.get_task("no-such-task") is None


@pytest.mark.parametrize("current,to", list(itertools.product(STATUSES, STATUSES)))
def test_transition_follows_the_table_exactly(store: EventLog, current: TaskStatus, to: TaskStatus) -> None:
    """Every (from, to) pair: the store moves the task exactly when the table allows it,
    and logs a status event exactly when it moves."""
    task_id = task_in(store, current)
    before = statuses_logged(store, task_id)
    moved = store.transition(task_id, to)
    assert moved == can_transition(current, to)
    task = store.get_task(task_id)
    assert task is not None and task.status == (to if moved else current)
    assert statuses_logged(store, task_id) == before + ([to] if moved else [])


def test_only_from_narrows_and_never_widens(store: EventLog) -> None:
    task_id = task_in(store, RUNNING)
    assert not store.transition(task_id, CANCELLED, only_from=(PENDING,))
    assert store.get_task(task_id).status == RUNNING  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        store.transition(task_id, PENDING, only_from=(COMPLETED,))  # completed -> pending is illegal
    assert store.transition(task_id, CANCELLED, only_from=(RUNNING, WAITING))


def test_transition_records_times_error_and_result(store: EventLog) -> None:
    task_id = task_in(store, PENDING)
    assert store.transition(task_id, RUNNING)
    running = store.get_task(task_id)
    assert running is not None and running.started_at is not None and running.finished_at is None
    assert store.transition(task_id, FAILED, error="boom", result={"text": "partial", "total_cost_usd": 0.5})
    failed = store.get_task(task_id)
    assert failed is not None and failed.finished and failed.finished_at is not None
    assert failed.error == "boom" and failed.result == {"text": "partial", "total_cost_usd": 0.5}
    assert store.events_after(task_id)[-1].payload == {"status": "failed", "error": "boom"}


def test_unless_stop_requested(store: EventLog) -> None:
    task_id = task_in(store, RUNNING)
    store.request_stop(task_id)
    assert store.get_task(task_id).stop_requested  # type: ignore[union-attr]
    assert not store.transition(task_id, COMPLETED, unless_stop_requested=True)
    assert store.transition(task_id, CANCELLED)


def test_requeue_goes_back_to_pending_and_forgets_the_worker(store: EventLog) -> None:
    task_id = task_in(store, RUNNING)
    store.set_worker(task_id, 4242, 123.5)
    task = store.get_task(task_id)
    assert task is not None and (task.worker_pid, task.worker_started) == (4242, 123.5)
    assert task.tree_id == task_id and not task.ran_warm  # its own process tree
    assert store.requeue(task_id)
    task = store.get_task(task_id)
    assert task is not None and task.status == PENDING
    assert (task.worker_pid, task.worker_started, task.started_at, task.run_id) == (None, None, None, None)
    assert store.events_after(task_id)[-1].payload == {"status": "pending", "requeued": True}
    assert not store.requeue(task_id)  # pending -> pending is not a transition
    done = task_in(store, COMPLETED)
    assert not store.requeue(done)


def test_a_task_run_in_a_warm_process_records_whose_tree_it_is(store: EventLog) -> None:
    first = task_in(store, COMPLETED)
    follow_up = task_in(store, RUNNING)
    store.set_worker(follow_up, 4242, 123.5, run_id=first)
    task = store.get_task(follow_up)
    assert task is not None and task.run_id == first and task.tree_id == first and task.ran_warm
    assert task.worker_pid == 4242


def test_terminal_statuses_are_final_in_the_table() -> None:
    assert set(TRANSITIONS) == set(STATUSES)
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
    for status in (PENDING, *ACTIVE):
        assert {FAILED, CANCELLED} <= TRANSITIONS[status]


# -- queries -----------------------------------------------------------------------------

def test_lists_counts_and_the_dispatch_order(store: EventLog) -> None:
    first = store.create_task("one", {})
    assert first is not None
    second = store.create_task("two", {}, session_id=first.session_id)
    other = store.create_task("three", {})
    assert second is not None and other is not None
    assert [t.id for t in store.next_startable(10)] == [first.id, other.id]  # one per session, oldest first
    assert store.transition(first.id, RUNNING)
    assert [t.id for t in store.next_startable(10)] == [other.id]  # the session is busy
    assert [t.id for t in store.list_tasks()] == [other.id, second.id, first.id]
    assert [t.id for t in store.list_tasks(status=RUNNING)] == [first.id]
    assert [t.id for t in store.list_tasks(session_id=first.session_id)] == [second.id, first.id]
    assert [t.id for t in store.list_tasks(limit=1, before=other.num)] == [second.id]
    assert [t.id for t in store.session_tasks(first.session_id)] == [first.id, second.id]
    assert [t.id for t in store.tasks_in(ACTIVE)] == [first.id]
    counts = store.count_by_status()
    assert set(counts) == set(STATUSES) and counts[PENDING] == 2 and counts[RUNNING] == 1 and counts[FAILED] == 0


def test_max_pending_refuses_without_writing(store: EventLog) -> None:
    assert store.create_task("a", {}, max_pending=1) is not None
    assert store.create_task("b", {}, max_pending=1) is None
    assert len(store.list_tasks()) == 1


def test_sessions_list_and_delete(store: EventLog) -> None:
    first = store.create_task("first message", {"cwd": "/w"})
    assert first is not None
    store.create_task("last message", {}, session_id=first.session_id)
    store.set_claude_session(first.session_id, "claude-1", "/w2")
    session = store.get_session(first.session_id)
    assert session is not None and session.claude_session_id == "claude-1" and session.cwd == "/w2"
    [row] = store.list_sessions()
    assert row["session_id"] == first.session_id and row["task_count"] == 2
    assert row["first_message"] == "first message" and row["last_message"] == "last message"
    assert store.delete_session(first.session_id) == 2
    assert store.get_session(first.session_id) is None and store.get_task(first.id) is None
    assert store.delete_session(first.session_id) is None


# -- events ------------------------------------------------------------------------------

def test_events_get_gap_free_sequence_numbers_across_threads(store: EventLog) -> None:
    task_id = task_in(store, RUNNING)

    def write(n: int) -> None:
        for i in range(25):
            store.append_event(task_id, EventType.TEXT_DELTA, {"text": f"{n}.{i}"})
        store.close_thread()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [e.seq for e in store.iter_events(task_id, page=7)]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == 2 + 100


def test_event_readers_agree(store: EventLog) -> None:
    task_id = task_in(store, RUNNING)
    seq = store.append_event(task_id, EventType.ASSISTANT, {"text": "hé"})
    assert seq == 3
    events = store.events_after(task_id)
    assert [e.to_dict()["type"] for e in events] == ["status", "status", "assistant"]
    assert [e.seq for e in store.events_after(task_id, 1, limit=1)] == [2]
    raw = store.raw_events_after(task_id, 2)
    assert [(r[0], r[1]) for r in raw] == [(3, "assistant")] and '"h' in raw[0][3]
    assert len(list(store.iter_event_json(task_id))) == 3
    assert store.last_event_time(task_id) == pytest.approx(time.time(), abs=60)
    top = store.max_event_id()
    assert top >= 3 and store.events_written() >= top
    newest, tasks = store.tasks_with_events_since(0)
    assert newest == top and tasks == {task_id}
    cursor, statuses = store.status_events_since(0)  # the cursor is a place in the status feed
    assert cursor == store.status_head() and [e.payload["status"] for e in statuses] == ["pending", "running"]
    assert store.status_events_since(cursor) == (cursor, [])
    assert [r[2] for r in store.raw_events_since_id(0)] == [1, 2, 3]


def test_event_cap_spares_status_events(store: EventLog) -> None:
    store.max_events_per_task = 3
    task_id = task_in(store, RUNNING)  # two status events
    store.append_event(task_id, EventType.TEXT_DELTA, {"text": "x"})
    with pytest.raises(EventCapError):
        store.append_event(task_id, EventType.TEXT_DELTA, {"text": "y"})
    assert store.transition(task_id, FAILED, error="cap")
    assert statuses_logged(store, task_id)[-1] == FAILED


def test_cursors(store: EventLog) -> None:
    assert store.get_cursor("webhooks") is None
    store.set_cursor("webhooks", 7)
    store.set_cursor("webhooks", 9)
    assert store.get_cursor("webhooks") == 9


# -- approvals ---------------------------------------------------------------------------

def test_an_approval_is_asked_and_answered(store: EventLog) -> None:
    task_id = task_in(store, RUNNING)
    store.ask_approval(task_id, "tu1", "Bash", {"command": "rm x"}, {"tool_use_id": "tu1", "tool": "Bash"})
    task = store.get_task(task_id)
    assert task is not None and task.status == WAITING
    assert [e.type for e in store.events_after(task_id)][-2:] == ["status", "approval_request"]
    assert [a["tool_use_id"] for a in store.open_approvals(task_id)] == ["tu1"]
    assert store.approval_decision(task_id, "tu1") is None
    assert store.decide_approval(task_id, "allow", "fine") == "tu1"
    assert store.approval_decision(task_id, "tu1") == ("allow", "fine")
    assert store.open_approvals(task_id) == [] and store.decide_approval(task_id, "deny", None) is None


def test_asking_approval_leaves_a_task_being_stopped_running(store: EventLog) -> None:
    task_id = task_in(store, RUNNING)
    store.request_stop(task_id)
    store.ask_approval(task_id, "tu1", "Bash", {}, {"tool_use_id": "tu1"})
    assert store.get_task(task_id).status == RUNNING  # type: ignore[union-attr]
    assert store.events_after(task_id)[-1].type == "approval_request"


# -- retention and health ----------------------------------------------------------------

def test_prune_deletes_only_finished_tasks_and_empty_sessions(store: EventLog) -> None:
    done = task_in(store, COMPLETED)
    live = task_in(store, RUNNING)
    out = store.prune_finished(time.time() + 1, batch_events=1)
    assert out["tasks"] == 1 and out["task_ids"] == [done] and out["sessions"] == 1 and out["events"] == 3
    assert store.get_task(done) is None and store.get_task(live) is not None
    assert store.delete_task(live) and not store.delete_task(live)


def test_deleting_a_sessions_last_task_deletes_the_session(store: EventLog) -> None:
    first = store.create_task("one", {})
    assert first is not None
    second = store.create_task("two", {}, session_id=first.session_id)
    assert second is not None
    store.append_transcript(first.session_id, "c4", "", [{"type": "user", "uuid": "u"}])
    assert store.delete_task(first.id) and store.get_session(first.session_id) is not None
    assert store.load_transcript("c4") is not None  # the conversation goes on
    assert store.delete_task(second.id) and store.get_session(first.session_id) is None
    assert store.load_transcript("c4") is None  # its transcript went with the session


def test_health_verbs(store: EventLog) -> None:
    assert store.integrity_check() == "ok"
    assert store.schema_version() >= 1
    store.check_writable()
    before = store.data_version()
    assert isinstance(before, int) and store.size_bytes() > 0
    assert isinstance(store.compact(), dict)
    assert store.migrate() == store.schema_version()  # already up to date


# -- Claude Code transcripts, history, space, backup ---------------------------------------

def test_transcripts_are_kept_in_order_deduplicated_and_go_with_their_session(store: EventLog) -> None:
    session = store.create_task("hi", {"mode": "Scout"}, session_id="s1")
    assert session is not None
    assert store.load_transcript("c1") is None and store.transcript_length("c1") == 0
    store.append_transcript("s1", "c1", "", [{"type": "user", "uuid": "u1"}, {"type": "title"}])
    store.append_transcript("s1", "c1", "", [{"type": "user", "uuid": "u1"},  # a retried batch
                                             {"type": "assistant", "uuid": "a1", "n": [1, {"x": None}]}])
    store.append_transcript("s1", "c1", "subagents/agent-1", [{"type": "user", "uuid": "u1"}])
    assert store.load_transcript("c1") == [{"type": "user", "uuid": "u1"}, {"type": "title"},
                                           {"type": "assistant", "uuid": "a1", "n": [1, {"x": None}]}]
    assert store.transcript_length("c1") == 3 and store.transcript_uuids("c1") == {"u1", "a1"}
    assert store.transcript_subpaths("c1") == ["subagents/agent-1"]
    assert store.load_transcript("c1", "subagents/agent-1") == [{"type": "user", "uuid": "u1"}]
    store.replace_transcript("s1", "c1", "", [{"type": "user", "uuid": "u2"}])
    assert store.load_transcript("c1") == [{"type": "user", "uuid": "u2"}]
    assert store.transcript_subpaths("c1") == ["subagents/agent-1"]  # untouched
    store.delete_transcript("c1", "subagents/agent-1")
    assert store.transcript_subpaths("c1") == [] and store.transcript_length("c1") == 1
    store.append_transcript("s1", "c1", "subagents/agent-2", [{"type": "x"}])
    store.delete_transcript("c1")  # the main one and every subagent's
    assert store.load_transcript("c1") is None and store.transcript_subpaths("c1") == []
    store.append_transcript("s1", "c2", "", [{"type": "x"}])
    assert store.delete_session("s1") == 1
    assert store.load_transcript("c2") is None
    store.append_transcript("s1", "c2", "", [{"type": "late", "uuid": "u9"}])  # a flush after the delete
    assert store.load_transcript("c2") is None


def test_a_session_can_be_marked_as_not_continuable(store: EventLog) -> None:
    assert store.create_task("hi", {"mode": "Scout"}, session_id="s2") is not None
    session = store.get_session("s2")
    assert session is not None and session.can_continue and session.history_lost is None
    store.mark_history_lost("s2", "gone for good")
    session = store.get_session("s2")
    assert session is not None and not session.can_continue and session.history_lost == "gone for good"
    assert [s["can_continue"] for s in store.list_sessions() if s["session_id"] == "s2"] == [False]


def test_pruning_a_session_away_takes_its_transcript(store: EventLog) -> None:
    done = task_in(store, COMPLETED)
    task = store.get_task(done)
    assert task is not None
    store.append_transcript(task.session_id, "c3", "", [{"type": "user", "uuid": "u"}])
    assert store.prune_finished(time.time() + 1)["sessions"] == 1
    assert store.load_transcript("c3") is None


def test_space_and_backup(store: EventLog, tmp_path: Path) -> None:
    assert store.space_problem() is None
    assert "locked" in store.busy_message()
    task_in(store, COMPLETED)
    copy = tmp_path / "copy.db"
    store.backup(str(copy))  # what the copy holds is the backend's own format (SQLite: see test_durable)
    assert copy.stat().st_size > 0
