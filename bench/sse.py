"""3. SSE delivery latency with 200 clients streaming at once; idle server CPU with 200 streams.

Delivery: ten tasks (SCOUT_MAX_WORKERS=10) each stream a scripted reply, one text delta
every 100 ms; twenty SSE clients follow each task (200 streams, raw sockets read by one
selector thread in this process, timestamped on receipt). Latency is the receipt time
minus the event's `time` field (set by the worker as it commits the event; same clock).
Only events committed during the measurement window, after every stream is open and
every task streams, count. Every stream's seq numbers are checked for gaps.

Idle: on a fresh server, ten tasks whose scripted reply waits 120 s before its first
delta (so the CLIs and workers are alive but silent), and 200 streams on them. The
server process's CPU time (psutil, user+system, the server process alone) is sampled
over the window, first with no streams, then with the 200 streams.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from .harness import Context, CpuWindow, Result, SSEHub, summary_ms


def run(ctx: Context) -> Result:
    quick = ctx.quick
    tasks = 4 if quick else 10
    clients = 40 if quick else 200
    window = 4.0 if quick else 10.0
    idle_window = 5.0 if quick else 10.0
    deltas, every = (150, 0.1) if quick else (300, 0.1)
    res = Result("sse", params={"tasks": tasks, "clients": clients, "window_s": window,
                                "idle_window_s": idle_window, "task_reply": f"SLOW: {deltas} {every}",
                                "max_workers": tasks})
    delivery(ctx, res, tasks, clients, window, deltas, every)
    idle(ctx, res, tasks, clients, idle_window)
    return res


def delivery(ctx: Context, res: Result, tasks: int, clients: int, window: float, deltas: int,
             every: float, db: str | None = None) -> None:
    """``db``: another SCOUT_DB than the scratch's own SQLite file (bench/postgres.py)."""
    scratch = ctx.scratch("sse-delivery")
    try:
        server = scratch.server(SCOUT_MAX_WORKERS=tasks, **({"SCOUT_DB": db} if db else {}))
        lock = threading.Lock()
        samples: list[tuple[float, float]] = []  # (event time, latency)
        streaming: set[str] = set()
        last_seq: dict[int, int] = {}
        gaps: Counter[str] = Counter()
        per_event: dict[tuple[str, int], tuple[float, float, float]] = {}  # first/last receipt, time

        def on_event(conn, etype, payload, at):
            seq = payload.get("seq")
            if seq is not None:
                prev = last_seq.get(id(conn), 0)
                if seq != prev + 1:
                    gaps[conn.task_id] += 1
                last_seq[id(conn)] = seq
            if etype == "text_delta":
                with lock:
                    samples.append((payload["time"], at - payload["time"]))
                    streaming.add(conn.task_id)
                    key = (conn.task_id, seq)
                    lo, hi, _ = per_event.get(key, (at, at, 0.0))
                    per_event[key] = (min(lo, at), max(hi, at), payload["time"])

        hub = SSEHub(server.port, on_event).start()
        try:
            ids = [server.chat(f"SLOW: {deltas} {every}") for _ in range(tasks)]
            t0 = time.time()
            for i in range(clients):
                hub.open(ids[i % tasks])
            opened = time.time() - t0
            deadline = time.time() + 120
            while time.time() < deadline and len(streaming) < tasks:
                time.sleep(0.1)
            if len(streaming) < tasks:
                raise RuntimeError(f"only {len(streaming)}/{tasks} tasks streaming after 120 s")
            start = time.time() + 0.5
            cpu = CpuWindow(server.ps)
            time.sleep(window + 0.5)
            load = cpu.stop()
            end = time.time()
            time.sleep(2.0)  # events of the window still on their way are counted too
            open_streams = hub.open_count()
            errors = list(hub.errors)
        finally:
            hub.close()
        with lock:
            lat = [d for (t, d) in samples if start <= t < end]
            first = [lo - t for (lo, hi, t) in per_event.values() if start <= t < end]
            spread = [hi - lo for (lo, hi, t) in per_event.values() if start <= t < end]
            in_window = sum(1 for (lo, hi, t) in per_event.values() if start <= t < end)
        missing = in_window * (clients // tasks) - len(lat)  # not delivered within 2 s of the window's end
        s = summary_ms(lat)
        res.metrics["delivery_ms"] = s
        res.metrics["deliveries_missing_after_2s"] = missing
        # Where the time goes: to the first of an event's streams (the worker's commit, the
        # log watcher's poll, one wake-up) and from the first to the last of its streams
        # (the server's fan-out to the other streams of the task).
        res.metrics["first_stream_ms"] = summary_ms(first)
        res.metrics["fan_out_spread_ms"] = summary_ms(spread)
        res.metrics["deliveries_per_s"] = len(lat) / (end - start)
        res.metrics["streams_open_at_end"] = open_streams
        res.metrics["seq_gaps"] = sum(gaps.values())
        res.metrics["stream_errors"] = errors[:20]
        res.metrics["cpu_during_window"] = load
        res.check(f"SSE delivery p50 ({clients} streams)", s.get("p50"), "<", 30, "ms")
        res.check(f"SSE delivery p99 ({clients} streams)", s.get("p99"), "<", 100, "ms")
        res.show("to an event's first stream p50 / p99",
                 f"{res.metrics['first_stream_ms']['p50']:.1f} / {res.metrics['first_stream_ms']['p99']:.1f}", "ms")
        res.show("first to last stream of an event p50 / p99",
                 f"{res.metrics['fan_out_spread_ms']['p50']:.1f} / {res.metrics['fan_out_spread_ms']['p99']:.1f}", "ms")
        res.show("deliveries measured / per second", f"{s['n']:,} / {len(lat) / (end - start):,.0f}")
        res.show("streams open / seq gaps / errors / undelivered after 2 s",
                 f"{open_streams}/{clients} / {sum(gaps.values())} / {len(errors)} / {missing}")
        res.show(f"time to open {clients} streams", opened, "s")
        res.show("machine CPU busy / server CPU during the window",
                 f"{load['machine_busy_percent']:.0f} % / {load['server_cpu_percent_of_core']:.0f} % of a core")
    finally:
        scratch.cleanup()


def idle(ctx: Context, res: Result, tasks: int, clients: int, window: float) -> None:
    scratch = ctx.scratch("sse-idle")
    try:
        server = scratch.server(SCOUT_MAX_WORKERS=tasks)
        inits: set[str] = set()
        received: Counter[str] = Counter()

        def on_event(conn, etype, payload, at):
            received[etype] += 1
            if etype == "system":
                inits.add(conn.task_id)

        hub = SSEHub(server.port, on_event).start()
        try:
            ids = [server.chat("SLOW: 2 120") for _ in range(tasks)]
            for tid in ids:  # one stream each, to know when each CLI has started
                hub.open(tid)
            deadline = time.time() + 120
            while time.time() < deadline and len(inits) < tasks:
                time.sleep(0.1)
            if len(inits) < tasks:
                raise RuntimeError(f"only {len(inits)}/{tasks} CLIs started after 120 s")
            time.sleep(2.0)  # let the CLIs settle into waiting on the model
            ps = server.ps
            base = cpu_share(ps, min(window, 5.0))
            for i in range(clients - tasks):
                hub.open(ids[i % tasks])
            time.sleep(2.0)  # let the replays finish
            open_streams = hub.open_count()
            before = sum(received.values())
            share = cpu_share(ps, window)
            during = sum(received.values()) - before
            health = server.request("GET", "/health")[1]
        finally:
            hub.close()
        res.metrics["idle_cpu_percent_no_streams"] = base
        res.metrics["idle_cpu_percent_with_streams"] = share
        res.metrics["idle_streams_open"] = open_streams
        res.metrics["idle_events_during_window"] = during
        res.metrics["health_streams"] = health.get("streams") if isinstance(health, dict) else None
        res.check(f"idle server CPU with {open_streams} streams", share, "<", 5.0, "% of a core")
        res.show("idle server CPU with no streams", base, "% of a core")
    finally:
        scratch.cleanup()


def cpu_share(ps: Any, seconds: float) -> float:
    """The process's CPU use over `seconds`, in percent of one core."""
    t = ps.cpu_times()
    c0, w0 = t.user + t.system, time.monotonic()
    time.sleep(seconds)
    t = ps.cpu_times()
    return 100.0 * (t.user + t.system - c0) / (time.monotonic() - w0)
