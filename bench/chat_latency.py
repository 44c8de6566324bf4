"""2. POST /chat latency while 20 tasks run.

Twenty tasks (SCOUT_MAX_WORKERS=20) each stream a long scripted reply, one text delta
every 50 ms, followed by an SSE client each (which is also how we know they are all
live). Once every task is streaming, one keep-alive client POSTs /chat back to back
(with a short pause) for the measurement window; those tasks queue behind the running
twenty. We check that all twenty kept streaming through the window.
"""
from __future__ import annotations

import threading
import time
from collections import Counter

from .harness import Context, CpuWindow, Result, SSEHub, summary_ms


def run(ctx: Context) -> Result:
    tasks = 5 if ctx.quick else 20
    window = 4.0 if ctx.quick else 10.0
    pause = 0.05
    deltas, every = (300, 0.05) if ctx.quick else (700, 0.05)
    res = Result("chat", params={"running_tasks": tasks, "window_s": window, "pause_between_posts_s": pause,
                                 "task_reply": f"SLOW: {deltas} {every}", "max_workers": tasks})
    scratch = ctx.scratch("chat")
    try:
        server = scratch.server(SCOUT_MAX_WORKERS=tasks)
        counts: Counter[str] = Counter()
        lock = threading.Lock()

        def on_event(conn, etype, payload, at):
            if etype == "text_delta":
                with lock:
                    counts[conn.task_id] += 1

        hub = SSEHub(server.port, on_event).start()
        try:
            t_start = time.time()
            ids = [server.chat(f"SLOW: {deltas} {every}") for _ in range(tasks)]
            for tid in ids:
                hub.open(tid)
            deadline = time.time() + 120
            while time.time() < deadline and sum(1 for t in ids if counts[t] > 0) < tasks:
                time.sleep(0.1)
            streaming = sum(1 for t in ids if counts[t] > 0)
            if streaming < tasks:
                raise RuntimeError(f"only {streaming}/{tasks} tasks streaming after 120 s")
            res.show("time until all tasks stream", time.time() - t_start, "s")
            before = dict(counts)
            lat: list[float] = []
            statuses: Counter[int] = Counter()
            end = time.time() + window
            cpu = CpuWindow(server.ps)
            with server.client() as c:
                while time.time() < end:
                    dt, status, _ = c.timed("POST", "/chat", {"message": "queued while busy"})
                    lat.append(dt)
                    statuses[status] += 1
                    time.sleep(pause)
            after = dict(counts)
            load = cpu.stop()
        finally:
            hub.close()
        live = sum(1 for t in ids if after.get(t, 0) > before.get(t, 0))
        events = sum(after.get(t, 0) - before.get(t, 0) for t in ids)
        s = summary_ms(lat)
        res.metrics = {"post_chat_ms": s, "statuses": dict(statuses),
                       "tasks_streaming_through_window": live, "text_delta_events_per_s": events / window,
                       "cpu_during_window": load}
        res.check("POST /chat p99 while tasks run", s["p99"], "<", 20, "ms")
        res.show("POST /chat p50 / max", f"{s['p50']:.1f} / {s['max']:.1f}", "ms")
        res.show("requests (all 202?)", f"{s['n']} ({'yes' if set(statuses) == {202} else dict(statuses)})")
        res.show("tasks streaming through the window", f"{live}/{tasks}")
        res.show("events logged meanwhile", events / window, "events/s")
        res.show("machine CPU busy / server CPU during the window",
                 f"{load['machine_busy_percent']:.0f} % / {load['server_cpu_percent_of_core']:.0f} % of a core")
        return res
    finally:
        scratch.cleanup()
