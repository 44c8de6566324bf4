"""run_servers.py (scout.launcher): start both servers, refuse busy ports, stop cleanly on Ctrl-C."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from conftest import free_port
from stack import ROOT, http_ok, kill_tagged, launch, stack_env


@pytest.fixture
def env(model, tmp_path: Path) -> dict[str, str]:
    return stack_env(model, tmp_path)


def gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_help_lists_flags_and_variables():
    out = subprocess.run([sys.executable, str(ROOT / "run_servers.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for word in ("--host", "--port", "--ui-port", "--ui-host", "--db", "--token",
                 "SCOUT_HOST", "SCOUT_PORT", "SCOUT_UI_PORT", "SCOUT_UI_HOST", "SCOUT_DB", "SCOUT_API_TOKEN"):
        assert word in out.stdout, word
    ui = subprocess.run([sys.executable, "-m", "scout.ui", "--help"], capture_output=True, text=True,
                        timeout=60, cwd=str(ROOT))
    assert ui.returncode == 0, ui.stderr
    for word in ("SCOUT_UI_HOST", "SCOUT_UI_PORT", "SCOUT_API_URL", "SCOUT_API_TOKEN"):
        assert word in ui.stdout, word


def test_starts_both_then_ctrl_c_stops_both_with_exit_0(env, tmp_path: Path):
    api_port, ui_port = free_port(), free_port()
    stack = launch({**env, "SCOUT_API_TOKEN": "s3cret"}, tmp_path, api_port, ui_port)
    try:
        out = stack.output()
        assert f"http://127.0.0.1:{api_port}" in out and f"http://127.0.0.1:{ui_port}" in out, out
        # The API is up and the token reached it; the UI is up and was told about both.
        assert requests.get(stack.api_url + "/health", timeout=10).status_code == 200
        assert requests.get(stack.api_url + "/tasks", timeout=10).status_code == 401
        assert requests.get(stack.api_url + "/tasks", timeout=10,
                            headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert requests.get(stack.ui_url + "/", timeout=10).status_code == 200
        assert len(stack.children) == 2, stack.children
        by_role = {("ui" if "scout.ui" in " ".join(c.cmdline()) else "api"): c for c in stack.children}
        ui_env = by_role["ui"].environ()
        assert ui_env["GRADIO_ANALYTICS_ENABLED"] == "False"
        assert ui_env["SCOUT_API_URL"] == stack.api_url
        # The token reached both (the API wants it, the UI logs in with it) but not through
        # their environments, which the agent's tools could read (scout/vault.py).
        for proc in (*stack.children, psutil.Process(stack.proc.pid)):
            assert "SCOUT_API_TOKEN" not in proc.environ() and b"s3cret" not in \
                open(f"/proc/{proc.pid}/environ", "rb").read(), proc
        assert requests.post(stack.ui_url + "/login", data={"username": "u", "password": "s3cret"},
                             timeout=10).status_code == 200
        assert by_role["api"].environ()["SCOUT_DB"] == env["SCOUT_DB"]
    finally:
        started = time.monotonic()
        code = stack.stop(signal.SIGINT)
    assert code == 0, stack.output()
    assert time.monotonic() - started < 30
    for child in stack.children:
        assert gone(child), child
    assert not http_ok(stack.api_url + "/health") and not http_ok(stack.ui_url + "/")
    kill_tagged(tmp_path)


@pytest.mark.parametrize("busy", ["api", "ui"])
def test_busy_port_is_a_clear_error_and_starts_nothing(env, tmp_path: Path, busy: str):
    api_port, ui_port = free_port(), free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", api_port if busy == "api" else ui_port))
    blocker.listen(1)
    try:
        started = time.monotonic()
        stack = launch(env, tmp_path, api_port, ui_port, wait=False)
        code = stack.proc.wait(30)
        out = stack.output()
        assert code == 2, out
        assert time.monotonic() - started < 20
        port = api_port if busy == "api" else ui_port
        assert f"port {port}" in out and "already in use" in out, out
        assert "Traceback" not in out
        # Nothing was left half-started.
        other = ui_port if busy == "api" else api_port
        assert not http_ok(f"http://127.0.0.1:{other}/")
        assert not [p for p in psutil.process_iter(["environ"])
                    if (p.info.get("environ") or {}).get("SCOUT_DB") == env["SCOUT_DB"]]
    finally:
        blocker.close()


def test_a_child_dying_stops_the_other(env, tmp_path: Path):
    stack = launch(env, tmp_path, free_port(), free_port())
    try:
        api = next(c for c in stack.children if "scout.server" in " ".join(c.cmdline()))
        ui = next(c for c in stack.children if "scout.ui" in " ".join(c.cmdline()))
        api.kill()
        code = stack.proc.wait(40)
        assert code == 1, stack.output()
        assert "API server exited" in stack.output()
        assert gone(ui)
    finally:
        stack.stop()
        kill_tagged(tmp_path)
