"""4. Fifty one-turn tasks at once, with /health polled meanwhile.

SCOUT_MAX_WORKERS=50, so every task gets its own worker and Claude Code at once. The
fifty POSTs go out back to back from 10 threads; a separate keep-alive client GETs
/health every 50 ms until every task has finished. Reported: how many completed (the
target is all), failures with their errors, the wall time, the peak number of tasks
running at once (from /health) and /health's latency. The /health poller is also how the
benchmark learns that every task has ended, so it adds no other load meanwhile.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from .harness import Context, CpuWindow, Result, summary_ms


def run(ctx: Context) -> Result:
    n = 10 if ctx.quick else 50
    workers = n
    res = Result("concurrent", params={"tasks": n, "max_workers": workers, "prompt": "hello <i>",
                                       "health_interval_s": 0.05})
    scratch = ctx.scratch("concurrent")
    try:
        server = scratch.server(SCOUT_MAX_WORKERS=workers, SCOUT_THREADS=256)
        health_lat: list[float] = []
        health_codes: Counter[int] = Counter()
        peak = {"running": 0, "active": 0}
        unfinished = {"n": -1}
        stop = threading.Event()

        def poll_health() -> None:
            # The one poller: its counts also tell when every task has finished, so the
            # benchmark adds no load of its own beyond 20 requests a second.
            with server.client() as c:
                while not stop.is_set():
                    dt, status, doc = c.timed("GET", "/health")
                    health_lat.append(dt)
                    health_codes[status] += 1
                    if isinstance(doc, dict) and "tasks" in doc:
                        t = doc["tasks"]
                        peak["running"] = max(peak["running"], t["running"])
                        peak["active"] = max(peak["active"], doc["workers"]["active"])
                        unfinished["n"] = t["running"] + t["waiting"] + t["pending"]
                    stop.wait(0.05)

        poller = threading.Thread(target=poll_health, daemon=True)
        poller.start()
        time.sleep(0.5)  # a few idle samples first
        t0 = time.time()
        cpu = CpuWindow(server.ps)
        with ThreadPoolExecutor(10) as pool:
            ids = list(pool.map(lambda i: server.chat(f"hello {i}"), range(n)))
        posted = time.time() - t0
        try:
            deadline = time.time() + 300
            time.sleep(0.2)
            while time.time() < deadline and unfinished["n"] != 0:
                time.sleep(0.05)
        finally:
            wall = time.time() - t0
            load = cpu.stop()
            stop.set()
            poller.join(10)
        docs = server.wait_status(ids, timeout=60)
        by_status = Counter(d["status"] for d in docs.values())
        errors = Counter((d.get("error") or "")[:200] for d in docs.values() if d["status"] != "completed")
        durations = [d["finished_at"] - d["created_at"] for d in docs.values() if d.get("finished_at")]
        s = summary_ms(health_lat)
        res.metrics = {"statuses": dict(by_status), "errors": dict(errors), "wall_s": wall,
                       "post_all_s": posted, "task_duration_ms": summary_ms(durations),
                       "health_ms": s, "health_statuses": dict(health_codes),
                       "peak_running": peak["running"], "peak_workers_active": peak["active"],
                       "cpu_during_run": load}
        res.check(f"tasks completed of {n} at once", by_status.get("completed", 0), ">=", n)
        res.check("/health p99 meanwhile", s["p99"], "<", 50, "ms")
        res.show("/health p50 / max", f"{s['p50']:.1f} / {s['max']:.1f}", "ms")
        res.show("SCOUT_MAX_WORKERS / peak running / wall time for all",
                 f"{workers} / {peak['running']} / {wall:.1f} s")
        res.show("task created→finished p50 / max",
                 f"{res.metrics['task_duration_ms']['p50'] / 1000:.1f} / "
                 f"{res.metrics['task_duration_ms']['max'] / 1000:.1f}", "s")
        res.show("machine CPU busy / server CPU during the run",
                 f"{load['machine_busy_percent']:.0f} % / {load['server_cpu_percent_of_core']:.0f} % of a core")
        if errors:
            res.notes.append(f"failures: {dict(errors)}")
        return res
    finally:
        scratch.cleanup()
