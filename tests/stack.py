"""`python run_servers.py` as a test fixture: the API server and the web UI, for real.

Used by tests/test_ui.py (browser tests) and tests/test_run_servers.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent


def stack_env(model: Any, base: Path, **extra: str) -> dict[str, str]:
    """Environment for run_servers.py wired to the scripted model, all state under `base`."""
    home = base / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOUT_", "ANTHROPIC_", "CLAUDE", "GRADIO_"))}
    env.update(model.env(str(home)))
    env.update({
        "SCOUT_DB": str(base / "data" / "scout.db"),
        "SCOUT_ALLOWED_ROOTS": str(base),
        "SCOUT_MAX_WORKERS": "4",
        "SCOUT_STOP_GRACE": "2",
        "SCOUT_LOG_LEVEL": "WARNING",
        # Cold processes, one per task, as most tests count on; tests/test_warm.py turns warm
        # sessions on (a warm Claude Code per finished conversation would outlive each test).
        "SCOUT_SESSION_IDLE": "0",
        "PYTHONPATH": str(ROOT),
    })
    env.update(extra)
    return env


@dataclass
class Stack:
    """A running `python run_servers.py` and what it printed."""

    proc: subprocess.Popen
    out_path: Path
    api_port: int
    ui_port: int
    children: list[psutil.Process] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def wait_ready(self, timeout: float = 120.0) -> "Stack":
        """Until the launcher prints both addresses (it does once both servers answer)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if "Scout UI:" in self.output():
                self.children = psutil.Process(self.proc.pid).children(recursive=False)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"run_servers.py exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.1)
        raise RuntimeError(f"run_servers.py not ready after {timeout}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """Send `sig` to the launcher only (as a terminal's Ctrl-C would) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for child in self.children:
                    try:
                        child.kill()
                    except psutil.Error:
                        pass
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def launch(env: dict[str, str], workdir: Path, api_port: int, ui_port: int, *args: str,
           wait: bool = True) -> Stack:
    """Start run_servers.py with the ports given through SCOUT_PORT / SCOUT_UI_PORT."""
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = workdir / f"run_servers-{api_port}-{time.time():.0f}.log"
    full_env = {**env, "SCOUT_PORT": str(api_port), "SCOUT_UI_PORT": str(ui_port)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_servers.py"), *args], env=full_env,
                            cwd=str(workdir), stdout=open(out_path, "ab"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    stack = Stack(proc, out_path, api_port, ui_port)
    return stack.wait_ready() if wait else stack


def kill_tagged(base: Path) -> None:
    """Kill any Claude Code process a test's tasks left behind (by the task tag and HOME)."""
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if "SCOUT_TASK_ID" in env and env.get("HOME", "").startswith(str(base)):
            try:
                proc.kill()
            except psutil.Error:
                pass


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False
