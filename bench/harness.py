"""What every benchmark shares: the scripted model, real Scout servers, clients, statistics.

Nothing here imports Flask or starts Scout in this process: each benchmark runs
`python -m scout.server` as a child process on a free port with a fresh database and
HOME under its own temporary directory, and tears it down (with every process that
carries that HOME, i.e. the zygote, task leaders, workers and Claude Code CLIs).
"""
from __future__ import annotations

import http.client
import json
import os
import platform
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import psutil

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TERMINAL = ("completed", "failed", "cancelled")


# -- statistics ------------------------------------------------------------------------

def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None for no values."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary_ms(values_s: Iterable[float]) -> dict[str, Any]:
    """p50/p90/p99/max/mean of durations given in seconds, in milliseconds."""
    data = [v * 1000.0 for v in values_s]
    if not data:
        return {"n": 0}
    return {"n": len(data), "p50": round(percentile(data, 50), 2), "p90": round(percentile(data, 90), 2),
            "p99": round(percentile(data, 99), 2), "max": round(max(data), 2),
            "mean": round(sum(data) / len(data), 2)}


def median(values: Iterable[float]) -> float | None:
    return percentile(values, 50)


# -- the machine -----------------------------------------------------------------------

def cli_path() -> str:
    import claude_agent_sdk
    return str(Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude")


def cli_version(path: str) -> str | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "scout"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = None, None
    try:
        from scout import __version__ as scout_version
    except ImportError:
        scout_version = None
    path = cli_path()
    return {
        "cpu_model": cpu, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "python_executable": PY, "cli_version": cli_version(path), "cli_path": path,
        "scout_version": scout_version, "git_commit": commit, "scout_tree_dirty": dirty,
        "hostname": platform.node(), "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# -- processes -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(home: str, grace: float = 2.0) -> int:
    """Kill every process this benchmark started under `home` (its HOME is inherited by the
    zygote, leaders, workers, CLIs and their tools). Returns how many were signalled."""
    me = os.getpid()
    procs = []
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            if proc.environ().get("HOME", "").startswith(home):
                procs.append(proc)
        except (psutil.Error, OSError):
            continue
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return len(procs)


def kill_all(procs: list[psutil.Process], grace: float = 2.0) -> None:
    """SIGTERM these processes (by pid, checked against their start time), SIGKILL stragglers."""
    live = [p for p in procs if p.is_running()]
    for proc in live:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(live, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)


class ModelServer:
    """tests/model_server.py in a child process (`--port 0`, reads its READY line)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> "ModelServer":
        self.proc = subprocess.Popen([PY, str(ROOT / "tests" / "model_server.py"), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"model server did not start: {line!r}")
        self.url = line.split()[1]
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def env(self, home: str) -> dict[str, str]:
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": "test-key",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "HOME": home}


@dataclass
class Context:
    """What a benchmark gets: the run's options, the model, a scratch directory."""

    quick: bool
    model: ModelServer
    cli: str
    workdir: Path
    log: Callable[[str], None] = print
    keep: bool = False

    def scratch(self, name: str) -> "Scratch":
        return Scratch(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.workdir)), self)


