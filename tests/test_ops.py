"""Operations against real servers: retention, the event cap, logs, metrics, webhooks,
worker logs and transcripts."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import TERMINAL, ScoutServer, read_sse, tagged_processes, wait_for
from scout.store import EventCapError, Store
from scout.transcript import session_markdown, task_markdown
from scout.webhooks import verify

DAY = 86400
LONG = "SLOW: 3000 0.1"  # runs for minutes unless stopped


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"{what} not met after {timeout}s (last: {value!r})")
        time.sleep(0.05)


def age(server: ScoutServer, task_ids: list[str], days: float, created_only: bool = False) -> None:
    """Move tasks' times `days` into the past, in the database file itself (for a running
    task only its creation: an old start would trip SCOUT_TASK_TIMEOUT)."""
    shift = days * DAY
    later = 0 if created_only else shift
    with sqlite3.connect(server.db, timeout=30) as conn:
        conn.executemany("UPDATE tasks SET created_at = created_at - ?, started_at = started_at - ?,"
                         " finished_at = finished_at - ? WHERE id = ?",
                         [(shift, later, later, t) for t in task_ids])
    conn.close()


def db_status(server: ScoutServer, task_id: str) -> str | None:
    """A task's status read from the file (no HTTP request, so nothing in the server log)."""
    conn = sqlite3.connect(server.db, timeout=30)
    try:
        row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return row[0] if row else None
    finally:
        conn.close()


def worker_log(server: ScoutServer, task_id: str) -> Path:
    return Path(server.db).parent / "logs" / f"{task_id}.log"


def prune(server: ScoutServer, **body: Any) -> dict[str, Any]:
    resp = server.post("/admin/prune", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


# -- retention -------------------------------------------------------------------------

def test_prune_deletes_exactly_the_old_finished_tasks(make_server):
    server = make_server(SCOUT_MAX_WORKERS="1")
    old_done = [server.chat(f"old {i}") for i in range(2)]
    shared = server.chat("old in a session that goes on")
    session = server.status(shared)["session_id"]
    for task_id in old_done + [shared]:
        assert server.wait(task_id)["status"] == "completed"
    recent_in_session = server.chat("recent, same session", session_id=session)
    recent = server.chat("recent alone")
    for task_id in (recent_in_session, recent):
        server.wait(task_id)
    cancelled = server.chat(LONG)
    server.wait(cancelled, statuses=("running",))
    # "running" comes with the claim; its leader opens the log a moment later (a stop in
    # between leaves no log, which is not what this test is about).
    wait_for(lambda: worker_log(server, cancelled).exists(), 30, "the stopped task's log")
    server.post(f"/chat/{cancelled}/stop")
    old_finished = old_done + [shared, cancelled]
    running = server.chat(LONG)
    server.wait(running, statuses=("running",))
    pending = server.chat("queued behind the running one")
    assert server.status(pending)["status"] == "pending"
    age(server, old_finished, days=40)
    age(server, [running, pending], days=40, created_only=True)
    events = {t: len(server.status(t)["events"]) for t in old_finished}
    sessions_before = {s["session_id"] for s in server.get("/sessions").json()["sessions"]}
    assert all(worker_log(server, t).exists() for t in old_finished)

    res = prune(server)  # the default age: SCOUT_RETENTION_DAYS, 30
    assert res["deleted_tasks"] == len(old_finished)
    assert res["deleted_events"] == sum(events.values())
    assert isinstance(res["freed_bytes"], int) and res["freed_bytes"] >= 0
    for task_id in old_finished:
        assert server.get(f"/chat/{task_id}/status").status_code == 404
        assert not worker_log(server, task_id).exists()
    for task_id in (recent_in_session, recent):
        assert server.status(task_id)["status"] == "completed"
    assert server.status(running)["status"] == "running"
    assert server.status(pending)["status"] == "pending"
    # Sessions left empty go; a session with a recent task stays, with just that task.
    sessions_after = {s["session_id"] for s in server.get("/sessions").json()["sessions"]}
    assert session in sessions_after and len(sessions_before - sessions_after) == 3
    assert res["deleted_sessions"] == 3
    assert [t["task_id"] for t in server.get(f"/sessions/{session}").json()["tasks"]] == [recent_in_session]

    # Nothing left that old; and even "everything finished" spares what is not finished.
    assert prune(server, older_than_days=30)["deleted_tasks"] == 0
    res = prune(server, older_than_days=0)
    assert res["deleted_tasks"] == 2
    assert server.status(running)["status"] == "running"
    assert server.status(pending)["status"] == "pending"
    listed = {t["task_id"] for t in server.get("/tasks").json()["tasks"]}
    assert listed == {running, pending}
    # The running task is still alive and logging.
    seen = len(server.status(running)["events"])
    eventually(lambda: len(server.status(running)["events"]) > seen, what="running task logs more")
    assert server.post(f"/chat/{running}/stop").json()["status"] == "cancelled"


def test_prune_gives_space_back(make_server):
    server = make_server()
    big = [server.chat("SLOW: 1500 0") for _ in range(2)]
    for task_id in big:
        assert server.wait(task_id, timeout=120)["status"] == "completed"
    assert len(server.status(big[0])["events"]) > 1500
    before = server.get("/health").json()["database"]["size_bytes"]
    res = prune(server, older_than_days=0)
    assert res["deleted_tasks"] == 2 and res["deleted_events"] > 3000
    after = server.get("/health").json()["database"]["size_bytes"]
    assert res["freed_bytes"] > 0 and after < before
    assert before - after >= res["freed_bytes"] - 1_000_000  # the rest are worker logs, a few kB
    conn = sqlite3.connect(server.db)
    try:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] < 10
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on
    finally:
        conn.close()
    wal = Path(server.db + "-wal")
    assert not wal.exists() or wal.stat().st_size < 200_000  # checkpointed and truncated


