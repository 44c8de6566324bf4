"""1. Scout's overhead against the bare CLI, one-turn prompt, same scripted model.

Runs alternate (CLI, Scout, CLI, Scout, ...) after one warm-up of each, so both see
the same machine state. Scout's default mode runs Bash in Claude Code's OS sandbox where
one works (it does here), and a sandboxed Claude Code starts its sandbox's proxies before
its first line; the bare CLI is given the same sandbox settings (`--settings`), so the
comparison is of Scout against the very CLI it runs. The CLI is run as `claude -p hello --output-format stream-json
--verbose` with stdin=DEVNULL; its times are to its first stdout line, to its result
line and to its exit. Scout's are from just before POST /chat to the receipt, on an SSE
stream opened right after the POST, of the first event that is not a status event
(Claude Code's first output, the `system` init) and of the `completed` status event.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from .harness import Context, Result, SSEHub, median, run_cli, sandbox_args, summary_ms

PROMPT = "hello"


def scout_once(server, hub_events: dict[str, list], waiters: dict[str, threading.Event],
               hub: SSEHub) -> dict[str, Any]:
    t0 = time.time()
    task_id = server.chat(PROMPT)
    t_posted = time.time()
    done = threading.Event()
    hub_events[task_id] = []
    waiters[task_id] = done
    hub.open(task_id)
    if not done.wait(60):
        raise TimeoutError(f"task {task_id} did not finish in 60 s")
    events = hub_events.pop(task_id)
    status_at = {p["payload"]["status"]: (p, at) for (etype, p, at) in events if etype == "status"}
    first = next(((p, at) for (etype, p, at) in events if etype not in ("status", "end")), None)
    if "completed" not in status_at:
        raise RuntimeError(f"task {task_id} did not complete: {[e[0] for e in events]}")
    done_p, done_at = status_at["completed"]
    pend_p, _ = status_at["pending"]
    run_p, _ = status_at["running"]
    return {
        "post": t_posted - t0,
        "first_event": (first[1] - t0) if first else None,
        "completed": done_at - t0,
        # Where the time goes, from the events' own commit times (server clock = ours).
        "phase_post_to_pending": pend_p["time"] - t0,
        "phase_pending_to_running": run_p["time"] - pend_p["time"],
        "phase_running_to_first_output": (first[0]["time"] - run_p["time"]) if first else None,
        "phase_first_output_to_completed": done_p["time"] - first[0]["time"] if first else None,
        "phase_delivery_of_completed": done_at - done_p["time"],
    }


def run(ctx: Context) -> Result:
    n = 5 if ctx.quick else 20
    res = Result("overhead", params={"runs": n, "prompt": PROMPT, "warmup": 1})
    scratch = ctx.scratch("overhead")
    try:
        server = scratch.server()
        env = scratch.base_env()
        events: dict[str, list] = {}
        waiters: dict[str, threading.Event] = {}

        def on_event(conn, etype, payload, at):
            if conn.task_id in events:
                events[conn.task_id].append((etype, payload, at))
            if etype == "end" and conn.task_id in waiters:
                waiters.pop(conn.task_id).set()

        hub = SSEHub(server.port, on_event).start()
        cli_settings = sandbox_args(scratch)
        res.params["cli_sandboxed"] = bool(cli_settings)
        cli_runs: list[dict[str, float]] = []
        scout_runs: list[dict[str, Any]] = []
        try:
            for i in range(n + 1):
                c = run_cli(ctx.cli, PROMPT, env, scratch.cwd, extra=cli_settings)
                if not c["ok"]:
                    raise RuntimeError("the bare CLI run did not end with a successful result")
                s = scout_once(server, events, waiters, hub)
                if i > 0:  # the first pair is the warm-up
                    cli_runs.append(c)
                    scout_runs.append(s)
                ctx.log(f"  run {i}: cli {c['exit'] * 1000:.0f} ms, scout {s['completed'] * 1000:.0f} ms")
        finally:
            hub.close()

        def med(rows, key):
            vals = [r[key] for r in rows if r.get(key) is not None]
            return median(vals)

        cli_exit, cli_result, cli_first = med(cli_runs, "exit"), med(cli_runs, "result"), med(cli_runs, "first_line")
        sc_done, sc_first = med(scout_runs, "completed"), med(scout_runs, "first_event")
        res.metrics = {
            "cli": {k: summary_ms(r[k] for r in cli_runs) for k in ("first_line", "result", "exit")},
            "scout": {k: summary_ms(r[k] for r in scout_runs if r[k] is not None)
                      for k in scout_runs[0]},
            "ratio_completed_vs_cli_exit": sc_done / cli_exit,
            "ratio_completed_vs_cli_result": sc_done / cli_result,
            "first_event_minus_cli_first_line_ms": (sc_first - cli_first) * 1000,
        }
        res.show("CLI median: first line / result line / exit",
                 f"{cli_first * 1000:.0f} / {cli_result * 1000:.0f} / {cli_exit * 1000:.0f}", "ms")
        res.show("Scout median: first event / completed", f"{sc_first * 1000:.0f} / {sc_done * 1000:.0f}", "ms")
        # The CLI prints its result well before it exits; Scout marks a task completed on
        # the result, so the strict comparison is against the result line.
        res.check("completed / CLI result line (median ratio)", sc_done / cli_result, "<=", 1.15)
        res.show("completed / CLI exit (median ratio)", sc_done / cli_exit)
        res.check("first event - CLI first line (medians)", (sc_first - cli_first) * 1000, "<=", 150, "ms")
        phases = res.metrics["scout"]
        res.show("Scout phases p50: POST>pending, pending>running, running>1st output, "
                 "1st output>completed, delivery",
                 " / ".join(f"{phases[k]['p50']:.0f}" for k in (
                     "phase_post_to_pending", "phase_pending_to_running", "phase_running_to_first_output",
                     "phase_first_output_to_completed", "phase_delivery_of_completed")), "ms")
        return res
    finally:
        scratch.cleanup()
