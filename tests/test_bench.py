"""Smoke test of the benchmark suite: `python -m bench --quick --only ingest` writes its JSON.

Only the shape of the report is checked, never the numbers (targets are for the
benchmark to report, not for tests to assert).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick_ingest_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "ingest", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"machine", "quick", "started_at", "duration_s", "benchmarks", "table"} <= set(report)
    assert report["quick"] is True
    machine = report["machine"]
    assert {"cpu_model", "cores", "python", "cli_version", "memory_gb"} <= set(machine)
    assert list(report["benchmarks"]) == ["ingest"]
    ingest = report["benchmarks"]["ingest"]
    assert ingest["error"] is None
    assert {"metrics", "targets", "info", "params", "duration_s"} <= set(ingest)
    assert {"events", "seconds", "events_per_s", "lost", "duplicated"} <= set(ingest["metrics"])
    for target in ingest["targets"]:
        assert {"label", "value", "op", "target", "unit", "ok"} <= set(target)
    assert "ingest" in report["table"] and "targets met" in report["table"]
    assert "targets met" in proc.stdout