def test_retention_job_runs_at_start_and_periodically(make_server):
    first = make_server()
    old = [first.chat(f"to expire {i}") for i in range(2)]
    kept = first.chat("young")
    for task_id in old + [kept]:
        first.wait(task_id)
    assert first.stop() == 0
    age(first, old, days=3)

    off = make_server(start=False, SCOUT_RETENTION_DAYS="0")
    off.env = {**first.env, "SCOUT_RETENTION_DAYS": "0"}
    off.start()
    time.sleep(1)
    assert all(off.status(t)["status"] == "completed" for t in old)
    assert off.post("/admin/prune").json()["error"]["code"] == "retention_disabled"
    assert off.stop() == 0

    again = make_server(start=False)
    again.env = {**first.env, "SCOUT_RETENTION_DAYS": "2", "SCOUT_RETENTION_INTERVAL": "0.5"}
    again.start()
    for task_id in old:  # at start
        eventually(lambda: again.get(f"/chat/{task_id}/status").status_code == 404, what="pruned at start")
    assert again.status(kept)["status"] == "completed"
    age(again, [kept], days=2.5)  # then on the next tick
    eventually(lambda: again.get(f"/chat/{kept}/status").status_code == 404, what="pruned by the timer")
    # The counter moves just after the rows go (same thread), so a scrape can land in between.
    eventually(lambda: value(scrape(again), "scout_retention_deleted_total", what="tasks") == 3,
               timeout=5, what="3 deletions counted")


def test_prune_works_in_small_transactions_and_spares_unfinished_tasks(tmp_path: Path):
    store = Store(str(tmp_path / "unit.db"))
    done = []
    for n in (3, 20, 1, 0):
        task = store.create_task("m", {})
        store.transition(task.id, "running")
        for i in range(n):
            store.append_event(task.id, "text_delta", {"text": str(i)})
        store.transition(task.id, "completed")
        done.append(task.id)
    live = store.create_task("m", {})
    store.transition(live.id, "running")
    waiting = store.create_task("m", {}, session_id=store.get_task(done[0]).session_id)
    res = store.prune_finished(time.time() + 1, batch_events=7)  # "finished before now+1s": all of them
    assert res["tasks"] == 4 and sorted(res["task_ids"]) == sorted(done)
    assert res["events"] == (3 + 3) + (20 + 3) + (1 + 3) + (0 + 3)
    assert res["sessions"] == 3  # the first task's session still has the pending task
    assert all(store.get_task(t) is None for t in done)
    assert store.get_task(live.id).status == "running" and store.get_task(waiting.id).status == "pending"
    assert [e.seq for e in store.iter_events(live.id)] == [1, 2]
    assert store.prune_finished(time.time() + 1)["tasks"] == 0
    store.close()


