"""6. Memory: what a task costs beyond its Claude Code CLI; the server under load.

Per task: a slow scripted task runs through Scout; once Claude Code has started we read
the memory (RSS, USS, PSS; psutil memory_full_info) of the task's leader ("scout:
leader <id>"), its worker ("scout: worker <id>") and the worker's CLI child, and of a
bare CLI run directly on the same prompt at the same point. The leader and worker are
forked from the warm zygote, so most of their RSS is pages shared with it: USS (pages
only that process has) is what each extra task really costs, and is what the target is
checked on; RSS is shown beside it.

Server: 1,000 finished tasks in the log (most written with the Store before the server
starts, the rest run through the server with the real CLI), every one of them read
through the API (status with events, /tasks pages), then 200 SSE streams open on silent
running tasks. The server process's RSS is read at each stage.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import psutil

from .harness import Context, Result, SSEHub, find_titled, mem_mb

SLOW = "SLOW: 2 60"  # Claude Code starts, asks the model, and waits: a task at rest mid-run


def run(ctx: Context) -> Result:
    res = Result("memory")
    per_task(ctx, res)
    server_load(ctx, res)
    return res


def _sum(*parts: dict[str, float]) -> dict[str, float]:
    return {k: round(sum(p[k] for p in parts), 1) for k in parts[0]}


def per_task(ctx: Context, res: Result) -> None:
    scratch = ctx.scratch("memory-task")
    try:
        server = scratch.server(SCOUT_MAX_WORKERS=2)
        inited = threading.Event()
        hub = SSEHub(server.port, lambda c, t, p, at: inited.set() if t == "system" else None).start()
        try:
            task_id = server.chat(SLOW)
            hub.open(task_id)
            if not inited.wait(60):
                raise RuntimeError("Claude Code did not start within 60 s")
            time.sleep(1.5)
            leader = find_titled(f"scout: leader {task_id}")
            worker = find_titled(f"scout: worker {task_id}")
            if leader is None or worker is None:
                raise RuntimeError("leader or worker process not found by title")
            clis = [p for p in worker.children() if "claude" in " ".join(p.cmdline())]
            if not clis:
                raise RuntimeError("the worker's Claude Code child was not found")
            m_leader, m_worker = mem_mb(leader), mem_mb(worker)
            m_cli = _sum(*(mem_mb(p) for p in [clis[0], *clis[0].children(recursive=True)]))
            m_zygote = mem_mb(scratch.zygote(server))
        finally:
            hub.close()
        # The bare CLI on the same prompt, read at the same point (first line + 1.5 s).
        import subprocess
        proc = subprocess.Popen([ctx.cli, "-p", SLOW, "--output-format", "stream-json", "--verbose"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                env=scratch.base_env(), cwd=scratch.cwd)
        try:
            proc.stdout.readline()
            time.sleep(1.5)
            bare = psutil.Process(proc.pid)
            m_bare = _sum(*(mem_mb(p) for p in [bare, *bare.children(recursive=True)]))
        finally:
            proc.kill()
            proc.wait()
        own = _sum(m_leader, m_worker)
        res.metrics["per_task"] = {"leader": m_leader, "worker": m_worker, "leader_plus_worker": own,
                                   "cli_under_scout": m_cli, "bare_cli": m_bare, "zygote": m_zygote}
        res.check("task leader+worker USS (beyond the CLI)", own["uss_mb"], "<=", 40, "MB")
        res.show("task leader+worker RSS / PSS", f"{own['rss_mb']:.1f} / {own['pss_mb']:.1f}", "MB")
        res.show("leader / worker USS", f"{m_leader['uss_mb']:.1f} / {m_worker['uss_mb']:.1f}", "MB")
        res.show("CLI under Scout / bare CLI RSS",
                 f"{m_cli['rss_mb']:.0f} / {m_bare['rss_mb']:.0f}", "MB")
        if m_zygote:
            res.show("zygote RSS / USS (shared by all tasks)",
                     f"{m_zygote['rss_mb']:.1f} / {m_zygote['uss_mb']:.1f}", "MB")
    finally:
        scratch.cleanup()


def db_files(proc: psutil.Process, db: str) -> dict[str, int]:
    """Open files of the process: all, and SQLite connections (open handles on the db file)."""
    files = proc.open_files()
    return {"open_files": proc.num_fds(), "db_connections": sum(1 for f in files if f.path == db)}


def seed_finished(db: str, count: int, cwd: str) -> list[str]:
    """`count` completed tasks with a realistic little log each, through the Store."""
    from scout.store import Store
    from scout.vocab import COMPLETED, RUNNING

    store = Store(db)
    ids = []
    try:
        for i in range(count):
            task = store.create_task(f"seeded task {i}", {"mode": "Scout", "cwd": cwd})
            store.transition(task.id, RUNNING)
            store.append_event(task.id, "system", {"subtype": "init", "session_id": f"s{i}"})
            for w in range(6):
                store.append_event(task.id, "text_delta", {"text": f"word{w} ", "parent_tool_use_id": None})
            store.append_event(task.id, "assistant", {"text": "ECHO: seeded", "parent_tool_use_id": None})
            summary = {"text": "ECHO: seeded", "subtype": "success", "is_error": False, "duration_ms": 20,
                       "num_turns": 1, "total_cost_usd": 0.01, "usage": {"input_tokens": 10}}
            store.append_event(task.id, "result", summary)
            store.transition(task.id, COMPLETED, result=summary)
            ids.append(task.id)
    finally:
        store.close()
    return ids


def server_load(ctx: Context, res: Result) -> None:
    total = 200 if ctx.quick else 1000
    real = 6 if ctx.quick else 40
    streams = 40 if ctx.quick else 200
    silent = 4
    res.params.update({"finished_tasks": total, "of_which_real_cli": real, "streams": streams,
                       "silent_tasks_streamed": silent, "max_workers": silent + 4})
    scratch = ctx.scratch("memory-server")
    try:
        seeded = seed_finished(scratch.db, total - real, scratch.cwd)
        server = scratch.server(SCOUT_MAX_WORKERS=silent + 4)
        ps = server.ps
        stages: dict[str, Any] = {}

        def stage(name: str) -> dict[str, Any]:
            stages[name] = {**mem_mb(ps), **db_files(ps, scratch.db), "threads": ps.num_threads()}
            return stages[name]

        stage("started")
        inits: set[str] = set()
        hub = SSEHub(server.port, lambda c, t, p, at: inits.add(c.task_id) if t == "system" else None).start()
        try:
            # Streams first, held open throughout: silent tasks (alive, waiting on the model).
            waiting = [server.chat("SLOW: 2 600") for _ in range(silent)]
            for i in range(streams):
                hub.open(waiting[i % silent])
            deadline = time.time() + 120
            while time.time() < deadline and len(inits) < silent:
                time.sleep(0.1)
            time.sleep(1.0)
            stage("with_streams")
            # Every idle request thread serves a request (waitress hands work to the
            # longest-idle thread), so each already has its SQLite connection: from here
            # on, connections that appear belong to threads that come and go.
            with server.client() as c:
                for _ in range(600):
                    c.get("/health")
            stage("request_threads_warm")
            ids: list[str] = []
            for half in ("after_real_tasks_1st_half", "after_real_tasks"):
                batch = [server.chat(f"hello {len(ids) + i}") for i in range(real // 2)]
                docs = server.wait_status(batch, timeout=300)
                ids += batch
                failed = [d for d in docs.values() if d["status"] != "completed"]
                if failed:
                    res.notes.append(f"{len(failed)} real tasks did not complete: {failed[0].get('error')}")
                time.sleep(1.0)  # let the supervisor's exit threads finish
                stage(half)
            with server.client() as c:
                for tid in seeded + ids:
                    c.get(f"/chat/{tid}/status")
                cursor = None
                while True:
                    _, page = c.get("/tasks?limit=100" + (f"&cursor={cursor}" if cursor else ""))
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
            final = stage("final")
            final["open_streams"] = hub.open_count()
        finally:
            hub.close()
        res.metrics["server"] = stages
        res.show(f"server RSS, {total:,} finished tasks + {final['open_streams']} streams", final["rss_mb"], "MB")
        res.show("server RSS: start / +streams / +600 reqs / +real tasks / +all read",
                 " / ".join(f"{stages[k]['rss_mb']:.0f}" for k in
                            ("started", "with_streams", "request_threads_warm", "after_real_tasks", "final")), "MB")
        res.show("server USS / threads at the end", f"{final['uss_mb']:.0f} MB / {final['threads']}")
        a, b = stages["after_real_tasks_1st_half"], stages["after_real_tasks"]
        leak = (b["db_connections"] - a["db_connections"]) / max(1, real - real // 2)
        res.metrics["server_db_connections_left_per_finished_task"] = leak
        res.show("server SQLite connections: started / warm / end",
                 f"{stages['started']['db_connections']} / {stages['request_threads_warm']['db_connections']}"
                 f" / {final['db_connections']}")
        res.show("server SQLite connections left open per finished task", leak)
    finally:
        scratch.cleanup()