@dataclass
class Scratch:
    """One benchmark's directory: home/, work/ (the tasks' cwd), data/scout.db, logs."""

    path: Path
    ctx: Context
    servers: list["ScoutServer"] = field(default_factory=list)

    def __post_init__(self) -> None:
        for sub in ("home", "work", "data"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)

    @property
    def home(self) -> str:
        return str(self.path / "home")

    @property
    def cwd(self) -> str:
        return str(self.path / "work")

    @property
    def db(self) -> str:
        return str(self.path / "data" / "scout.db")

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SCOUT_", "ANTHROPIC_", "CLAUDE", "PYTHONPATH"))}
        env.update(self.ctx.model.env(self.home))
        return env

    def server(self, **overrides: Any) -> "ScoutServer":
        env = self.base_env()
        env.update({
            "SCOUT_DB": self.db, "SCOUT_ALLOWED_ROOTS": self.cwd, "SCOUT_STOP_GRACE": "1",
            "SCOUT_SHUTDOWN": "cancel", "PYTHONPATH": str(ROOT),
            "SCOUT_SESSION_IDLE": "0",  # each task cold, as measured before warm sessions; bench/warm.py turns it on
        })
        env.update({k: str(v) for k, v in overrides.items()})
        srv = ScoutServer(env=env, workdir=self.path)
        self.servers.append(srv)
        return srv.start()

    def cleanup(self) -> None:
        # The zygote, leaders and workers are the server's descendants (their environ is
        # overwritten by their process titles, so HOME cannot find them); the CLIs and
        # their tools carry HOME. Collect both, stop the server, then end what is left.
        mine: list[psutil.Process] = []
        for srv in self.servers:
            if srv.proc is not None and srv.proc.poll() is None:
                try:
                    mine += srv.ps.children(recursive=True)
                except psutil.Error:
                    pass
        for srv in self.servers:
            srv.stop()
        kill_all(mine)
        sweep(self.home)

    def zygote(self, server: "ScoutServer", timeout: float = 30.0) -> psutil.Process:
        """The server's zygote (once it has titled itself)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for child in server.ps.children():
                try:
                    if child.cmdline()[:1] == ["scout: zygote"]:
                        return child
                except psutil.Error:
                    continue
            time.sleep(0.05)
        raise RuntimeError("the server's zygote did not appear")


@dataclass
class ScoutServer:
    """A real `python -m scout.server` on a free port."""

    env: dict[str, str]
    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"server-{self.port}.log"

    def start(self, timeout: float = 60.0) -> "ScoutServer":
        self.port = free_port()
        env = {**self.env, "SCOUT_PORT": str(self.port)}
        self.proc = subprocess.Popen([PY, "-m", "scout.server"], env=env, cwd=self.env.get("SCOUT_ALLOWED_ROOTS"),
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"scout server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                status, _ = self.request("GET", "/health", timeout=2)
                if status in (200, 503):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"scout server did not start:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    @property
    def ps(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    # -- HTTP ----------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        """One request on a fresh connection; returns (status, decoded JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            return _do(conn, method, path, body)
        finally:
            conn.close()

    def client(self, timeout: float = 60.0) -> "Client":
        return Client(self.port, timeout)

    def chat(self, message: str, **fields: Any) -> str:
        status, body = self.request("POST", "/chat", {"message": message, **fields})
        if status != 202:
            raise RuntimeError(f"POST /chat answered {status}: {body}")
        return body["task_id"]

    def status(self, task_id: str, events: bool = False) -> dict[str, Any]:
        status, body = self.request("GET", f"/chat/{task_id}/status?events={'true' if events else 'false'}")
        if status != 200:
            raise RuntimeError(f"status answered {status}: {body}")
        return body

    def wait_status(self, task_ids: list[str], statuses: tuple[str, ...] = TERMINAL,
                    timeout: float = 120.0) -> dict[str, dict[str, Any]]:
        """Poll until every task is in one of `statuses`; returns their status documents."""
        deadline = time.time() + timeout
        docs: dict[str, dict[str, Any]] = {}
        with self.client() as c:
            while time.time() < deadline:
                for tid in task_ids:
                    if tid in docs:
                        continue
                    _, doc = c.get(f"/chat/{tid}/status?events=false")
                    if doc["status"] in statuses:
                        docs[tid] = doc
                if len(docs) == len(task_ids):
                    return docs
                time.sleep(0.1)
        missing = [t for t in task_ids if t not in docs]
        raise TimeoutError(f"{len(missing)} tasks not {statuses} after {timeout}s")


class Client:
    """A keep-alive HTTP/1.1 connection (what latency measurements use)."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def get(self, path: str) -> tuple[int, Any]:
        return _do(self.conn, "GET", path, None)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        return _do(self.conn, "POST", path, body)

    def timed(self, method: str, path: str, body: Any = None) -> tuple[float, int, Any]:
        t0 = time.perf_counter()
        status, doc = _do(self.conn, method, path, body)
        return time.perf_counter() - t0, status, doc


def _do(conn: http.client.HTTPConnection, method: str, path: str, body: Any) -> tuple[int, Any]:
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
    except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
        conn.close()  # a keep-alive connection the server closed: retry once on a new one
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
    raw = resp.read()
    if resp.getheader("Content-Type", "").startswith("application/json"):
        return resp.status, json.loads(raw)
    return resp.status, raw.decode(errors="replace")


def ttfb(port: int, path: str, read_all: bool = True, timeout: float = 60.0) -> tuple[float, float, int]:
    """(time to the first byte of the response, time to its end, bytes) for one GET on a new
    connection; for a stream, `read_all=False` stops at the first SSE event."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        t0 = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        first = sock.recv(65536)
        t_first = time.perf_counter() - t0
        total = len(first)
        buf = first
        while True:
            if not read_all and b"\n\nid: " in buf:
                break
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if not read_all:
                buf += chunk
        return t_first, time.perf_counter() - t0, total
    finally:
        sock.close()


# -- SSE clients ---------------------------------------------------------------------

@dataclass
class SSEConn:
    """One raw-socket SSE connection, parsed incrementally (HTTP/1.1, chunked)."""

    task_id: str
    sock: socket.socket
    opened: float
    raw: bytes = b""
    body: bytes = b""
    headers_done: bool = False
    status: int = 0
    chunked: bool = False
    closed: bool = False
    ended: bool = False
    events: int = 0


class SSEHub:
    """Many SSE streams followed by one selector thread, so a receive is timestamped the
    moment the kernel hands it over (threads would add GIL hand-off delays to the numbers).

    on_event(conn, event_type, data_dict, received_at) is called for each event.
    """

    def __init__(self, port: int, on_event: Callable[[SSEConn, str, dict[str, Any], float], None]) -> None:
        self.port = port
        self.on_event = on_event
        self.sel = selectors.DefaultSelector()
        self.conns: list[SSEConn] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def open(self, task_id: str, after: int = 0) -> SSEConn:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        query = f"?last_event_id={after}" if after else ""
        sock.sendall(f"GET /chat/{task_id}/stream{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Accept: text/event-stream\r\n\r\n".encode())
        sock.setblocking(False)
        conn = SSEConn(task_id, sock, time.time())
        with self._lock:
            self.conns.append(conn)
            self.sel.register(sock, selectors.EVENT_READ, conn)
        return conn

    def start(self) -> "SSEHub":
        self._thread = threading.Thread(target=self._loop, name="sse-hub", daemon=True)
        self._thread.start()
        return self

    def open_count(self) -> int:
        return sum(1 for c in self.conns if not c.closed)

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        with self._lock:
            for conn in self.conns:
                if not conn.closed:
                    try:
                        self.sel.unregister(conn.sock)
                    except (KeyError, ValueError):
                        pass
                    conn.sock.close()
                    conn.closed = True
        self.sel.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                empty = not self.sel.get_map()
            if empty:
                time.sleep(0.01)
                continue
            for key, _ in self.sel.select(timeout=0.05):
                now = time.time()
                conn: SSEConn = key.data
                try:
                    data = conn.sock.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self.errors.append(f"{conn.task_id}: {exc}")
                    data = b""
                if not data:
                    with self._lock:
                        self.sel.unregister(conn.sock)
                    conn.sock.close()
                    conn.closed = True
                    continue
                try:
                    self._feed(conn, data, now)
                except Exception as exc:  # noqa: BLE001 - a bad stream is reported, not fatal
                    self.errors.append(f"{conn.task_id}: {type(exc).__name__}: {exc}")

    def _feed(self, conn: SSEConn, data: bytes, now: float) -> None:
        conn.raw += data
        if not conn.headers_done:
            end = conn.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = conn.raw[:end].decode("latin-1")
            conn.raw = conn.raw[end + 4:]
            conn.headers_done = True
            conn.status = int(head.split(" ", 2)[1])
            conn.chunked = bool(re.search(r"(?im)^transfer-encoding:\s*chunked", head))
            if conn.status != 200:
                self.errors.append(f"{conn.task_id}: HTTP {conn.status}")
        if conn.chunked:
            while True:
                nl = conn.raw.find(b"\r\n")
                if nl < 0:
                    break
                size = int(conn.raw[:nl].split(b";")[0] or b"0", 16)
                if len(conn.raw) < nl + 2 + size + 2:
                    break
                conn.body += conn.raw[nl + 2:nl + 2 + size]
                conn.raw = conn.raw[nl + 2 + size + 2:]
        else:
            conn.body, conn.raw = conn.body + conn.raw, b""
        while True:
            end = conn.body.find(b"\n\n")
            if end < 0:
                return
            block, conn.body = conn.body[:end].decode(), conn.body[end + 2:]
            etype, datas = "message", []
            for line in block.split("\n"):
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    etype = value
                elif name == "data":
                    datas.append(value)
            if not datas:
                continue
            conn.events += 1
            payload = json.loads("\n".join(datas))
            if etype == "end":
                conn.ended = True
            self.on_event(conn, etype, payload, now)


# -- CPU and memory ------------------------------------------------------------------

def cpu_seconds(proc: psutil.Process, children: bool = False) -> float:
    t = proc.cpu_times()
    total = t.user + t.system
    if children:
        for child in proc.children(recursive=True):
            try:
                ct = child.cpu_times()
                total += ct.user + ct.system
            except psutil.Error:
                pass
    return total


def mem_mb(proc: psutil.Process) -> dict[str, float]:
    """RSS, USS and PSS of one process, in MB."""
    info = proc.memory_full_info()
    return {"rss_mb": round(info.rss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1),
            "pss_mb": round(info.pss / 2**20, 1)}


def find_titled(title: str) -> psutil.Process | None:
    for proc in psutil.process_iter():
        try:
            if proc.cmdline()[:1] == [title]:
                return proc
        except (psutil.Error, OSError):
            continue
    return None


def sandbox_args(scratch: Scratch) -> tuple[str, ...]:
    """The bare CLI's `--settings` for the OS sandbox Scout's default mode gives its tasks here
    (none where no sandbox works), so a bare run starts the same Claude Code Scout does."""
    from scout import sandbox  # the one piece of Scout the bench imports: the settings themselves

    if not sandbox.probe().available:
        return ()
    data = os.path.dirname(scratch.db)
    return ("--settings", json.dumps({"sandbox": sandbox.settings(
        scratch.cwd, "temp", [data, os.path.join(data, "logs")], [], False)}))


def run_cli(cli: str, prompt: str, env: dict[str, str], cwd: str,
            on_start: Callable[[subprocess.Popen], None] | None = None,
            extra: tuple[str, ...] = ()) -> dict[str, float]:
    """`claude -p PROMPT --output-format stream-json --verbose [EXTRA]` directly (stdin=DEVNULL):
    seconds to its first stdout line, to the result line, and to its exit."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([cli, "-p", prompt, "--output-format", "stream-json", "--verbose", *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, cwd=cwd)
    if on_start:
        on_start(proc)
    first = result = None
    ok = False
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.perf_counter() - t0
        if first is None:
            first = now
        if line.startswith(b'{"type":"result"') or b'"type":"result"' in line:
            result = now
            try:
                ok = not json.loads(line).get("is_error")
            except ValueError:
                pass
    proc.wait()
    end = time.perf_counter() - t0
    return {"first_line": first or end, "result": result or end, "exit": end, "ok": ok and proc.returncode == 0}


# -- results -------------------------------------------------------------------------

@dataclass
class Result:
    """A benchmark's numbers: metrics (anything JSON), targets (checked), params, notes."""

    name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    targets: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # table rows without a target

    def check(self, label: str, value: float | None, op: str, limit: float, unit: str = "") -> bool | None:
        """Record a target: `value op limit` (op is '<=', '<' or '>=')."""
        if value is None:
            ok = None
        elif op == "<=":
            ok = value <= limit
        elif op == "<":
            ok = value < limit
        elif op == ">=":
            ok = value >= limit
        elif op == "==":
            ok = value == limit
        else:
            raise ValueError(op)
        self.targets.append({"label": label, "value": _round(value), "op": op, "target": limit,
                             "unit": unit, "ok": ok})
        return ok

    def show(self, label: str, value: Any, unit: str = "") -> None:
        """A number for the table that has no target."""
        self.rows.append({"label": label, "value": _round(value), "unit": unit})

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "targets": self.targets, "info": self.rows,
                "params": self.params, "notes": self.notes}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3 if abs(value) < 10 else 1)
    return value