def test_event_cap_in_the_store(tmp_path: Path):
    store = Store(str(tmp_path / "unit.db"))
    store.max_events_per_task = 4
    task = store.create_task("m", {})
    store.append_event(task.id, "text_delta", {"text": "a"})
    store.transition(task.id, "running")
    store.append_event(task.id, "text_delta", {"text": "b"})
    with pytest.raises(EventCapError, match="SCOUT_MAX_EVENTS_PER_TASK"):
        store.append_event(task.id, "text_delta", {"text": "c"})
    assert store.append_event(task.id, "status", {"status": "failed"}) == 5  # endings always fit
    other = store.create_task("m", {})  # the cap is per task
    assert store.append_event(other.id, "assistant", {"text": "x"}) == 2
    store.close()


def test_prune_request_validation(make_server):
    server = make_server(SCOUT_API_TOKEN="prune-token")
    url = server.url + "/admin/prune"
    # No keep-alive: an idle connection left open (until its response is garbage-collected)
    # keeps the server's shutdown waiting, and the fixture's stop with it.
    with requests.Session() as http:
        http.headers["Connection"] = "close"
        assert http.post(url, json={}, timeout=10).status_code == 401
        http.headers.update(server.headers())
        for body, code in (({"older_than_days": -1}, "invalid_field"), ({"older_than_days": "x"}, "invalid_field"),
                           ({"days": 3}, "unknown_field"), ([1], "invalid_body")):
            resp = http.post(url, json=body, timeout=10)
            assert resp.status_code == 400 and resp.json()["error"]["code"] == code, resp.text
        resp = http.post(url, data="older_than_days=3", timeout=10,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status_code == 415
        empty = http.post(url, timeout=10)
        assert empty.status_code == 200
        assert empty.json() == {"deleted_tasks": 0, "deleted_events": 0, "deleted_sessions": 0, "freed_bytes": 0,
                                "database_full": False}


# -- the event cap -----------------------------------------------------------------------

def test_event_cap_fails_the_task_clearly(make_server):
    server = make_server(SCOUT_MAX_EVENTS_PER_TASK="30")
    small = server.wait(server.chat("fits under the cap"))
    assert small["status"] == "completed" and len(small["events"]) < 30
    task_id = server.chat("SLOW: 300 0.01")
    doc = server.wait(task_id, timeout=60)
    assert doc["status"] == "failed"
    assert "SCOUT_MAX_EVENTS_PER_TASK" in doc["error"] and "30" in doc["error"], doc["error"]
    assert len(doc["events"]) == 31  # the cap, then the failed status (endings are always logged)
    assert doc["events"][-1]["type"] == "status" and doc["events"][-1]["payload"]["status"] == "failed"
    assert sum(e["type"] == "text_delta" for e in doc["events"]) < 30
    eventually(lambda: tagged_processes(task_id) == [], what="task processes gone")
    # The worker said why on its stderr, which the API serves.
    logs = server.get(f"/chat/{task_id}/logs")
    assert logs.status_code == 200 and "EventCapError" in logs.text


# -- worker logs and transcripts -----------------------------------------------------------

def test_worker_stderr_through_the_api(make_server):
    server = make_server(SCOUT_MAX_WORKERS="1", SCOUT_MAX_EVENTS_PER_TASK="12")
    task_id = server.chat("SLOW: 100 0.01")
    assert server.wait(task_id)["status"] == "failed"
    path = worker_log(server, task_id)
    text = path.read_text()
    assert "EventCapError" in text
    resp = server.get(f"/chat/{task_id}/logs")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.text == text
    tail = server.get(f"/chat/{task_id}/logs?tail=20")
    assert tail.content == path.read_bytes()[-20:]
    assert server.get(f"/chat/{task_id}/logs?tail=x").status_code == 400

    running = server.chat(LONG)
    server.wait(running, statuses=("running",))
    pending = server.chat("never started")
    resp = server.get(f"/chat/{pending}/logs")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "no_logs"
    missing = server.get("/chat/00000000-0000-0000-0000-000000000000/logs")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    server.post(f"/chat/{running}/stop")


def test_transcripts(server: ScoutServer, tmp_path: Path):
    first = server.chat("BASH: echo transcript-marker", cwd=str(tmp_path))
    session = server.wait(first)["session_id"]
    second = server.chat("and then?", session_id=session)
    server.wait(second)
    resp = server.get(f"/chat/{first}/transcript")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/markdown; charset=utf-8"
    assert resp.text == task_markdown(server.status(first))
    assert "transcript-marker" in resp.text and resp.text.startswith(f"# Task {first}")
    resp = server.get(f"/sessions/{session}/transcript")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/markdown; charset=utf-8"
    docs = [server.status(first), server.status(second)]
    assert resp.text == session_markdown(server.get(f"/sessions/{session}").json(), docs)
    assert "ECHO: and then?" in resp.text
    for path in ("/chat/00000000-0000-0000-0000-000000000000/transcript", "/sessions/nope/transcript"):
        resp = server.get(path)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


# -- metrics -----------------------------------------------------------------------------

def scrape(server: ScoutServer) -> dict[str, Any]:
    resp = server.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return {m.name: m for m in text_string_to_metric_families(resp.text)}


def value(families: dict[str, Any], sample: str, **labels: str) -> float | None:
    for family in families.values():
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_metrics_match_the_tasks(make_server):
    server = make_server(SCOUT_MAX_WORKERS="1", CLAUDE_CODE_MAX_RETRIES="0")
    done = [server.chat(f"metric {i}") for i in range(2)]
    failed = server.chat("ERROR: 401")
    for task_id in done + [failed]:
        server.wait(task_id, timeout=90)
    running = server.chat(LONG)
    server.wait(running, statuses=("running",))
    pending = server.chat("waits")

    stream = server.get(f"/chat/{running}/stream", stream=True)
    events = read_sse(stream, until_end=False)
    next(events)
    try:
        m = scrape(server)
        counts = {"completed": 2, "failed": 1, "running": 1, "pending": 1, "waiting": 0, "cancelled": 0}
        for status, n in counts.items():
            assert value(m, "scout_tasks", status=status) == n, status
        assert value(m, "scout_tasks_running") == 1 and value(m, "scout_tasks_pending") == 1
        assert value(m, "scout_workers_active") == 1
        assert value(m, "scout_sse_streams") == 1
        assert value(m, "scout_task_duration_seconds_count", status="completed") == 2
        assert value(m, "scout_task_duration_seconds_count", status="failed") == 1
        assert m["scout_task_duration_seconds"].type == "histogram"
    finally:
        stream.close()
    server.post(f"/chat/{running}/stop")
    server.post(f"/chat/{pending}/stop")

    def settled():
        m = scrape(server)
        return m if value(m, "scout_task_duration_seconds_count", status="cancelled") == 2 else None
    m = eventually(settled, what="cancelled tasks observed")
    assert value(m, "scout_tasks", status="cancelled") == 2
    assert value(m, "scout_tasks_running") == 0 and value(m, "scout_tasks_pending") == 0
    eventually(lambda: value(scrape(server), "scout_sse_streams") == 0, what="stream closed")
    total = sum(len(server.status(t)["events"]) for t in done + [failed, running, pending])
    assert value(m, "scout_events_written_total") == total
    assert m["scout_events_written"].type == "counter"
    # Deleting tasks does not lower a counter.
    prune(server, older_than_days=0)
    m = scrape(server)
    assert value(m, "scout_events_written_total") == total
    assert value(m, "scout_tasks", status="completed") == 0
    assert value(m, "scout_retention_deleted_total", what="tasks") == 5


# -- webhooks ------------------------------------------------------------------------------

class Receiver:
    """A webhook receiver on loopback recording every call; paths pick an answer."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.down = False  # while True, paths under /down answer 503
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    tries = sum(c["path"] == self.path for c in outer.calls)
                if self.path.startswith("/flaky") and tries == 1 or self.path.startswith("/down") and outer.down:
                    self.send_response(503)
                elif self.path.startswith("/redirect"):
                    self.send_response(307)
                    self.send_header("Location", "/elsewhere")
                else:
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.calls if c["path"] == path]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.httpd.shutdown()


SECRET = "whsec-7f3a9c"


def signed(call: dict[str, Any]) -> dict[str, Any]:
    """The call's JSON body, once its signature (over timestamp and body, Stripe style) checks out."""
    stamp = call["headers"]["X-Scout-Timestamp"]
    assert abs(time.time() - int(stamp)) < 120
    want = "sha256=" + hmac.new(SECRET.encode(), stamp.encode() + b"." + call["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(call["headers"]["X-Scout-Signature"], want)
    assert verify(SECRET, call["body"], call["headers"]["X-Scout-Signature"], stamp)
    assert not verify(SECRET, call["body"], call["headers"]["X-Scout-Signature"], stamp, now=int(stamp) + 301)
    assert not verify(SECRET, call["body"], call["headers"]["X-Scout-Signature"], str(int(stamp) + 1))
    assert call["headers"]["Content-Type"] == "application/json"
    return json.loads(call["body"])


def test_webhooks_one_signed_call_per_finished_task(make_server, receiver):
    server = make_server(SCOUT_WEBHOOK_SECRET=SECRET, SCOUT_WEBHOOK_URL=receiver.url + "/all")
    own = [server.chat(f"hooked {i}", webhook_url=receiver.url + f"/task{i}") for i in range(2)]
    plain = server.chat("global hook only")
    cancelled = server.chat(LONG, webhook_url=receiver.url + "/cancel")
    server.wait(cancelled, statuses=("running",))
    server.post(f"/chat/{cancelled}/stop")
    docs = {t: server.wait(t) for t in own + [plain, cancelled]}
    eventually(lambda: len(receiver.calls) >= 4 + 2 + 1, what="4 calls to the global hook, 3 to the tasks' own")
    time.sleep(1.5)  # nothing more may come
    got = [signed(c) for c in receiver.at("/all")]
    assert sorted(b["task_id"] for b in got) == sorted(docs)
    for i, task_id in enumerate(own):
        [call] = receiver.at(f"/task{i}")
        body = signed(call)
        assert body["task_id"] == task_id and body["status"] == "completed"
        assert body["session_id"] == docs[task_id]["session_id"] and body["event"] == "task.finished"
        assert call["headers"]["X-Scout-Event"] == "task.finished"
        assert call["headers"]["X-Scout-Delivery"] == body["delivery_id"]
    [call] = receiver.at("/cancel")
    assert signed(call)["status"] == "cancelled"
    assert len(receiver.calls) == 4 + 2 + 1
    # Counted once the sender has the answer, a moment after the receiver has the call.
    eventually(lambda: value(scrape(server), "scout_webhook_deliveries_total", result="delivered") == 7,
               timeout=10, what="7 deliveries counted")


def test_webhook_retries_and_refuses_redirects(make_server, receiver):
    server = make_server(SCOUT_WEBHOOK_SECRET=SECRET)
    flaky = server.wait(server.chat("flaky receiver", webhook_url=receiver.url + "/flaky"))
    calls = eventually(lambda: receiver.at("/flaky") if len(receiver.at("/flaky")) >= 2 else None,
                       what="a retry after a 503")
    assert calls[0]["body"] == calls[1]["body"] and signed(calls[1])["task_id"] == flaky["task_id"]
    server.wait(server.chat("redirecting receiver", webhook_url=receiver.url + "/redirect"))
    eventually(lambda: receiver.at("/redirect"), what="the redirecting call")
    time.sleep(2.5)
    assert len(receiver.at("/flaky")) == 2 and len(receiver.at("/redirect")) == 1
    assert receiver.at("/elsewhere") == []

    def counted() -> bool:
        m = scrape(server)
        return all(value(m, "scout_webhook_deliveries_total", result=r) == 1
                   for r in ("delivered", "retried", "failed"))
    eventually(counted, timeout=10, what="one delivered, one retried and one failed call counted")


def test_webhooks_outlive_a_server_crash_and_its_downtime(make_server, receiver):
    """Deliveries are at least once: one still being retried when the server is SIGKILLed,
    and one for a task that finishes while no server runs, both arrive after a restart."""
    server = make_server(SCOUT_WEBHOOK_SECRET=SECRET)
    receiver.down = True
    early = server.wait(server.chat("finished before the crash", webhook_url=receiver.url + "/down"))
    first_try = eventually(lambda: receiver.at("/down"), what="a first, failing, try")[0]
    late = server.chat("SLOW: 30 0.1", webhook_url=receiver.url + "/late")
    server.wait(late, statuses=("running",))
    server.kill()  # the retry is lost with the process; the task runs on, detached
    receiver.down = False
    store = Store(server.env["SCOUT_DB"])
    eventually(lambda: store.get_task(late).status == "completed", what="the task to finish unwatched")
    store.close()
    assert receiver.at("/late") == []

    again = make_server(start=False)
    again.env, again.port = server.env, server.port
    again.start()
    [late_call] = eventually(lambda: receiver.at("/late"), what="the webhook of the task that ended unwatched")
    assert signed(late_call)["task_id"] == late and signed(late_call)["status"] == "completed"
    delivered = eventually(lambda: [c for c in receiver.at("/down")[1:]], what="the lost retry, sent again")
    body = signed(delivered[-1])
    assert body["task_id"] == early["task_id"] and body["status"] == "completed"
    # The same delivery, by its id: a receiver drops what it has already seen.
    assert delivered[-1]["headers"]["X-Scout-Delivery"] == first_try["headers"]["X-Scout-Delivery"]
    time.sleep(1.5)
    assert len(receiver.at("/late")) == 1  # nothing sent twice once it got through


def test_webhook_when_a_task_waits_for_approval(make_server, receiver, tmp_path: Path):
    modes = tmp_path / "modes.toml"
    modes.write_text('[modes.Careful]\nallowed_tools = ["Read"]\napproval_tools = ["Write"]\n')
    server = make_server(SCOUT_MODES_FILE=str(modes), SCOUT_WEBHOOK_SECRET=SECRET)
    target = tmp_path / "hooked.txt"
    prompt = "TOOL: Write " + json.dumps({"file_path": str(target), "content": "x"})
    task_id = server.chat(prompt, mode="Careful", cwd=str(tmp_path), webhook_url=receiver.url + "/h")
    [call] = eventually(lambda: receiver.at("/h"), what="the waiting call")
    body = signed(call)
    assert body["event"] == "task.waiting" and body["status"] == "waiting" and body["task_id"] == task_id
    assert body["approval"]["tool"] == "Write"
    server.post(f"/chat/{task_id}/approve", json={"decision": "allow"})
    assert server.wait(task_id)["status"] == "completed"
    calls = eventually(lambda: receiver.at("/h") if len(receiver.at("/h")) == 2 else None, what="finished call")
    assert signed(calls[1])["event"] == "task.finished"


def test_webhook_hosts_are_allow_listed(make_server, receiver):
    server = make_server()
    for url in ("http://example.com/hook", "http://10.0.0.1/hook", "http://127.0.0.1.nip.io/x",
                "http://localhost.example.com/"):
        resp = server.post("/chat", json={"message": "hi", "webhook_url": url})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "webhook_not_allowed", resp.text
        assert "SCOUT_WEBHOOK_HOSTS" in resp.json()["error"]["message"]
    for url in ("ftp://127.0.0.1/x", "http://user:pw@127.0.0.1/x", "not a url", "http://127.0.0.1:99999/"):
        resp = server.post("/chat", json={"message": "hi", "webhook_url": url})
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_field", resp.text
    assert server.get("/tasks").json()["tasks"] == []
    for url in (receiver.url + "/ok", receiver.url.replace("127.0.0.1", "localhost") + "/ok"):
        assert server.post("/chat", json={"message": "ok", "webhook_url": url}).status_code == 202

    other = make_server(SCOUT_WEBHOOK_HOSTS="hooks.internal")
    resp = other.post("/chat", json={"message": "hi", "webhook_url": receiver.url})
    assert resp.status_code == 400 and "hooks.internal" in resp.json()["error"]["message"]

    bad = make_server(start=False, SCOUT_WEBHOOK_URL="https://example.com/hook")
    with pytest.raises(RuntimeError) as exc:
        bad.start()
    assert "SCOUT_WEBHOOK_URL" in str(exc.value) and "not allowed" in str(exc.value)


# -- the server's own log -----------------------------------------------------------------

TOKEN = "tok-SECRET-5d1e7b"
API_KEY = "sk-ant-SECRET-93c2aa"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_for_requests_and_state_changes(make_server, receiver, fmt):
    server = make_server(SCOUT_LOG_FORMAT=fmt, SCOUT_LOG_LEVEL="INFO", SCOUT_API_TOKEN=TOKEN,
                         ANTHROPIC_API_KEY=API_KEY, SCOUT_WEBHOOK_SECRET=SECRET)
    start_lines = len(server.log().splitlines())
    made: list[tuple[str, str, int]] = []

    def call(method: str, path: str, **kw: Any) -> requests.Response:
        resp = getattr(server, method.lower())(path, **kw)
        made.append((method, path, resp.status_code))
        return resp

    ids = [call("POST", "/chat", json={"message": f"log me {i}", "webhook_url": receiver.url + "/l"}).json()["task_id"]
           for i in range(2)]
    for task_id in ids:
        eventually(lambda: db_status(server, task_id) in TERMINAL, what="task finished")
    call("GET", "/tasks")
    call("GET", "/chat/00000000-0000-0000-0000-000000000000/status")
    with call("GET", f"/chat/{ids[0]}/stream", stream=True) as stream:
        assert list(read_sse(stream))[-1]["event"] == "end"
    resp = requests.get(server.url + "/tasks", timeout=10)  # no token
    made.append(("GET", "/tasks", resp.status_code))
    assert resp.status_code == 401
    call("GET", "/health")
    call("GET", "/chat/x%0Ainjected%20line/status")  # a decoded newline must not start a log line
    eventually(lambda: len(receiver.at("/l")) == 2, what="webhooks")

    def lines() -> list[str]:
        return [x for x in server.log().splitlines()[start_lines:] if x.strip()]

    if fmt == "json":
        def parsed() -> list[dict[str, Any]]:
            every = [json.loads(x) for x in server.log().splitlines() if x.strip()]  # every line is JSON
            return every[start_lines:]
        requests_logged = eventually(lambda: (lambda r: r if len(r) == len(made) else None)(
            [d for d in parsed() if d.get("event") == "request"]), what="request lines")
        # (the stream's line is written when it closes, so order is not kept)
        made[-1] = ("GET", "/chat/x\\ninjected line/status", 404)
        assert sorted((d["method"], d["path"], d["status"]) for d in requests_logged) == sorted(made)
        assert all(isinstance(d["duration_ms"], float) and d["level"] == "info" for d in requests_logged)
        for task_id in ids:  # written by the status follower, a thread of its own: wait for it
            mine = eventually(lambda: (lambda m: m if len(m) >= 3 else None)(
                [d for d in parsed() if d.get("event") == "task_status" and d["task_id"] == task_id]),
                what="the task's status lines")
            assert [d["status"] for d in mine] == ["pending", "running", "completed"]
            assert all(d["duration_s"] >= 0 for d in mine) and mine[-1]["run_s"] >= 0
            assert mine[-1]["session_id"] == server.status(task_id)["session_id"]
    else:
        def request_lines() -> list[str]:
            return [x for x in lines() if " INFO scout.requests: " in x]
        logged = eventually(lambda: (lambda r: r if len(r) == len(made) else None)(request_lines()),
                            what="request lines")
        got = []
        for line in logged:
            match = re.search(r"scout\.requests: (GET|POST) (.+) (\d{3}) \d+\.\dms$", line)
            assert match, line
            got.append((match[1], match[2], int(match[3])))
        made[-1] = ("GET", "/chat/x\\ninjected line/status", 404)
        assert sorted(got) == sorted(made)
        assert not any(x.startswith("injected") for x in lines())
        for task_id in ids:  # written by the status follower, a thread of its own: wait for it
            mine = eventually(lambda: (lambda m: m if len(m) >= 3 else None)(
                [x for x in lines() if f"scout.tasks: task {task_id} " in x]), what="the task's status lines")
            assert [x.split(f"task {task_id} ")[1].split()[0] for x in mine] == ["pending", "running", "completed"]
            assert re.search(r"completed [\d.]+s after it was created, ran [\d.]+s$", mine[-1]), mine[-1]
    text = server.log()
    for secret in (TOKEN, API_KEY, SECRET):
        assert secret not in text
    for task_id in ids:
        assert all(s not in worker_log(server, task_id).read_text() for s in (TOKEN, API_KEY, SECRET))
