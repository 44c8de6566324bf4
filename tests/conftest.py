"""Shared fixtures: the scripted model server and real Scout servers in subprocesses.

Every test that runs a task goes through the real Claude Code CLI (bundled with
claude-agent-sdk) and the real SDK, talking to tests/model_server.py on loopback.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_server import ScriptedModel  # noqa: E402

TERMINAL = ("completed", "failed", "cancelled")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def model() -> Iterator[ScriptedModel]:
    server = ScriptedModel().start()
    yield server
    server.stop()


@dataclass
class ScoutServer:
    """A real `python -m scout.server` process on a free port, with its own database."""

    env: dict[str, str]
    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    token: str | None = None
    log_path: Path = field(default=None)  # type: ignore[assignment]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> str:
        return self.env["SCOUT_DB"]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def start(self, timeout: float = 30.0) -> "ScoutServer":
        self.port = self.port or free_port()
        env = {**self.env, "SCOUT_PORT": str(self.port)}
        self.log_path = self.workdir / f"server-{self.port}-{time.time():.0f}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "scout.server"], env=env, cwd=str(self.workdir),
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code in (200, 503):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the server: what a crash looks like."""
        self.stop(signal.SIGKILL)

    # -- API helpers -------------------------------------------------------------

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url + path, headers=self.headers(), timeout=60, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers(), timeout=60, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return requests.delete(self.url + path, headers=self.headers(), timeout=60, **kw)

    def chat(self, message: str, **fields: Any) -> str:
        resp = self.post("/chat", json={"message": message, **fields})
        assert resp.status_code == 202, resp.text
        return resp.json()["task_id"]

    def status(self, task_id: str) -> dict[str, Any]:
        resp = self.get(f"/chat/{task_id}/status")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait(self, task_id: str, timeout: float = 60.0, statuses: tuple[str, ...] = TERMINAL) -> dict[str, Any]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            doc = self.status(task_id)
            if doc["status"] in statuses:
                return doc
            time.sleep(0.05)
        raise AssertionError(f"task {task_id} still {doc['status']} after {timeout}s:\n{self.log()[-3000:]}")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "both_backends: run the test on SQLite and on PostgreSQL "
                                       "(SCOUT_DB a database in the tests' own cluster)")


def pytest_generate_tests(metafunc: Any) -> None:
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def backend(request: Any) -> str:
    """The store the servers of a test use: SQLite unless the test is marked both_backends."""
    return getattr(request, "param", "sqlite")


@pytest.fixture
def scout_env(model: ScriptedModel, tmp_path: Path, backend: str, request: Any) -> dict[str, str]:
    """Environment for a Scout server wired to the scripted model, all state under tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOUT_", "ANTHROPIC_", "CLAUDE"))}
    env.update(model.env(str(home)))
    env.update({
        "SCOUT_DB": str(tmp_path / "data" / "scout.db"),
        "SCOUT_ALLOWED_ROOTS": str(tmp_path),
        "SCOUT_MAX_WORKERS": "4",
        "SCOUT_STOP_GRACE": "2",
        "SCOUT_LOG_LEVEL": "WARNING",
        # Cold processes, one per task, as most tests count on; tests/test_warm.py turns warm
        # sessions on (a warm Claude Code per finished conversation would outlive each test).
        "SCOUT_SESSION_IDLE": "0",
        "PYTHONPATH": str(ROOT),
    })
    if backend == "postgresql":
        env["SCOUT_DB"] = request.getfixturevalue("pg_url")
    return env


@pytest.fixture
def make_server(scout_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Factory: make_server(**env_overrides) -> a started ScoutServer; all are stopped at the end."""
    servers: list[ScoutServer] = []

    def make(start: bool = True, **overrides: str) -> ScoutServer:
        env = {**scout_env, **{k: str(v) for k, v in overrides.items()}}
        server = ScoutServer(env=env, workdir=tmp_path, token=env.get("SCOUT_API_TOKEN"))
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop(signal.SIGTERM)
    # Nothing a test started may outlive it: sweep by the task tag.
    _kill_tagged(tmp_path)


def _kill_tagged(tmp_path: Path) -> None:
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("HOME", "").startswith(str(tmp_path)) and (
                "SCOUT_TASK_ID" in env or " ".join(proc.cmdline()[:1]).startswith("scout: ")):
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture
def server(make_server: Any) -> ScoutServer:
    return make_server()


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll predicate until it returns something true (returned), or fail after timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def tagged_processes(task_id: str) -> list[psutil.Process]:
    """Live (non-zombie) processes of a task: tagged in their environment (exec'd ones:
    the CLI and its tools) or titled with the task id (the forked leader and worker)."""
    out = []
    for proc in psutil.process_iter():
        try:
            mine = (proc.environ().get("SCOUT_TASK_ID") == task_id
                    or task_id in " ".join(proc.cmdline()[:1]))
            if mine and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.Error, OSError):
            continue
    return out


def processes_matching(text: str) -> list[psutil.Process]:
    """Live processes whose command line contains `text`."""
    out = []
    for proc in psutil.process_iter():
        try:
            if text in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.Error, OSError):
            continue
    return out


def read_sse(resp: requests.Response, until_end: bool = True) -> Iterator[dict[str, Any]]:
    """Parse an SSE response into {'id', 'event', 'data'} dicts (data JSON-decoded)."""
    import json
    event: dict[str, Any] = {}
    for raw in resp.iter_lines(decode_unicode=True):
        if raw is None:
            continue
        if raw == "":
            if "event" in event or "data" in event:
                if "data" in event:
                    event["data"] = json.loads(event["data"])
                yield event
                if until_end and event.get("event") == "end":
                    return
            event = {}
            continue
        if raw.startswith(":"):
            continue
        name, _, value = raw.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data" and "data" in event:
            event["data"] += "\n" + value
        else:
            event[name] = value


# -- PostgreSQL: one throwaway cluster per test run, a fresh database per test ------------

@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A PostgreSQL cluster of the tests' own (initdb in a temporary folder, on loopback)."""
    from scout.pgcluster import TempCluster

    cluster = TempCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    """The URL of a new, empty schema of its own in the test cluster's database (a schema
    takes milliseconds where a database takes most of a second), chosen by search_path
    in the URL as a user of a shared PostgreSQL would."""
    import uuid

    import psycopg

    schema = f"t{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_cluster.url}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: Any, tmp_path: Path) -> str:
    """SCOUT_DB for each backend in turn: an SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "data" / "scout.db")
    return request.getfixturevalue("pg_url")