def thread_names(pid: int) -> dict[int, str]:
    """Native thread id -> Python thread name, from `py-spy dump` (empty without py-spy)."""
    spy = Path(PY).parent / "py-spy"
    if not spy.exists():
        return {}
    try:
        out = subprocess.run([str(spy), "dump", "-p", str(pid)], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names = {}
    for m in re.finditer(r'^Thread (\d+) \([^)]*\): "([^"]*)"', out, re.M):
        names[int(m.group(1))] = m.group(2)
    return names


def thread_cpu(proc: psutil.Process) -> dict[int, float]:
    """CPU seconds (user+system) of each thread of a process, by native thread id."""
    return {t.id: t.user_time + t.system_time for t in proc.threads()}


def thread_cpu_delta(before: dict[int, float], after: dict[int, float], names: dict[int, str],
                     top: int = 8) -> dict[str, float]:
    """The threads that used the most CPU between two thread_cpu() readings, by name
    (waitress request threads summed as "waitress-*")."""
    out: dict[str, float] = {}
    for tid, cpu in after.items():
        name = names.get(tid, f"tid {tid}")
        if name.startswith("waitress-"):
            name = "waitress-* (request threads)"
        out[name] = out.get(name, 0.0) + cpu - before.get(tid, 0.0)
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])[:top]}


