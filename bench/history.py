"""7. Big histories: one task with 10,000 events; a log of 100,000 tasks.

The database is filled through the Store's public methods (create_task, append_event,
transition; it has no bulk insert) before the server starts; every task ends completed
(by way of running: the store allows only the legal moves) so the supervisor leaves them alone.
Then, against the server:

* GET /chat/{id}/status (with its 10,000 events) and GET /chat/{id}/stream (replaying
  them): time to the first byte on a new connection, and to the end of the answer;
* GET /tasks (first page, default limit 50) over 100,000 tasks, on a keep-alive
  connection; a deep page (cursor half-way), a status filter, /sessions and /health
  are shown beside it.
"""
from __future__ import annotations

import socket
import time

from .harness import Context, Result, summary_ms, ttfb


def fill(db: str, tasks: int, events: int, cwd: str) -> tuple[str, float, float]:
    from scout.store import Store
    from scout.vocab import COMPLETED, RUNNING

    store = Store(db)
    try:
        t0 = time.time()
        options = {"mode": "Scout", "cwd": cwd}
        result = {"text": "ECHO: done", "subtype": "success", "is_error": False, "duration_ms": 20,
                  "num_turns": 1, "total_cost_usd": 0.01}
        for i in range(tasks - 1):
            task = store.create_task(f"task {i}: a message of a realistic length, asking for something", options)
            store.transition(task.id, RUNNING)
            store.transition(task.id, COMPLETED, result=result)
        tasks_s = time.time() - t0
        t0 = time.time()
        big = store.create_task("the one with a long history", options)
        store.transition(big.id, RUNNING)
        for i in range(events - 3):
            if i % 100 == 99:
                store.append_event(big.id, "tool_use", {"id": f"toolu_{i}", "name": "Bash",
                                                        "input": {"command": f"echo {i}"}, "parent_tool_use_id": None})
            else:
                store.append_event(big.id, "text_delta", {"text": f"word{i} ", "parent_tool_use_id": None})
        store.append_event(big.id, "result", result)
        store.transition(big.id, COMPLETED, result=result)
        return big.id, tasks_s, time.time() - t0
    finally:
        store.close()


def stream_times(port: int, path: str, timeout: float = 60.0) -> tuple[float, float, float]:
    """(first byte, first SSE event, end of stream) in seconds, HTTP/1.0 on a new connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        t0 = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        first_byte = first_event = None
        buf = b""
        while True:
            chunk = sock.recv(1 << 20)
            now = time.perf_counter() - t0
            if not chunk:
                return first_byte or now, first_event or now, now
            if first_byte is None:
                first_byte = now
            if first_event is None:
                buf += chunk
                if b"\nid: " in buf or buf.startswith(b"id: "):
                    first_event = now
                    buf = b""
    finally:
        sock.close()


def run(ctx: Context) -> Result:
    tasks = 10_000 if ctx.quick else 100_000
    events = 10_000
    reps = 5 if ctx.quick else 20
    list_reps = 30 if ctx.quick else 100
    res = Result("history", params={"tasks": tasks, "events_in_big_task": events, "ttfb_repeats": reps,
                                    "list_repeats": list_reps})
    scratch = ctx.scratch("history")
    try:
        big, tasks_s, events_s = fill(scratch.db, tasks, events, scratch.cwd)
        res.show(f"fill via Store: {tasks:,} tasks / {events:,} events",
                 f"{tasks_s:.1f} / {events_s:.1f}", "s")
        server = scratch.server()
        # warm up: the first read of a cold table pays for the page cache
        ttfb(server.port, f"/chat/{big}/status")
        stream_times(server.port, f"/chat/{big}/stream")
        status = [ttfb(server.port, f"/chat/{big}/status") for _ in range(reps)]
        nolog = [ttfb(server.port, f"/chat/{big}/status?events=false") for _ in range(reps)]
        streams = [stream_times(server.port, f"/chat/{big}/stream") for _ in range(reps)]
        body_bytes = status[0][2]
        st_first, st_end = summary_ms(s[0] for s in status), summary_ms(s[1] for s in status)
        sm_first = summary_ms(s[0] for s in streams)
        sm_event = summary_ms(s[1] for s in streams)
        sm_end = summary_ms(s[2] for s in streams)
        lists: dict[str, dict] = {}
        mid = tasks // 2
        with server.client() as c:
            for name, path in (("tasks", "/tasks"), ("tasks_deep_page", f"/tasks?cursor={mid}"),
                               ("tasks_status_completed", "/tasks?status=completed"),
                               ("tasks_limit_1000", "/tasks?limit=1000"),
                               ("sessions", "/sessions"), ("health", "/health")):
                c.get(path)
                reps_here = list_reps if name in ("tasks", "tasks_deep_page", "tasks_status_completed") \
                    else max(5, list_reps // 5)
                lat = []
                for _ in range(reps_here):
                    dt, code, _ = c.timed("GET", path)
                    if code != 200:
                        raise RuntimeError(f"GET {path} answered {code}")
                    lat.append(dt)
                lists[name] = summary_ms(lat)
        res.metrics = {"status_first_byte_ms": st_first, "status_total_ms": st_end,
                       "status_body_bytes": body_bytes,
                       "status_no_events_first_byte_ms": summary_ms(s[0] for s in nolog),
                       "stream_first_byte_ms": sm_first, "stream_first_event_ms": sm_event,
                       "stream_replay_end_ms": sm_end, "lists_ms": lists,
                       "fill_tasks_s": tasks_s, "fill_events_s": events_s}
        res.check(f"status of a {events:,}-event task: first byte p50", st_first["p50"], "<", 100, "ms")
        res.check(f"stream of a {events:,}-event task: first byte p50", sm_first["p50"], "<", 100, "ms")
        res.check(f"GET /tasks over {tasks:,} tasks p99", lists["tasks"]["p99"], "<", 50, "ms")
        res.show("status: whole answer p50 / size",
                 f"{st_end['p50']:.0f} ms / {body_bytes / 2**20:.1f} MB")
        res.show("stream: first event p50 / full replay p50", f"{sm_event['p50']:.0f} / {sm_end['p50']:.0f}", "ms")
        res.show("status?events=false first byte p50", res.metrics["status_no_events_first_byte_ms"]["p50"], "ms")
        res.show("GET /tasks p50 / deep page p99 / ?status= p99",
                 f"{lists['tasks']['p50']:.1f} / {lists['tasks_deep_page']['p99']:.1f} / "
                 f"{lists['tasks_status_completed']['p99']:.1f}", "ms")
        res.show("GET /tasks?limit=1000 / /sessions / /health p50",
                 f"{lists['tasks_limit_1000']['p50']:.0f} / {lists['sessions']['p50']:.0f} / "
                 f"{lists['health']['p50']:.0f}", "ms")
        return res
    finally:
        scratch.cleanup()
