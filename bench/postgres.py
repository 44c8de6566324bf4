"""8. PostgreSQL next to SQLite, in one run, on a throwaway cluster with PostgreSQL's default
durability (fsync and synchronous_commit on; scout/pgcluster.py):

* ingest: 20 writer processes appending text-delta events through the store, each to a task
  of its own, all released at once; events/s over the time from the release to the last
  writer's end, on SQLite and then on PostgreSQL. Every task's seqs must then be 1..N.
* SSE delivery: bench/sse.py's delivery measure (tasks streaming one delta every 100 ms,
  SSE clients following them), on SQLite and then on PostgreSQL.
* 3 nodes × N tasks: three servers on one PostgreSQL database; N short tasks posted to
  each; wall time until all have completed, tasks per second, POST→completed p50/p99,
  and how many each node ran.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import time
from typing import Any

from .harness import Context, Result, percentile, summary_ms
from .sse import delivery


def writer(db: str, task_id: str, count: int, go: Any, out: Any) -> None:
    from scout.backends import open_store

    store = open_store(db, migrate=False, pool_size=2)
    store.get_task(task_id)  # open the connection before the clock starts
    go.wait()
    errors = 0
    t0 = time.time()
    for i in range(count):
        try:
            store.append_event(task_id, "text_delta", {"text": f"word{i} ", "parent_tool_use_id": None})
        except Exception:  # noqa: BLE001 - counted, reported
            errors += 1
    t1 = time.time()
    store.close()
    out.put({"start": t0, "end": t1, "errors": errors})


def ingest(db: str, writers: int, per: int, cwd: str) -> dict[str, Any]:
    """events/s of `writers` processes appending `per` events each; lost/duplicated counts."""
    from scout.backends import open_store

    store = open_store(db)
    ids = [store.create_task(f"ingest {i}", {"cwd": cwd}).id for i in range(writers)]  # type: ignore[union-attr]
    spawn = mp.get_context("spawn")
    go, out = spawn.Event(), spawn.Queue()
    procs = [spawn.Process(target=writer, args=(db, tid, per, go, out), daemon=True) for tid in ids]
    for p in procs:
        p.start()
    time.sleep(3.0)  # let them import and connect
    go.set()
    reports = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(30)
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    bad = 0
    for tid in ids:
        seqs = [e.seq for e in store.iter_events(tid)]
        bad += seqs != list(range(1, per + 2))
    store.close()
    return {"events_per_s": writers * per / seconds, "seconds": seconds, "tasks_with_bad_seqs": bad,
            "write_errors": sum(r["errors"] for r in reports)}


def nodes(ctx: Context, db: str, per_node: int) -> dict[str, Any]:
    """Three servers on one database; `per_node` short tasks posted to each."""
    scratch = ctx.scratch("pg-nodes")
    try:
        servers = [scratch.server(SCOUT_DB=db, SCOUT_NODE_ID=f"node{i}", SCOUT_MAX_WORKERS=4, SCOUT_NODE_LEASE=10)
                   for i in range(3)]
        posted: dict[str, float] = {}
        lock = threading.Lock()
        t0 = time.time()
        for i in range(per_node):
            for srv in servers:
                task_id = srv.chat(f"hello {i}")
                with lock:
                    posted[task_id] = time.time()
        done: dict[str, tuple[float, str, str]] = {}
        deadline = time.time() + 900
        while len(done) < len(posted) and time.time() < deadline:
            for task_id in [t for t in posted if t not in done]:
                doc = servers[hash(task_id) % 3].status(task_id, events=False)
                if doc["status"] in ("completed", "failed", "cancelled"):
                    done[task_id] = (doc["finished_at"], doc["status"], doc["node"])
            time.sleep(0.2)
        wall = max(f for f, _, _ in done.values()) - t0 if done else None
        lat = [done[t][0] - posted[t] for t in done]
        ran: dict[str, int] = {}
        for _, _, node in done.values():
            ran[node] = ran.get(node, 0) + 1
        return {"tasks": len(posted), "completed": sum(s == "completed" for _, s, _ in done.values()),
                "wall_s": wall, "tasks_per_s": len(done) / wall if wall else None,
                "post_to_completed_ms": summary_ms(lat), "ran_on": ran,
                "p99_s": (percentile(lat, 99) or 0.0)}
    finally:
        scratch.cleanup()


def run(ctx: Context) -> Result:
    from scout.pgcluster import TempCluster

    quick = ctx.quick
    writers, per = 20, (250 if quick else 1000)
    sse_tasks, sse_clients, window = (4, 40, 4.0) if quick else (10, 200, 10.0)
    per_node = 5 if quick else 10
    res = Result("postgres", params={"writers": writers, "events_per_writer": per, "sse_tasks": sse_tasks,
                                      "sse_clients": sse_clients, "nodes": 3, "tasks_per_node": per_node,
                                      "postgres": "throwaway cluster, default fsync/synchronous_commit"})
    cluster = TempCluster(fast=False).start()
    scratch = ctx.scratch("pg-ingest")
    try:
        lite = ingest(scratch.db, writers, per, scratch.cwd)
        pg = ingest(cluster.create_database("ingest"), writers, per, scratch.cwd)
        res.metrics["ingest"] = {"sqlite": lite, "postgresql": pg}
        res.show("ingest events/s, SQLite / PostgreSQL",
                 f"{lite['events_per_s']:,.0f} / {pg['events_per_s']:,.0f}")
        res.check("ingest on PostgreSQL, 20 writer processes", pg["events_per_s"], ">=", 1000, "events/s")
        res.check("tasks with lost or duplicated seqs (both)", lite["tasks_with_bad_seqs"] + pg["tasks_with_bad_seqs"]
                  + lite["write_errors"] + pg["write_errors"], "==", 0)
        for name, db in (("sqlite", None), ("postgresql", cluster.create_database("sse"))):
            part = Result(f"sse-{name}")
            delivery(ctx, part, sse_tasks, sse_clients, window, 300, 0.1, db=db)
            res.metrics[f"sse_{name}"] = part.metrics
            s = part.metrics["delivery_ms"]
            res.show(f"SSE delivery p50 / p99, {sse_clients} streams, {name}", f"{s['p50']:.1f} / {s['p99']:.1f}", "ms")
        res.check("SSE delivery p99 on PostgreSQL", res.metrics["sse_postgresql"]["delivery_ms"]["p99"], "<", 100, "ms")
        three = nodes(ctx, cluster.create_database("nodes"), per_node)
        res.metrics["three_nodes"] = three
        res.show(f"3 nodes × {per_node} tasks: completed / wall / tasks per s",
                 f"{three['completed']}/{three['tasks']} / {three['wall_s']:.1f} s / {three['tasks_per_s']:.2f}")
        res.show("3 nodes: POST→completed p50 / p99",
                 f"{three['post_to_completed_ms']['p50'] / 1000:.1f}"
                 f" / {three['post_to_completed_ms']['p99'] / 1000:.1f}",
                 "s")
        res.show("3 nodes: tasks run per node", ", ".join(f"{k} {v}" for k, v in sorted(three["ran_on"].items())))
        res.check("3 nodes: every task completed", three["completed"], "==", three["tasks"])
        return res
    finally:
        scratch.cleanup()
        cluster.stop()
