"""5. Event ingest: 20 writer processes appending through scout.store.Store.append_event.

Each writer is a process of its own (as each worker is) with its own Store, appending
text-delta-sized events to a task of its own as fast as it can, all released at once.
A Scout server runs on the same database throughout, so its log watcher reads while
they write, as in production. The tasks are created (and marked completed, so the
supervisor leaves them alone) before the server starts.

Throughput is all events over the time from the release to the last writer's end.
Afterwards every task's seqs must be exactly 1..N+1 (none lost, none duplicated).
"""
from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from typing import Any

from .harness import Context, Result, percentile


def writer(db: str, task_id: str, count: int, go: Any, out: Any) -> None:
    from scout.store import Store

    store = Store(db, migrate=False)
    store.get_task(task_id)  # open the connection before the clock starts
    go.wait()
    lat = []
    errors = 0
    t0 = time.time()
    for i in range(count):
        a = time.perf_counter()
        try:
            store.append_event(task_id, "text_delta", {"text": f"word{i} ", "parent_tool_use_id": None})
        except Exception:  # noqa: BLE001 - counted, reported
            errors += 1
        lat.append(time.perf_counter() - a)
    t1 = time.time()
    store.close()
    lat.sort()
    out.put({"task_id": task_id, "start": t0, "end": t1, "errors": errors,
             "p50": percentile(lat, 50), "p99": percentile(lat, 99), "max": lat[-1]})


def run(ctx: Context) -> Result:
    writers = 20
    per = 250 if ctx.quick else 1000
    res = Result("ingest", params={"writers": writers, "events_per_writer": per, "payload": "text_delta"})
    scratch = ctx.scratch("ingest")
    try:
        from scout.store import Store
        from scout.vocab import COMPLETED, RUNNING

        store = Store(scratch.db)
        ids = []
        for i in range(writers):
            task = store.create_task(f"ingest {i}", {"cwd": scratch.cwd})
            store.transition(task.id, RUNNING)
            store.transition(task.id, COMPLETED)
            ids.append(task.id)
        store.close()
        server = scratch.server()
        spawn = mp.get_context("spawn")
        go, out = spawn.Event(), spawn.Queue()
        procs = [spawn.Process(target=writer, args=(scratch.db, tid, per, go, out), daemon=True) for tid in ids]
        for p in procs:
            p.start()
        time.sleep(1.0 if ctx.quick else 2.0)  # let them import and open their connections
        go.set()
        reports = [out.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(30)
        start = min(r["start"] for r in reports)
        end = max(r["end"] for r in reports)
        total = writers * per
        rate = total / (end - start)
        conn = sqlite3.connect(scratch.db)
        lost = dup = 0
        for tid in ids:
            n, distinct, top = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT seq), MAX(seq) FROM events WHERE task_id = ?", (tid,)).fetchone()
            expected = per + 3  # + the pending, running and completed status events
            lost += max(0, expected - distinct)
            dup += n - distinct
            if top != n:
                lost += 1  # a gap
        conn.close()
        errors = sum(r["errors"] for r in reports)
        status, health = server.request("GET", "/health")
        res.metrics = {"events": total, "seconds": end - start, "events_per_s": rate,
                       "lost": lost, "duplicated": dup, "write_errors": errors,
                       "append_ms_p50_worst_writer": max(r["p50"] for r in reports) * 1000,
                       "append_ms_p99_worst_writer": max(r["p99"] for r in reports) * 1000,
                       "append_ms_max": max(r["max"] for r in reports) * 1000,
                       "server_health_after": status}
        res.check(f"ingest from {writers} writer processes", rate, ">=", 5000, "events/s")
        res.check("events lost or duplicated", lost + dup + errors, "==", 0)
        res.show("append_event latency p50 / p99 / max (worst writer)",
                 f"{res.metrics['append_ms_p50_worst_writer']:.2f} / "
                 f"{res.metrics['append_ms_p99_worst_writer']:.1f} / {res.metrics['append_ms_max']:.0f}", "ms")
        return res
    finally:
        scratch.cleanup()
