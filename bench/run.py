"""Run Scout's benchmarks: `python -m bench [--quick] [--only NAME ...]` (or `python bench/run.py`).

Prints a table and writes JSON (bench/results/latest.json, plus a timestamped copy)
with the machine it ran on. Targets are reported, never asserted: the exit code is 0
unless a benchmark could not run at all (then 1).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench.harness import Accounting, Context, ModelServer, Result, cli_path, machine_info  # noqa: E402

# name -> (module, one line for --list)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "overhead": ("bench.overhead", "POST→completed and POST→first event against the bare CLI"),
    "chat": ("bench.chat_latency", "POST /chat latency while 20 tasks run"),
    "sse": ("bench.sse", "SSE delivery latency to 200 streams; idle server CPU with 200 streams"),
    "concurrent": ("bench.concurrent", "50 tasks at once; /health latency meanwhile"),
    "ingest": ("bench.ingest", "events/s from 20 writer processes through Store.append_event"),
    "memory": ("bench.memory", "per-task leader+worker memory vs the CLI; server RSS under load"),
    "streams": ("bench.streams", "/health latency with 1,000 SSE streams open; the cap; gone clients freed"),
    "history": ("bench.history", "TTFB of status/stream for 10,000 events; GET /tasks over 100,000 tasks"),
    "idle": ("bench.idle", "idle CPU of the web UI (no browser) and of the API server"),
    "worktrees": ("bench.worktrees", "worktree of 10,000 files: create, snapshot, changes; POST→first event vs shared"),
    "postgres": ("bench.postgres", "PostgreSQL next to SQLite: ingest, SSE delivery; 3 nodes × N tasks"),
    "warm": ("bench.warm", "a follow-up warm, cold and as bare `claude -p --resume`; an idle warm process's memory"),
}
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (smaller counts)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only these benchmarks (repeat or comma-separate): " + ", ".join(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="JSON file to write")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories (logs, databases)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, what) in BENCHMARKS.items():
            print(f"{name:12} {what}")
        return 0
    names = [n.strip() for part in args.only for n in part.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    started = time.time()
    machine = machine_info()
    print(f"machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gb']} GB, "
          f"Python {machine['python']}, Claude Code {machine['cli_version']}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="scout-bench-"))
    model = ModelServer().start()
    ctx = Context(quick=args.quick, model=model, cli=cli_path(), workdir=workdir,
                  log=lambda msg: print(msg, flush=True), keep=args.keep)
    report: dict[str, Any] = {"machine": machine, "quick": args.quick,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
                              "benchmarks": {}}
    failed = False
    try:
        for name in names:
            module_name, what = BENCHMARKS[name]
            print(f"== {name}: {what}", flush=True)
            t0 = time.time()
            acct = Accounting(workdir)
            entry: dict[str, Any]
            try:
                result: Result = importlib.import_module(module_name).run(ctx)
                entry = {**result.to_dict(), "error": None}
            except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the rest
                failed = True
                traceback.print_exc()
                entry = {"metrics": {}, "targets": [], "info": [], "params": {}, "notes": [],
                         "error": f"{type(exc).__name__}: {exc}"}
            entry["duration_s"] = round(time.time() - t0, 1)
            entry["cpu"] = acct.stop()
            report["benchmarks"][name] = entry
            print(f"   ({entry['duration_s']} s; CPU cores busy {entry['cpu']['machine_busy_cores']}, of which "
                  f"other processes {entry['cpu']['other_cores']})", flush=True)
    finally:
        model.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"scratch kept in {workdir}")
    report["duration_s"] = round(time.time() - started, 1)
    report["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    table = render(report)
    report["table"] = table
    print()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=str)
    args.out.write_text(text)
    if args.out.resolve() == (RESULTS / "latest.json").resolve():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
        (RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json").write_text(text)
    print(f"\nwrote {args.out}")
    return 1 if failed else 0


def render(report: dict[str, Any]) -> str:
    """The results as a plain-text table (also stored in the JSON under "table")."""
    rows: list[tuple[str, str, str, str, str]] = []
    for name, entry in report["benchmarks"].items():
        if entry.get("error"):
            rows.append((name, "ERROR", entry["error"][:70], "", "ERROR"))
            continue
        for t in entry["targets"]:
            verdict = {True: "PASS", False: "MISS", None: "n/a"}[t["ok"]]
            rows.append((name, t["label"], _fmt(t["value"], t["unit"]), f"{t['op']} {_fmt(t['target'], t['unit'])}",
                         verdict))
        for r in entry["info"]:
            rows.append((name, r["label"], _fmt(r["value"], r["unit"]), "", ""))
    head = ("benchmark", "measure", "value", "target", "result")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(5)]
    widths[1] = min(widths[1], 60)
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for r in rows:
        label = r[1]
        first = True
        while label or first:  # wrap long labels
            piece, label = label[:widths[1]], label[widths[1]:]
            cells = (r[0], piece, r[2], r[3], r[4]) if first else ("", piece, "", "", "")
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
            first = False
    noisy = [f"{n} {e['cpu']['other_cores']:.2f}" for n, e in report["benchmarks"].items()
             if e.get("cpu", {}).get("other_cores", 0) >= 0.1]
    mode = "quick" if report["quick"] else "full"
    passed = sum(1 for e in report["benchmarks"].values() for t in e["targets"] if t["ok"])
    total = sum(1 for e in report["benchmarks"].values() for t in e["targets"])
    lines.append(f"{passed}/{total} targets met ({mode} run, {report.get('duration_s', '?')} s)")
    if noisy:
        lines.append("CPU cores used by other processes meanwhile (noise): " + ", ".join(noisy))
    return "\n".join(lines)


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        a = abs(value)
        text = (f"{value:.3f}" if a < 1 else f"{value:.2f}" if a < 10 else f"{value:.1f}" if a < 1000
                else f"{value:,.0f}")
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


if __name__ == "__main__":
    sys.exit(main())