class CpuWindow:
    """System-wide CPU use over a window, and how much of it the server process took."""

    def __init__(self, server: psutil.Process | None = None) -> None:
        self.server = server
        self.t0 = psutil.cpu_times()
        self.w0 = time.monotonic()
        self.s0 = cpu_seconds(server) if server else 0.0

    def stop(self) -> dict[str, float]:
        t1 = psutil.cpu_times()
        wall = time.monotonic() - self.w0
        busy = sum(t1) - sum(self.t0) - ((t1.idle + t1.iowait) - (self.t0.idle + self.t0.iowait))
        total = sum(t1) - sum(self.t0)
        out = {"machine_busy_percent": round(100.0 * busy / total, 1) if total else 0.0,
               "wall_s": round(wall, 2)}
        if self.server:
            out["server_cpu_percent_of_core"] = round(100.0 * (cpu_seconds(self.server) - self.s0) / wall, 1)
        return out


class Accounting:
    """CPU used over one benchmark: by the whole machine, and by processes that are not
    this run's (another test suite, a browser) and that were alive at its end.

    Those others compete for the same two cores and move the latency tails. Processes
    that came and went during the benchmark are not seen, so `other_cores` is a lower
    bound.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = str(workdir)
        self.t0 = psutil.cpu_times()
        self.w0 = time.monotonic()
        self.start = time.time()
        self.o0 = self._others()

    def _others(self) -> dict[tuple[int, float], float]:
        me = psutil.Process()
        mine = {me.pid, *(c.pid for c in me.children(recursive=True))}
        out = {}
        for proc in psutil.process_iter(["create_time", "cpu_times"]):
            if proc.pid in mine or proc.info["cpu_times"] is None:
                continue
            try:
                if proc.environ().get("HOME", "").startswith(self.workdir):
                    continue
            except (psutil.Error, OSError):
                pass
            t = proc.info["cpu_times"]
            out[(proc.pid, proc.info["create_time"])] = t.user + t.system
        return out

    def stop(self) -> dict[str, float]:
        t1 = psutil.cpu_times()
        wall = time.monotonic() - self.w0
        busy = (sum(t1) - t1.idle - t1.iowait) - (sum(self.t0) - self.t0.idle - self.t0.iowait)
        others = 0.0
        for key, cpu in self._others().items():
            if key in self.o0:
                others += cpu - self.o0[key]
            elif key[1] >= self.start:
                others += cpu
        return {"wall_s": round(wall, 1), "machine_busy_cores": round(busy / wall, 2),
                "other_cores": round(others / wall, 2), "loadavg_1m_end": round(os.getloadavg()[0], 2)}
