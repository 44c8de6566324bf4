"""Worktrees: what a git worktree per conversation costs.

A repository of 10,000 small files (100 folders of 100, one commit) is made in the
scratch directory. Then:
- scout.workspace directly: make a worktree (`git worktree add` of the 10,000 files, under
  the repository's lock), snapshot it as a task's starting point (a temporary index),
  count a session's changes after one edit, and discard it; medians of a few runs.
- through the server: POST /chat → the first event that is not a status (Claude Code's
  `system` init), received on an SSE stream opened right after the POST, for a `Code` task
  in a small repository (so that Claude Code's own start-up in a big tree does not drown
  Scout's part) run `shared`, in a new worktree (the first task of a session: the worktree
  is made first), and in an existing worktree (a follow-up: only the snapshot).
"""
from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from pathlib import Path

from .harness import Context, Result, SSEHub, median

FILES = 10_000


def make_repo(path: Path, files: int = FILES) -> None:
    path.mkdir(parents=True)
    for d in range(max(1, files // 100)):
        folder = path / f"pkg{d:03d}"
        folder.mkdir()
        for f in range(min(files, 100)):
            (folder / f"mod{f:03d}.py").write_text(f"# module {d}/{f}\nVALUE = {d * 1000 + f}\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "10,000 files"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env, capture_output=True)


def direct(repo: Path, root: str, runs: int) -> dict[str, list[float]]:
    from scout import workspace as wsm

    times: dict[str, list[float]] = {"create": [], "create_cpu": [], "snapshot": [], "changes": [], "discard": []}
    for i in range(runs):
        t0 = time.perf_counter()
        cpu0 = _children_cpu()
        ws = wsm.plan(str(repo), f"bench-{i}-{time.time_ns()}", root)
        wsm.ensure(ws, root)
        t1 = time.perf_counter()
        times["create_cpu"].append(_children_cpu() - cpu0)  # git's own CPU: what load does not inflate
        wsm.snapshot(ws.path or "")
        t2 = time.perf_counter()
        Path(ws.path or "", "pkg000", "mod000.py").write_text("# edited\n")
        changes = wsm.session_changes(ws)
        t3 = time.perf_counter()
        assert [f.path for f in changes.files] == ["pkg000/mod000.py"], changes
        wsm.discard(ws, root)
        t4 = time.perf_counter()
        for key, dt in (("create", t1 - t0), ("snapshot", t2 - t1), ("changes", t3 - t2), ("discard", t4 - t3)):
            times[key].append(dt)
    return times


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def first_event(server, hub: SSEHub, seen: dict[str, tuple[threading.Event, list]], **fields) -> tuple[float, str]:
    """Seconds from just before POST /chat to the first non-status event on its stream."""
    t0 = time.time()
    task_id = server.chat("hello", mode="Code", **fields)
    done = threading.Event()
    seen[task_id] = (done, [])
    hub.open(task_id)
    if not done.wait(120):
        raise TimeoutError(f"task {task_id} did not end in 120 s")
    _, events = seen.pop(task_id)
    first = next((at for etype, at in events if etype not in ("status", "end")), None)
    if first is None:
        raise RuntimeError(f"task {task_id} showed no Claude Code event")
    return first - t0, task_id


def run(ctx: Context) -> Result:
    runs = 2 if ctx.quick else 5
    res = Result("worktrees", params={"files": FILES, "runs": runs, "prompt": "hello", "mode": "Code"})
    scratch = ctx.scratch("worktrees")
    try:
        repo = Path(scratch.cwd) / "big"
        t0 = time.perf_counter()
        make_repo(repo)
        res.show("making the 10,000-file repository (setup)", time.perf_counter() - t0, "s")
        times = direct(repo, str(scratch.path / "direct-worktrees"), runs)
        med = {k: median(v) for k, v in times.items()}
        res.metrics["direct_s"] = times
        res.show("worktree of 10,000 files: create / snapshot / changes / discard (median)",
                 " / ".join(f"{med[k] * 1000:.0f}" for k in ("create", "snapshot", "changes", "discard")), "ms")
        res.show("worktree of 10,000 files: git's CPU time to create it (median)", med["create_cpu"] * 1000, "ms")

        small = Path(scratch.cwd) / "small"
        make_repo(small, files=20)
        server = scratch.server()
        seen: dict[str, tuple[threading.Event, list]] = {}

        def on_event(conn, etype, payload, at):
            entry = seen.get(conn.task_id)
            if entry is not None:
                entry[1].append((etype, at))
                if etype == "end":
                    entry[0].set()

        hub = SSEHub(server.port, on_event).start()
        firsts: dict[str, list[float]] = {"shared": [], "new_worktree": [], "existing_worktree": []}
        try:
            first_event(server, hub, seen, cwd=str(small), workspace="shared")  # warm-up
            for i in range(runs):
                firsts["shared"].append(first_event(server, hub, seen, cwd=str(small), workspace="shared")[0])
                session = f"bench-{i}"
                firsts["new_worktree"].append(first_event(server, hub, seen, cwd=str(small), session_id=session)[0])
                firsts["existing_worktree"].append(first_event(server, hub, seen, session_id=session)[0])
                ctx.log(f"  run {i}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in firsts.items()))
        finally:
            hub.close()
        res.metrics["post_to_first_event_s"] = firsts
        fm = {k: median(v) for k, v in firsts.items()}
        res.show("POST→first event, Code in a small repo: shared / new worktree / existing worktree (median)",
                 " / ".join(f"{fm[k] * 1000:.0f}" for k in ("shared", "new_worktree", "existing_worktree")), "ms")
        res.check("worktree task's extra POST→first event, existing worktree",
                  (fm["existing_worktree"] - fm["shared"]) * 1000, "<=", 150, "ms")
        return res
    finally:
        scratch.cleanup()
