"""8. Streams cannot starve the API: /health latency with 1,000 SSE streams open.

Every SSE stream holds a waitress thread, so the server keeps SCOUT_MAX_STREAMS threads
for streams on top of SCOUT_THREADS for everything else (scout/server.py). Here
SCOUT_MAX_STREAMS=1000 (`--quick`: 300): four tasks whose scripted reply waits 120 s
(the CLIs are alive but silent) get 1,000 streams between them, raw sockets followed by
one selector thread. Once every stream has its 200 and its replay, `GET /health` is timed
on one keep-alive connection, 300 times back to back (`--quick`: 100), and `POST /chat`
20 times. Then one stream more is asked for: past the cap it must be a 503 with
Retry-After, not a wait. Last, 100 streams are dropped without a word (sockets closed),
and the time until /health counts them gone is measured (the server notices a gone
client within about a second; the target allows five).
"""
from __future__ import annotations

import time
from typing import Any

from .harness import Client, Context, Result, SSEHub, summary_ms


def run(ctx: Context) -> Result:
    streams = 300 if ctx.quick else 1000
    samples = 100 if ctx.quick else 300
    tasks = 4
    res = Result("streams", params={"streams": streams, "tasks": tasks, "health_samples": samples,
                                    "task_reply": "SLOW: 2 120", "SCOUT_MAX_STREAMS": streams,
                                    "SCOUT_THREADS": 32})
    scratch = ctx.scratch("streams")
    try:
        server = scratch.server(SCOUT_MAX_WORKERS=tasks, SCOUT_MAX_STREAMS=streams, SCOUT_THREADS=32,
                                SCOUT_SSE_KEEPALIVE=15)
        started: set[str] = set()

        def on_event(conn: Any, etype: str, payload: dict[str, Any], at: float) -> None:
            if etype == "system":
                started.add(conn.task_id)

        hub = SSEHub(server.port, on_event).start()
        try:
            ids = [server.chat("SLOW: 2 120") for _ in range(tasks)]
            t0 = time.monotonic()
            conns = [hub.open(ids[i % tasks]) for i in range(streams)]
            _until(lambda: all(c.status for c in conns) and len(started) == tasks, 180,
                   f"{streams} streams answered and {tasks} CLIs started")
            res.metrics["open_s"] = time.monotonic() - t0
            refused = [c.status for c in conns if c.status != 200]
            proc = server.ps
            res.metrics["server_threads"] = proc.num_threads()
            res.metrics["server_rss_mb"] = proc.memory_info().rss / 1e6
            with Client(server.port) as c:
                health = [c.timed("GET", "/health") for _ in range(samples)]
                chats = [c.timed("POST", "/chat", {"message": "hello", "on_busy": "queue"})
                         for _ in range(20)]
                status, over = c.get(f"/chat/{ids[0]}/stream")
                open_before = c.get("/health")[1]["streams"]
                dropped = [hub_conn for hub_conn in conns[:100]]
                with hub._lock:
                    for conn in dropped:
                        hub.sel.unregister(conn.sock)
                        conn.sock.close()
                        conn.closed = True
                t1 = time.monotonic()
                _until(lambda: c.get("/health")[1]["streams"] <= open_before - len(dropped), 60,
                       "the dropped streams freed")
                freed_s = time.monotonic() - t1
        finally:
            hub.close()
        h = summary_ms(d for d, _, _ in health)
        p = summary_ms(d for d, _, _ in chats)
        res.metrics.update({"health_ms": h, "chat_ms": p, "streams_refused_below_cap": len(refused),
                            "health_statuses": sorted({s for _, s, _ in health}),
                            "chat_statuses": sorted({s for _, s, _ in chats}),
                            "over_cap_status": status, "over_cap_body": over,
                            "streams_open": open_before, "dropped_freed_s": freed_s})
        res.check(f"/health p99 with {open_before} streams open", h["p99"], "<", 50, "ms")
        res.check("POST /chat p99 meanwhile", p["p99"], "<", 100, "ms")
        res.check(f"stream {streams + 1} refused at once (HTTP)", status, "==", 503)
        res.check("100 dropped clients freed their streams", freed_s, "<", 5, "s")
        res.show("/health p50 / max", f"{h['p50']:.1f} / {h['max']:.1f}", "ms")
        res.show("server threads / RSS", f"{res.metrics['server_threads']} / "
                 f"{res.metrics['server_rss_mb']:.0f}", "MB")
        return res
    finally:
        scratch.cleanup()


def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {what}")
        time.sleep(0.05)
