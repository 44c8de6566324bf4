"""12. Warm sessions: what a follow-up costs warm, cold, and as a bare `claude -p --resume`.

In one run, on one scripted model: a conversation's follow-up messages sent (a) to a Scout
whose session's Claude Code is warm (SCOUT_SESSION_IDLE on), (b) to a Scout with warm
sessions off (a new CLI per message, resuming the conversation), and (c) straight to the
CLI as `claude -p MESSAGE --resume SESSION`. For each: from just before the POST (or the
exec) to the model's receipt of the follow-up's request (timed by the model server, in
this process), and to the task's `finished_at` (the CLI's result line). Runs alternate
warm, cold, bare; the bare CLI gets the OS sandbox settings Scout's default mode gives
it. Then the memory of an idle warm process: RSS and USS of its leader, worker and Claude
Code (with whatever Claude Code keeps running).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import psutil

from .harness import ROOT, Context, Result, mem_mb, sandbox_args, summary_ms

sys.path.insert(0, str(ROOT / "tests"))
from model_server import ScriptedModel, is_side_request, last_user_message, user_text  # noqa: E402


class TimedModel(ScriptedModel):
    """The scripted model, noting when each conversation request arrives (wall clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, str]] = []

    def _record_request(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        at = time.time()
        super()._record_request(body, headers)
        if not is_side_request(body):
            self.arrivals.append((at, user_text(last_user_message(body) or {})))

    def arrival(self, marker: str, timeout: float = 60.0) -> float:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for at, text in list(self.arrivals):
                if marker in text:
                    return at
            time.sleep(0.002)
        raise TimeoutError(f"no model request for {marker!r}")


def scout_follow_up(server: Any, model: TimedModel, session: str, marker: str) -> dict[str, Any]:
    t0 = time.time()
    task_id = server.chat(marker, session_id=session)
    first = model.arrival(marker) - t0
    doc = server.status(task_id)
    while doc["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.005)
        doc = server.status(task_id)
    if doc["status"] != "completed":
        raise RuntimeError(f"follow-up {task_id} ended {doc['status']}: {doc.get('error')}")
    return {"first_request": first, "completed": doc["finished_at"] - t0, "warm": doc.get("warm")}


def bare_follow_up(cli: str, env: dict[str, str], cwd: str, model: TimedModel, session: str,
                   marker: str, extra: tuple[str, ...]) -> dict[str, Any]:
    t0 = time.time()
    proc = subprocess.Popen([cli, "-p", marker, "--resume", session, "--output-format", "stream-json", "--verbose",
                             *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, cwd=cwd)
    assert proc.stdout is not None
    result = None
    for line in proc.stdout:
        if b'"type":"result"' in line:
            result = time.time() - t0
    proc.wait()
    first = model.arrival(marker) - t0
    if result is None:
        raise RuntimeError("the bare CLI gave no result")
    return {"first_request": first, "completed": result}


def bare_session(cli: str, env: dict[str, str], cwd: str) -> str:
    out = subprocess.run([cli, "-p", "hello", "--output-format", "json"], stdin=subprocess.DEVNULL,
                         capture_output=True, env=env, cwd=cwd, timeout=120)
    return json.loads(out.stdout)["session_id"]


def start_conversation(server: Any, session: str) -> dict[str, Any]:
    task_id = server.chat("hello", session_id=session)
    return server.wait_status([task_id])[task_id]


def wait_warm(server: Any, count: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.request("GET", "/health")[1]["warm"]["idle"] >= count:
            return
        time.sleep(0.02)
    raise TimeoutError("the session did not become warm")


def tree_memory(pid: int) -> dict[str, float]:
    root = psutil.Process(pid)
    parts = [mem_mb(p) for p in [root, *root.children(recursive=True)]]
    return {k: round(sum(p[k] for p in parts), 1) for k in parts[0]}


def run(ctx: Context) -> Result:
    n = 3 if ctx.quick else 10
    res = Result("warm", params={"follow_ups": n})
    model = TimedModel().start()
    warm_dir, cold_dir = ctx.scratch("warm"), ctx.scratch("warm-cold")
    try:
        warm = warm_dir.server(SCOUT_SESSION_IDLE="300", **model.env(warm_dir.home))
        cold = cold_dir.server(SCOUT_SESSION_IDLE="0", **model.env(cold_dir.home))
        bare_env = {**cold_dir.base_env(), **model.env(cold_dir.home)}
        first = start_conversation(warm, "bench-warm")
        start_conversation(cold, "bench-cold")
        wait_warm(warm, 1)
        session = bare_session(ctx.cli, bare_env, cold_dir.cwd)
        runs: dict[str, list[dict[str, Any]]] = {"warm": [], "cold": [], "bare": []}
        for i in range(n):
            runs["warm"].append(scout_follow_up(warm, model, "bench-warm", f"warm follow-up {i}"))
            wait_warm(warm, 1)
            runs["cold"].append(scout_follow_up(cold, model, "bench-cold", f"cold follow-up {i}"))
            runs["bare"].append(bare_follow_up(ctx.cli, bare_env, cold_dir.cwd, model, session,
                                               f"bare follow-up {i}", sandbox_args(cold_dir)))
        if not all(r["warm"] for r in runs["warm"]) or any(r["warm"] for r in runs["cold"]):
            raise RuntimeError(f"warm/cold runs not as intended: {runs}")
        labels = {"warm": "warm", "cold": "cold (warm sessions off)", "bare": "bare claude -p --resume"}
        for kind, label in labels.items():
            res.metrics[kind] = {m: summary_ms(r[m] for r in runs[kind]) for m in ("first_request", "completed")}
            res.show(f"follow-up POST→first model request, {label}, median",
                     res.metrics[kind]["first_request"]["p50"], "ms")
            res.show(f"follow-up POST→completed, {label}, median", res.metrics[kind]["completed"]["p50"], "ms")
        wait_warm(warm, 1)
        memory = tree_memory(first["worker_pid"])
        res.metrics["idle_warm_process"] = memory
        res.show("idle warm process (leader+worker+Claude Code), RSS / USS",
                 f"{memory['rss_mb']:.0f} / {memory['uss_mb']:.0f}", "MB")
        warm_first = res.metrics["warm"]["first_request"]["p50"]
        cold_first = res.metrics["cold"]["first_request"]["p50"]
        res.check("warm follow-up POST→first model request, as a share of cold's", warm_first / cold_first,
                  "<=", 0.1)
    finally:
        warm_dir.cleanup()
        cold_dir.cleanup()
        model.stop()
    return res
