"""Start Scout's API server and web UI together (what ``python run_servers.py`` runs).

Both run as child processes (``python -m scout.server`` and ``python -m scout.ui``).
The launcher checks that both ports are free before starting anything, waits until
both answer, prints their addresses, and on Ctrl-C (SIGINT) or SIGTERM stops both
and exits 0. If either child dies, or does not come up in time, the other is stopped
too and the exit code is 1; bad settings or a busy port exit with 2.
"""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import requests

from . import vault
from .serverproc import install_shutdown_handlers, make_undumpable, spawn_server, stop_servers

if TYPE_CHECKING:
    import subprocess

DEFAULT_PORT = 8000
DEFAULT_UI_PORT = 7860


class LaunchError(Exception):
    """A problem found before anything was started (exit code 2)."""


@dataclass
class Child:
    """One child server process and the URL that tells it is up."""

    name: str
    argv: list[str]
    health_url: str
    secrets: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _port(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        port = int(value)
    except ValueError:
        raise LaunchError(f"{name} must be a port number, not {value!r}") from None
    if not 0 < port < 65536:
        raise LaunchError(f"{name} must be between 1 and 65535, not {port}")
    return port


def check_port_free(host: str, port: int, what: str, flag: str) -> None:
    """Raise LaunchError if something already listens on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the servers themselves do, so that a port in TIME_WAIT is not "busy".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LaunchError(f"port {port} on {host} is already in use, so the {what} cannot start "
                                  f"(is Scout already running?). Stop whatever uses it, or pick another "
                                  f"port with {flag}.") from None
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
                raise LaunchError(f"cannot listen on {host} for the {what}: {exc.strerror or exc}") from None
            if exc.errno == errno.EACCES:
                raise LaunchError(f"no permission to listen on port {port} for the {what}; "
                                  f"use a port above 1023 ({flag})") from None
            raise LaunchError(f"cannot listen on {host}:{port} for the {what}: {exc}") from None


def command_hint(api_url: str) -> str:
    """How to reach the `scout` command from this shell: it is installed next to this
    Python (in .venv/bin after `make run`), which is seldom on the PATH."""
    installed = os.path.join(os.path.dirname(sys.executable), "scout")
    if not os.path.exists(installed):
        command = f"{sys.executable} -m scout.cli"
    elif shutil.which("scout") == installed:
        command = "scout"
    else:
        relative = os.path.relpath(installed)
        command = relative if not relative.startswith("..") else installed
        if os.sep not in command:
            command = "./" + command
    url = "" if api_url == f"http://127.0.0.1:{DEFAULT_PORT}" else f"SCOUT_URL={api_url} "
    return f"Scout CLI: {url}{command} --help"


def client_host(host: str) -> str:
    """Where to reach a server that listens on `host` (a wildcard address means loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def build_parser() -> argparse.ArgumentParser:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python run_servers.py",
        description="Start the Scout API server and its web UI, wait until both answer, print their "
                    "addresses, and stop both on Ctrl-C. Every option can also be set by the environment "
                    "variable in brackets; other SCOUT_* settings (SCOUT_ALLOWED_ROOTS, SCOUT_MAX_WORKERS, "
                    "...) pass through to the API server.")
    parser.add_argument("--host", default=env.get("SCOUT_HOST") or "127.0.0.1",
                        help="address of the API server (SCOUT_HOST, default 127.0.0.1)")
    parser.add_argument("--port", default=env.get("SCOUT_PORT"),
                        help=f"port of the API server (SCOUT_PORT, default {DEFAULT_PORT})")
    parser.add_argument("--ui-host", default=env.get("SCOUT_UI_HOST") or None,
                        help="address of the web UI (SCOUT_UI_HOST, default 127.0.0.1; beyond loopback "
                             "the UI needs SCOUT_UI_AUTH=user:password)")
    parser.add_argument("--ui-port", default=env.get("SCOUT_UI_PORT"),
                        help=f"port of the web UI (SCOUT_UI_PORT, default {DEFAULT_UI_PORT})")
    parser.add_argument("--db", default=env.get("SCOUT_DB") or None,
                        help="the SQLite database file (SCOUT_DB, default data/scout.db)")
    parser.add_argument("--token", default=None,
                        help="bearer token the API requires and the UI sends (SCOUT_API_TOKEN; prefer "
                             "the variable, since arguments show in the process list)")
    parser.add_argument("--startup-timeout", type=float, default=float(env.get("SCOUT_STARTUP_TIMEOUT") or 90),
                        help="seconds to wait for both servers to answer (SCOUT_STARTUP_TIMEOUT, default 90)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run both servers until interrupted; returns the exit code."""
    make_undumpable()
    vault.reexec_without_secrets()  # our /proc environ must not hold the secrets either
    secrets = vault.take()
    args = build_parser().parse_args(argv)
    try:
        port = _port(args.port, "--port / SCOUT_PORT", DEFAULT_PORT)
        ui_port = _port(args.ui_port, "--ui-port / SCOUT_UI_PORT", DEFAULT_UI_PORT)
        host = args.host
        ui_host = args.ui_host or "127.0.0.1"
        if port == ui_port and client_host(host) == client_host(ui_host):
            raise LaunchError(f"the API and the UI cannot both use port {port}; change --port or --ui-port")
        check_port_free(host, port, "API server", "--port / SCOUT_PORT")
        check_port_free(ui_host, ui_port, "web UI", "--ui-port / SCOUT_UI_PORT")
    except LaunchError as exc:
        print(f"run_servers: {exc}", file=sys.stderr)
        return 2

    token = args.token or secrets.get("SCOUT_API_TOKEN") or None
    if token:
        secrets["SCOUT_API_TOKEN"] = token
    api_url = f"http://{client_host(host)}:{port}"
    ui_url = f"http://{client_host(ui_host)}:{ui_port}"

    env = dict(os.environ)
    env.update({"SCOUT_HOST": host, "SCOUT_PORT": str(port), "SCOUT_UI_HOST": ui_host,
                "SCOUT_UI_PORT": str(ui_port), "SCOUT_API_URL": api_url,
                "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"})
    # The children import scout from the same place the launcher did, installed or not.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    if args.db:
        env["SCOUT_DB"] = args.db
    # Each child gets only the secrets it uses, on a pipe of its own (scout/vault.py).
    children = [
        Child("API server", [sys.executable, "-m", "scout.server"], api_url + "/health",
              secrets={k: v for k, v in secrets.items() if k != "SCOUT_UI_AUTH"}),
        Child("web UI", [sys.executable, "-m", "scout.ui"], ui_url + "/",
              secrets={k: v for k, v in secrets.items() if k != "SCOUT_WEBHOOK_SECRET"}),
    ]
    stop_requested: list[int] = []
    restore_signals = install_shutdown_handlers(stop_requested.append)
    try:
        for child in children:
            child_env, fd = vault.hand_over(env, child.secrets)
            try:
                child.proc = spawn_server(child.argv, child_env, pass_fds=(fd,) if fd is not None else ())
            finally:
                if fd is not None:
                    os.close(fd)
        code = _wait_until_up(children, args.startup_timeout, lambda: bool(stop_requested))
        if code is not None:
            return code
        print(f"Scout API: {api_url}\nScout UI:  {ui_url}\n{command_hint(api_url)}\n"
              "Press Ctrl-C to stop both.", flush=True)
        while not stop_requested:
            for child in children:
                if not child.alive():
                    rc = child.proc.returncode if child.proc else None
                    print(f"run_servers: the {child.name} exited (code {rc}); stopping the rest.",
                          file=sys.stderr, flush=True)
                    return 1
            time.sleep(0.2)
        print("run_servers: stopping…", file=sys.stderr, flush=True)
        return 0
    finally:
        # The UI first: it is a client of the API.
        stop_servers([(c.name, c.proc) for c in reversed(children) if c.proc is not None],
                     say=lambda text: print(f"run_servers: {text}", file=sys.stderr, flush=True))
        restore_signals()


def _wait_until_up(children: list[Child], timeout: float, interrupted: Callable[[], bool]) -> int | None:
    """None once every child answers; otherwise the exit code to leave with."""
    deadline = time.monotonic() + timeout
    pending = list(children)
    with requests.Session() as http:
        while pending:
            if interrupted():
                return 0
            for child in list(pending):
                if not child.alive():
                    rc = child.proc.returncode if child.proc else None
                    print(f"run_servers: the {child.name} exited during start-up (code {rc}); "
                          "see its messages above.", file=sys.stderr, flush=True)
                    return 1
                try:
                    resp = http.get(child.health_url, timeout=2)
                    if resp.status_code < 500 or resp.status_code == 503:
                        pending.remove(child)
                except requests.RequestException:
                    pass
            if pending and time.monotonic() > deadline:
                names = " and ".join(c.name for c in pending)
                print(f"run_servers: the {names} did not answer within {timeout:g} s; stopping.",
                      file=sys.stderr, flush=True)
                return 1
            if pending:
                time.sleep(0.1)
    return None
