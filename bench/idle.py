"""8. Idle CPU: the web UI process and the API server, with nothing to do and no browser open.

One API server (fresh database, no tasks) and one `python -m scout.ui` pointed at it, as
`make run` starts them. Once both answer, and after a settling pause (the UI's start-up
work, Gradio's first requests), each process's CPU time (psutil, user+system, the process
alone) and its context switches (a wake-up count: each turn of a polling loop is one) are
sampled over the window. Target for the UI: under 1 % of a core (issue 16 measured 6 %
before Gradio's queue was made to poll slowly when idle, see scout/gradio_idle.py).
"""
from __future__ import annotations

import subprocess
import sys
import time

import psutil
import requests

from .harness import ROOT, Context, Result, free_port


def run(ctx: Context) -> Result:
    window = 10.0 if ctx.quick else 30.0
    settle = 5.0 if ctx.quick else 10.0
    res = Result("idle", params={"window_s": window, "settle_s": settle})
    scratch = ctx.scratch("idle")
    ui = None
    try:
        server = scratch.server()
        port = free_port()
        env = {**scratch.base_env(), "SCOUT_API_URL": server.url, "SCOUT_UI_PORT": str(port),
               "PYTHONPATH": str(ROOT)}
        log = open(scratch.path / "ui.log", "ab")
        ui = subprocess.Popen([sys.executable, "-m", "scout.ui"], env=env, cwd=str(ROOT), stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_http(f"http://127.0.0.1:{port}/", ui, timeout=120)
        time.sleep(settle)
        procs = {"ui": psutil.Process(ui.pid), "api": server.ps}
        before = {name: _sample(p) for name, p in procs.items()}
        time.sleep(window)
        after = {name: _sample(p) for name, p in procs.items()}
        for name in procs:
            (c0, s0, w0), (c1, s1, w1) = before[name], after[name]
            res.metrics[f"{name}_cpu_percent"] = 100.0 * (c1 - c0) / (w1 - w0)
            res.metrics[f"{name}_wakeups_per_s"] = (s1 - s0) / (w1 - w0)
        res.check("idle UI CPU, no browser open", res.metrics["ui_cpu_percent"], "<", 1.0, "% of a core")
        res.show("idle API server CPU, no streams", res.metrics["api_cpu_percent"], "% of a core")
        res.show("idle wake-ups per second, UI / API",
                 f"{res.metrics['ui_wakeups_per_s']:.0f} / {res.metrics['api_wakeups_per_s']:.0f}")
    finally:
        if ui is not None and ui.poll() is None:
            ui.terminate()
            try:
                ui.wait(30)
            except subprocess.TimeoutExpired:
                ui.kill()
                ui.wait()
        scratch.cleanup()
    return res


def _sample(proc: psutil.Process) -> tuple[float, int, float]:
    """(CPU seconds, context switches, wall clock) of the process and all its threads."""
    t = proc.cpu_times()
    switches = 0
    for thread in proc.threads():  # /proc/PID/status counts the main thread's alone
        try:
            counts = psutil.Process(thread.id).num_ctx_switches()
            switches += counts.voluntary + counts.involuntary
        except psutil.Error:
            continue  # a thread that ended meanwhile
    return t.user + t.system, switches, time.monotonic()


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the UI exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the UI did not answer at {url} within {timeout:g} s")
