"""The attacks of issue 12, replayed against a real running Scout: each must be refused.

Every task here goes through the real Claude Code CLI against the scripted model
(``BASH: <command>`` makes it run that command with its Bash tool), so what a task's
command can and cannot do is what Claude Code's own sandbox (bubblewrap) lets it do.
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import free_port, wait_for
from stack import kill_tagged, launch, stack_env

from scout.config import ConfigError, Settings
from scout.containment import probe as probe_containment
from scout.sandbox import probe
from scout.server import check_bind

needs_sandbox = pytest.mark.skipif(not probe().available, reason=f"no OS sandbox here: {probe().error}")


def bash(server, command: str, **fields: Any) -> tuple[dict[str, Any], str]:
    """Run one Bash command in a task; its status document and the command's output."""
    doc = server.wait(server.chat(f"BASH: {command}", **fields), timeout=120)
    results = [e["payload"]["content"] for e in doc["events"] if e["type"] == "tool_result"]
    return doc, "\n".join(results)


def write_modes(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# -- the sandbox ---------------------------------------------------------------------------

@needs_sandbox
def test_scout_mode_writes_nothing_but_its_private_temp(make_server, tmp_path):
    server = make_server()
    proj = tmp_path / "proj"
    proj.mkdir()
    assert server.get("/health").json()["sandbox"] == {"available": True}
    doc, out = bash(server, f"touch {proj}/made; echo rc=$?; touch /tmp/scout-escape-{proj.stat().st_ino}; "
                            "echo rc=$?; touch \"$TMPDIR/mine\" && echo tmp-ok; echo tmp=$TMPDIR", cwd=str(proj))
    assert doc["status"] == "completed" and doc["mode"] == "Scout" and doc["sandboxed"] is True, doc
    assert out.count("Read-only file system") == 2 and out.count("rc=1") == 2, out
    assert not (proj / "made").exists() and not Path(f"/tmp/scout-escape-{proj.stat().st_ino}").exists()
    assert "tmp-ok" in out
    tmp = out.split("tmp=")[1].split()[0]
    assert "scout-task-" in tmp  # private to the task, and removed when its worker ends
    wait_for(lambda: not Path(tmp).exists(), timeout=30, what="the private temp folder removed")


@needs_sandbox
def test_code_mode_writes_inside_its_cwd_only(make_server, tmp_path):
    server = make_server()
    proj, other = tmp_path / "proj", tmp_path / "other"
    proj.mkdir()
    other.mkdir()
    doc, out = bash(server, f"touch {proj}/made && echo in-ok; touch {other}/made; echo rc=$?",
                    cwd=str(proj), mode="Code")
    assert doc["status"] == "completed" and doc["sandboxed"] is True, doc
    assert "in-ok" in out and (proj / "made").exists()
    assert "Read-only file system" in out and "rc=1" in out and not (other / "made").exists(), out


@needs_sandbox
def test_no_mode_can_read_the_data_directory(make_server, tmp_path):
    server = make_server()
    data = Path(server.db).parent
    for mode in ("Scout", "Code"):
        doc, out = bash(server, f"ls -A {data} | grep -c scout.db; head -c 15 {server.db} && echo READ; "
                                f"cat {data}/logs/*.log | head -c 100 && echo LOGS", mode=mode)
        assert doc["status"] == "completed", doc
        assert out.startswith("0") and "SQLite format" not in out and "READ" not in out, (mode, out)
        assert "LOGS" not in out or "No such file" in out, (mode, out)


@needs_sandbox
def test_sandboxed_commands_reach_only_allowed_domains(make_server, tmp_path):
    """No domain is allowed by default: a request through the sandbox's proxy is refused
    (the machine has no internet either way; the proxy's refusal is what shows the rule)."""
    server = make_server()
    doc, out = bash(server, "curl -sS -m 10 -o /dev/null https://example.org; echo rc=$?")
    assert doc["status"] == "completed", doc
    assert "rc=0" not in out and ("403" in out or "denied" in out.lower()), out


def no_sandbox_path(tmp_path: Path) -> str:
    """A PATH with everything of /usr/bin and /bin but bubblewrap: a machine without a sandbox."""
    bin_dir = tmp_path / "nobwrap-bin"
    bin_dir.mkdir()
    for src in ("/usr/local/bin", "/usr/bin", "/bin"):
        if os.path.isdir(src):
            for name in os.listdir(src):
                if name != "bwrap" and not (bin_dir / name).exists():
                    (bin_dir / name).symlink_to(os.path.join(src, name))
    return str(bin_dir)


def test_without_a_sandbox_auto_runs_unsandboxed_and_required_fails(make_server, tmp_path):
    modes = write_modes(tmp_path / "modes.toml", '[modes.Strict]\nallowed_tools = ["Bash"]\nsandbox = "required"\n')
    server = make_server(PATH=no_sandbox_path(tmp_path), SCOUT_MODES_FILE=modes)
    health = server.get("/health").json()["sandbox"]
    assert health["available"] is False and "bubblewrap" in health["error"]
    doc, out = bash(server, "echo ran")
    assert doc["status"] == "completed" and doc["sandboxed"] is False and "ran" in out
    doc = server.wait(server.chat("BASH: echo ran", mode="Strict"))
    assert doc["status"] == "failed" and doc["sandboxed"] is False
    assert "requires the OS sandbox" in doc["error"] and "bubblewrap" in doc["error"], doc["error"]
    assert not [e for e in doc["events"] if e["type"] == "tool_result"]  # nothing ran


# -- cwd, checked where it is used ---------------------------------------------------------

def test_queued_task_whose_cwd_became_a_symlink_does_not_run(make_server, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "proj").mkdir(parents=True)
    outside.mkdir()
    server = make_server(SCOUT_ALLOWED_ROOTS=str(root), SCOUT_MAX_WORKERS="1")
    blocker = server.chat("BASH: python3 -c 'import time; time.sleep(4)'", cwd=str(root))
    wait_for(lambda: server.status(blocker)["status"] == "running", what="the blocker runs")
    queued = server.chat("BASH: touch marker; pwd", cwd=str(root / "proj"))
    assert server.status(queued)["status"] == "pending"
    (root / "proj").rename(root / "proj-old")
    (root / "proj").symlink_to(outside)
    doc = server.wait(queued, timeout=120)
    assert doc["status"] == "failed" and "outside the allowed roots" in doc["error"], doc["error"]
    assert not (outside / "marker").exists()


def test_follow_up_checks_the_session_cwd_against_the_current_roots(make_server, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    server = make_server()
    first = server.chat("hello", cwd=str(a), session_id="s-roots")
    server.wait(first)
    server.stop()
    narrowed = make_server(SCOUT_ALLOWED_ROOTS=str(b))
    resp = narrowed.post("/chat", json={"message": "again", "session_id": "s-roots"})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "cwd_not_allowed", resp.text


# -- only our own Host, and our own Origin for writes ---------------------------------------

def test_dns_rebinding_and_cross_site_writes_are_refused_by_the_api(make_server, tmp_path):
    server = make_server(SCOUT_CORS_ORIGINS="http://ui.example", SCOUT_ALLOWED_HOSTS="scout.internal")
    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    resp = requests.post(server.url + "/chat", json={"message": "BASH: touch pwned"}, headers=evil, timeout=30)
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "host_not_allowed", resp.text
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert requests.get(server.url + "/tasks", headers={"Host": "evil.example"}, timeout=30).status_code == 403
    # Our Host, a foreign Origin: every write is refused, with a body or without one.
    task_id = server.chat("hello")
    server.wait(task_id)
    foreign = {"Origin": "http://evil.example"}
    for method, path, kw in (("POST", "/chat", {"json": {"message": "x"}}), ("POST", f"/chat/{task_id}/stop", {}),
                             ("POST", "/admin/prune", {}), ("DELETE", f"/tasks/{task_id}", {}),
                             ("POST", f"/chat/{task_id}/approve", {"json": {"decision": "allow"}})):
        resp = requests.request(method, server.url + path, headers=foreign, timeout=30, **kw)
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "origin_not_allowed", (path, resp.text)
    assert [t["task_id"] for t in server.get("/tasks").json()["tasks"]] == [task_id]
    assert not (tmp_path / "pwned").exists()
    # What is ours passes: our own origin, a listed origin, a listed Host, no Origin at all.
    for headers in ({"Origin": server.url}, {"Origin": "http://ui.example"},
                    {"Host": "scout.internal:1234"}, {"Host": f"localhost:{server.port}"}, {}):
        assert requests.post(server.url + "/chat", json={"message": "ok"}, headers=headers,
                             timeout=30).status_code == 202, headers


@pytest.mark.parametrize("host", ["127.evil.example", "localhost.evil.example"])
def test_bind_names_are_resolved_before_the_loopback_check(host):
    with pytest.raises(ConfigError, match="SCOUT_API_TOKEN"):
        check_bind(Settings(host=host))
    check_bind(Settings(host="localhost"))


# -- the UI is a door with a lock ----------------------------------------------------------

@pytest.fixture(scope="module")
def ui_stack(model, tmp_path_factory):
    base = tmp_path_factory.mktemp("attack-ui")
    token = "tok-" + secrets.token_hex(12)
    running = launch(stack_env(model, base, SCOUT_API_TOKEN=token), base, free_port(), free_port())
    running.token = token  # type: ignore[attr-defined]
    yield running
    running.stop(signal.SIGINT)
    kill_tagged(base)


def join(url: str, **headers: str) -> requests.Response:
    return requests.post(url + "/gradio_api/queue/join", json={"data": ["BASH: touch pwned"], "fn_index": 0,
                                                               "session_hash": "attacker"},
                         headers=headers, timeout=30)


def test_ui_refuses_anonymous_rebinding_and_foreign_origins(ui_stack):
    anonymous = join(ui_stack.ui_url)
    assert anonymous.status_code == 401, anonymous.text  # the UI never lends its token to a stranger
    for headers, code in (({"Host": "evil.example", "Origin": "http://evil.example"}, "host_not_allowed"),
                          ({"Origin": "http://evil.example"}, "origin_not_allowed")):
        resp = join(ui_stack.ui_url, **headers)
        assert resp.status_code == 403 and resp.json()["error"]["code"] == code, resp.text
        assert not any(k.lower().startswith("access-control-allow") for k in resp.headers), resp.headers
    read = requests.get(ui_stack.ui_url + "/config", headers={"Origin": "http://evil.example"}, timeout=30)
    assert not any(k.lower().startswith("access-control-allow") for k in read.headers), read.headers
    tasks = requests.get(ui_stack.api_url + "/tasks", headers={"Authorization": f"Bearer {ui_stack.token}"},
                         timeout=30).json()["tasks"]
    assert tasks == []


def test_ui_login_takes_the_token_and_throttles_failures(ui_stack):
    with requests.Session() as ok:
        assert ok.post(ui_stack.ui_url + "/login", data={"username": "me", "password": ui_stack.token},
                       timeout=30).status_code == 200
        assert ok.get(ui_stack.ui_url + "/config", timeout=30).status_code == 200
    codes = [requests.post(ui_stack.ui_url + "/login", data={"username": "me", "password": f"guess{i}"},
                           timeout=30) for i in range(7)]
    assert [r.status_code for r in codes[:5]] == [400] * 5
    assert codes[5].status_code == 429 and int(codes[5].headers["Retry-After"]) > 0
    # Throttled means throttled: the right password waits too.
    assert requests.post(ui_stack.ui_url + "/login", data={"username": "me", "password": ui_stack.token},
                         timeout=30).status_code == 429


# -- streams cannot starve the API ----------------------------------------------------------

def open_stream(server, task_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"GET /chat/{task_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_streams_are_capped_and_a_gone_client_frees_its_stream(make_server):
    server = make_server(SCOUT_MAX_STREAMS="3", SCOUT_THREADS="4")
    task_id = server.chat("BASH: python3 -c 'import time; time.sleep(60)'")
    socks = [open_stream(server, task_id) for _ in range(3)]
    try:
        over = requests.get(server.url + f"/chat/{task_id}/stream", timeout=30)
        assert over.status_code == 503 and over.json()["error"]["code"] == "too_many_streams"
        assert int(over.headers["Retry-After"]) > 0
        started = time.monotonic()
        for _ in range(10):  # ordinary requests still get their reserved threads
            assert server.get("/health").status_code == 200
            assert server.get(f"/chat/{task_id}/status").status_code == 200
        assert time.monotonic() - started < 10
        socks.pop().close()  # a client that is gone, without a word
        wait_for(lambda: server.get("/health").json()["streams"] == 2, timeout=5, what="the stream freed")
        socks.append(open_stream(server, task_id))
        assert server.post(f"/chat/{task_id}/stop").json()["stopped"] is True
    finally:
        for sock in socks:
            sock.close()


def test_big_bodies_are_refused_before_they_are_read(server):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        sock.sendall(b"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000\r\n\r\n" + b"{" * 65536)
        answer = sock.recv(4096)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


# -- files ---------------------------------------------------------------------------------

def test_data_directory_and_database_are_private(server):
    task_id = server.chat("hello")
    server.wait(task_id)
    data = Path(server.db).parent
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [p for p in (Path(server.db), Path(server.db + "-wal"), Path(server.db + "-shm")) if p.exists()]
    assert len(files) >= 2, files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


# -- secrets out of reach ------------------------------------------------------------------

OPEN_MODE = '[modes.Open]\ndescription = "Bash without the OS sandbox"\nallowed_tools = ["Bash"]\nsandbox = "off"\n'

SCAN = """import os, sys
secrets = sys.argv[1:4]
hits = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            data = open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            continue
        hits += [f"environ of {pid}" for s in secrets if s.encode() in data]
for top, _, files in os.walk(sys.argv[4]):
    for name in files:
        try:
            data = open(os.path.join(top, name), "rb").read()
        except OSError:
            continue
        hits += [f"file {name}" for s in secrets if s.encode() in data]
print("scanned", len(os.listdir("/proc")), "HITS:", hits)
"""


def test_a_task_finds_no_secret_in_any_environment_or_the_data_directory(model, tmp_path):
    """run_servers.py started with all three secrets in its environment; a task's command
    (as Scout's user, here root, without the sandbox) reads every /proc/*/environ and every
    file of the data directory, and finds none of them."""
    token, hook, ui_pw = ("t-" + secrets.token_hex(12), "w-" + secrets.token_hex(12), "u-" + secrets.token_hex(12))
    (tmp_path / "scan.py").write_text(SCAN)
    env = stack_env(model, tmp_path, SCOUT_API_TOKEN=token, SCOUT_WEBHOOK_SECRET=hook,
                    SCOUT_UI_AUTH=f"me:{ui_pw}", SCOUT_MODES_FILE=write_modes(tmp_path / "modes.toml", OPEN_MODE))
    Path(tmp_path / "secrets.txt").write_text(f"{token} {hook} {ui_pw}")
    running = launch(env, tmp_path, free_port(), free_port())
    try:
        auth = {"Authorization": f"Bearer {token}"}
        assert requests.get(running.api_url + "/tasks", headers=auth, timeout=30).status_code == 200
        assert requests.post(running.ui_url + "/login", data={"username": "me", "password": ui_pw},
                             timeout=30).status_code == 200
        resp = requests.post(running.api_url + "/chat", headers=auth, timeout=30, json={
            "message": f"BASH: python3 scan.py $(cat secrets.txt) {tmp_path / 'data'}", "mode": "Open"})
        task_id = resp.json()["task_id"]
        doc = wait_for(lambda: (d := requests.get(f"{running.api_url}/chat/{task_id}/status", headers=auth,
                                                  timeout=30).json())["status"] in ("completed", "failed") and d,
                       timeout=120, what="the scan")
        out = "\n".join(e["payload"]["content"] for e in doc["events"] if e["type"] == "tool_result")
        assert doc["status"] == "completed" and "scanned" in out, doc
        assert "HITS: []" in out, out
    finally:
        running.stop(signal.SIGINT)
        kill_tagged(tmp_path)


# -- no escape from a task -----------------------------------------------------------------

POLLER = """import sys, time
while True:
    with open(sys.argv[1], "a") as fh:
        fh.write("alive\\n")
    time.sleep(0.2)
"""


def pollers(marker: str) -> list:
    import psutil

    out = []
    for proc in psutil.process_iter():
        try:
            if marker in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            continue
    return out


@pytest.mark.parametrize("how,method", [("setsid", "auto"), ("double-fork", "auto"),
                                        ("setsid", "subreaper"), ("double-fork", "subreaper")])
def test_a_poller_that_drops_the_tag_ends_with_its_task(make_server, tmp_path, how, method):
    server = make_server(SCOUT_MODES_FILE=write_modes(tmp_path / "modes.toml", OPEN_MODE),
                         SCOUT_CONTAINMENT=method)
    if method == "subreaper":
        assert server.get("/health").json()["containment"]["method"] == "subreaper"
    (tmp_path / "poller.py").write_text(POLLER)
    marker = f"poll-{how}-{secrets.token_hex(4)}.txt"
    start = f"env -u SCOUT_TASK_ID setsid nohup python3 {tmp_path}/poller.py {tmp_path}/{marker} >/dev/null 2>&1"
    # The command waits until the poller has run: otherwise a quick task can end, and take the
    # poller with it, before the poller's Python has even started (seen in a clean-clone run).
    ran = (f"python3 -c \"import os, sys, time; [time.sleep(0.05) for _ in range(200) "
           f"if not os.path.exists(sys.argv[1])]\" {tmp_path}/{marker}")
    command = f"{start} & {ran}" if how == "setsid" else f"( {start} & ) ; {ran}"
    doc = server.wait(server.chat(f"BASH: {command}", mode="Open", cwd=str(tmp_path)))
    assert doc["status"] == "completed", doc
    wait_for(lambda: (tmp_path / marker).exists(), timeout=10, what="the poller ran")
    wait_for(lambda: not pollers(marker), timeout=10, what="the poller gone with its task")
    size = (tmp_path / marker).stat().st_size
    time.sleep(1)
    assert (tmp_path / marker).stat().st_size == size


@pytest.mark.parametrize("method", ["auto", "subreaper"])
def test_stop_ends_a_poller_that_drops_the_tag(make_server, tmp_path, method):
    server = make_server(SCOUT_MODES_FILE=write_modes(tmp_path / "modes.toml", OPEN_MODE),
                         SCOUT_CONTAINMENT=method)
    (tmp_path / "poller.py").write_text(POLLER)
    marker = f"poll-stop-{secrets.token_hex(4)}.txt"
    task_id = server.chat(f"BASH: env -u SCOUT_TASK_ID setsid nohup python3 {tmp_path}/poller.py "
                          f"{tmp_path}/{marker} >/dev/null 2>&1 & python3 -c 'import time; time.sleep(60)'",
                          mode="Open", cwd=str(tmp_path))
    wait_for(lambda: pollers(marker), timeout=60, what="the poller started")
    assert server.post(f"/chat/{task_id}/stop").json()["stopped"] is True
    assert not pollers(marker)  # gone when the stop answers
    in_use = server.get("/health").json()["containment"]["method"]
    assert in_use == ("subreaper" if method == "subreaper" else probe_containment().method)
