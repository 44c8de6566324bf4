"""Soak: many tasks, random stops and server kills; nothing may be lost or left behind.

    .venv/bin/python -m bench.soak [--tasks 500] [--kills 3] [--stop-ratio 0.1] [--workers 8]

Starts the scripted model server and a real Scout server (fresh database), posts the
tasks from several client threads, stops some at random moments, SIGKILLs the server
`--kills` times along the way (restarting it at once), then waits for every task to end
and reports, each of which must be 0:

* tasks lost: accepted (202) but unknown afterwards;
* events lost: per-task sequence gaps, or a finished task whose log lacks its ending;
* tasks in a false state: not finished at the end, or completed without a result;
* orphan processes: any process of a soak task still alive, and zombies left behind.

Writes bench/results/soak.json. Traffic stays on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("completed", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir = env, workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**self.env, "SCOUT_PORT": str(self.port)}
        log = open(self.workdir / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "scout.server"], env=env, cwd=self.workdir,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def call(method: str, url: str, **kw) -> requests.Response | None:
    """One API call that tolerates the server being down for a moment (retries ~20 s)."""
    for _ in range(200):
        try:
            return requests.request(method, url, timeout=60, **kw)
        except requests.RequestException:
            time.sleep(0.1)
    return None


def task_processes(ids: set[str]) -> tuple[list[int], int]:
    alive, zombies = [], 0
    for proc in psutil.process_iter():
        try:
            env_id = proc.environ().get("SCOUT_TASK_ID")
            title = " ".join(proc.cmdline()[:1])
            mine = env_id in ids or any(title.endswith(i) for i in ids if title.startswith("scout: "))
            if not mine:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                zombies += 1
            else:
                alive.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return alive, zombies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--stop-ratio", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    work = Path(tempfile.mkdtemp(prefix="scout-soak-"))
    (work / "home").mkdir()
    model = subprocess.Popen([sys.executable, str(ROOT / "tests" / "model_server.py"), "--port", "0"],
                             stdout=subprocess.PIPE, text=True)
    model_url = model.stdout.readline().split()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOUT_", "ANTHROPIC_", "CLAUDE"))}
    env.update({"ANTHROPIC_BASE_URL": model_url, "ANTHROPIC_API_KEY": "soak",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "HOME": str(work / "home"),
                "SCOUT_DB": str(work / "soak.db"), "SCOUT_ALLOWED_ROOTS": str(work),
                "SCOUT_MAX_WORKERS": str(args.workers), "SCOUT_STOP_GRACE": "1",
                "SCOUT_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)})
    server = Server(env, work)
    server.start()
    accepted: list[str] = []
    stop_requested: set[str] = set()
    lock = threading.Lock()
    started = time.time()
    kill_points = {int(args.tasks * (k + 1) / (args.kills + 1)) for k in range(args.kills)}
    kills_done = 0
    counter = iter(range(args.tasks))
    counter_lock = threading.Lock()
    prompts = ["quick answer {i}", "SLOW: 10 0.05 soak {i}", "BASH: echo soak-{i}"]

    def client() -> None:
        nonlocal kills_done
        while True:
            with counter_lock:
                i = next(counter, None)
                if i is None:
                    return
                if i in kill_points:
                    server.kill()
                    kills_done += 1
                    server.start()
            resp = call("POST", server.url + "/chat",
                        json={"message": rng.choice(prompts).format(i=i), "cwd": str(work)})
            if resp is None or resp.status_code != 202:
                continue
            task_id = resp.json()["task_id"]
            with lock:
                accepted.append(task_id)
            if rng.random() < args.stop_ratio:
                time.sleep(rng.uniform(0, 1.5))
                with lock:
                    stop_requested.add(task_id)
                call("POST", f"{server.url}/chat/{task_id}/stop")

    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    deadline = time.time() + 900
    docs: dict[str, dict] = {}
    while time.time() < deadline and len(docs) < len(accepted):
        for task_id in accepted:
            if task_id in docs:
                continue
            resp = call("GET", f"{server.url}/chat/{task_id}/status")
            if resp is not None and resp.status_code == 200 and resp.json()["status"] in TERMINAL:
                docs[task_id] = resp.json()
            elif resp is not None and resp.status_code == 404:
                docs[task_id] = {"status": "lost", "events": []}
        time.sleep(0.5)
    elapsed = time.time() - started
    time.sleep(1.0)

    lost = [t for t in accepted if docs.get(t, {}).get("status") == "lost"]
    false_state, events_lost = [], []
    for task_id in accepted:
        doc = docs.get(task_id)
        if doc is None:
            false_state.append(task_id)
            continue
        if doc["status"] == "lost":
            continue
        seqs = [e["seq"] for e in doc["events"]]
        last = doc["events"][-1] if doc["events"] else None
        if seqs != list(range(1, len(seqs) + 1)) or not last or last["type"] != "status" \
                or last["payload"]["status"] != doc["status"]:
            events_lost.append(task_id)
        if doc["status"] == "completed" and not doc.get("result"):
            false_state.append(task_id)
        if doc["status"] == "cancelled" and task_id not in stop_requested:
            false_state.append(task_id)
    alive, zombies = task_processes(set(accepted))
    by_status: dict[str, int] = {}
    for doc in docs.values():
        by_status[doc["status"]] = by_status.get(doc["status"], 0) + 1
    server.stop()
    model.terminate()

    report = {
        "tasks_posted": args.tasks, "tasks_accepted": len(accepted), "server_kills": kills_done,
        "stops_requested": len(stop_requested), "by_status": by_status, "elapsed_s": round(elapsed, 1),
        "tasks_lost": len(lost), "events_lost": len(events_lost), "tasks_in_false_state": len(false_state),
        "orphan_processes": len(alive), "zombies": zombies,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    bad = report["tasks_lost"] + report["events_lost"] + report["tasks_in_false_state"] + report["orphan_processes"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
