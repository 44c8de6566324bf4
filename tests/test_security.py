"""Guarding the door, against real servers: the bearer token, the bind address, cwd
confinement, error answers (status, JSON body, nothing half-created), limits, CORS, the
workers' environment and secrets kept out of logs, events and answers."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from conftest import ROOT, free_port, read_sse

from scout.config import ConfigError, Settings
from scout.server import check_bind, create_app

NO_TASK = "00000000-0000-4000-8000-000000000000"


def assert_error(resp: requests.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A JSON error answer: the status, application/json, exactly {"error": {"code", "message"}}."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["Content-Type"] == "application/json", resp.headers["Content-Type"]
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


OWN = object()


def raw(server, method: str, path: str, token: Any = OWN, **kw: Any) -> requests.Response:
    """A request with exactly the headers given and `Authorization: Bearer <token>` (by default
    the server's own token; None: no Authorization header)."""
    headers = dict(kw.pop("headers", {}))
    token = server.token if token is OWN else token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, server.url + path, headers=headers, timeout=60, **kw)


def snapshot(server) -> tuple[list, list]:
    tasks = server.get("/tasks", params={"limit": 1000}).json()["tasks"]
    sessions = server.get("/sessions", params={"limit": 1000}).json()["sessions"]
    return [t["task_id"] for t in tasks], [s["session_id"] for s in sessions]


# -- binding and the token -------------------------------------------------------------

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_check_bind_refuses_non_loopback_without_token(host):
    with pytest.raises(ConfigError, match="SCOUT_API_TOKEN"):
        check_bind(Settings(host=host))
    check_bind(Settings(host=host, api_token="t"))  # with a token it may


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "localhost", "::1"])
def test_check_bind_allows_loopback(host):
    check_bind(Settings(host=host))


@pytest.mark.parametrize("how", ["env", "flag"])
def test_server_refuses_public_address_without_token(scout_env, tmp_path, how):
    env = {**scout_env, "SCOUT_PORT": "0"}
    args = [sys.executable, "-m", "scout.server"]
    if how == "env":
        env["SCOUT_HOST"] = "0.0.0.0"
    else:
        args += ["--host", "0.0.0.0"]
    proc = subprocess.run(args, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "refusing to listen on 0.0.0.0 without SCOUT_API_TOKEN" in proc.stderr
    assert "Scout API on" not in proc.stdout


def test_server_on_public_address_with_token(make_server):
    token = secrets.token_urlsafe(16)
    server = make_server(SCOUT_HOST="0.0.0.0", SCOUT_API_TOKEN=token)
    assert raw(server, "GET", "/tasks", token=None).status_code == 401
    assert raw(server, "GET", "/tasks").status_code == 200


PROTECTED = [
    ("POST", "/chat", {"json": {"message": "hi"}}),
    ("GET", f"/chat/{NO_TASK}/status", {}),
    ("GET", f"/chat/{NO_TASK}/stream", {}),
    ("POST", f"/chat/{NO_TASK}/stop", {}),
    ("POST", f"/chat/{NO_TASK}/approve", {"json": {"decision": "allow"}}),
    ("GET", "/tasks", {}),
    ("DELETE", f"/tasks/{NO_TASK}", {}),
    ("GET", "/sessions", {}),
    ("GET", "/sessions/s1", {}),
    ("DELETE", "/sessions/s1", {}),
    ("GET", "/modes", {}),
    ("GET", "/config", {}),
    ("GET", "/no/such/path", {}),
    ("PUT", "/chat", {}),
]


def test_token_required_accepted_and_wrong(make_server):
    token = "tok-" + secrets.token_hex(16)
    server = make_server(SCOUT_API_TOKEN=token)
    before = snapshot(server)
    for method, path, kw in PROTECTED:
        for bad in (None, "wrong", token + "x", token[:-1], ""):
            resp = raw(server, method, path, token=bad, **kw)
            body = assert_error(resp, 401, "unauthorized")
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert token not in json.dumps(body)
        for header in (f"Basic {token}", token, f"Bearer{token}", f"Token {token}"):
            assert_error(raw(server, method, path, token=None, headers={"Authorization": header}, **kw), 401)
    assert snapshot(server) == before  # POST /chat without the token created nothing
    # The right token opens every door (the scheme is case-insensitive).
    assert raw(server, "GET", "/tasks").status_code == 200
    assert raw(server, "GET", "/modes", token=None,
               headers={"Authorization": f"bearer {token}"}).status_code == 200
    assert_error(raw(server, "GET", f"/chat/{NO_TASK}/status"), 404, "not_found")
    task_id = raw(server, "POST", "/chat", json={"message": "with the token"}).json()["task_id"]
    assert server.wait(task_id)["status"] == "completed"
    # Public: /health and /openapi.json.
    for path in ("/health", "/openapi.json"):
        assert raw(server, "GET", path, token=None).status_code == 200
        assert raw(server, "GET", path, token="wrong").status_code == 200


def test_token_comparison_is_constant_time(tmp_path, monkeypatch):
    """The check goes through hmac.compare_digest with the whole token."""
    import scout.server as server_mod
    calls = []
    real = server_mod.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(server_mod.hmac, "compare_digest", spy)
    app = create_app(Settings(db=str(tmp_path / "s.db"), api_token="sekrit", allowed_roots=[str(tmp_path)]),
                     start=False)
    client = app.test_client()
    assert client.get("/tasks", headers={"Authorization": "Bearer guess"}).status_code == 401
    assert client.get("/tasks", headers={"Authorization": "Bearer sekrit"}).status_code == 200
    assert calls == [(b"guess", b"sekrit"), (b"sekrit", b"sekrit")]
    app.extensions["scout"].store.close()


# -- errors: status, JSON body, nothing created ----------------------------------------

def test_every_bad_request_gets_its_status_and_a_json_body(make_server, tmp_path):
    server = make_server(SCOUT_MAX_MESSAGE_BYTES="1000")
    done = server.chat("a finished task")
    server.wait(done)
    before = snapshot(server)
    chat = lambda **kw: raw(server, "POST", "/chat", **kw)  # noqa: E731
    as_json = {"Content-Type": "application/json"}
    cases: list[tuple[requests.Response, int, str | None]] = [
        # malformed JSON
        (chat(data=b"{not json", headers=as_json), 400, "invalid_json"),
        (chat(data=b"", headers=as_json), 400, "invalid_json"),
        (chat(data=b'{"message": "hi"', headers=as_json), 400, "invalid_json"),
        (chat(data=b'{"message": NaN}', headers=as_json), 400, "invalid_json"),
        (chat(data=b'{"message": "\xff\xfe"}', headers=as_json), 400, "invalid_json"),
        (chat(data=b"[" * 50_000, headers=as_json), 400, "invalid_json"),
        (chat(data=b"null", headers=as_json), 400, "invalid_body"),
        (chat(json=["message", "hi"]), 400, "invalid_body"),
        # wrong content type
        (chat(data=b'{"message": "hi"}', headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
        (chat(data=b'{"message": "hi"}'), 415, "unsupported_media_type"),
        (chat(data={"message": "hi"}), 415, "unsupported_media_type"),
        # missing, empty, wrongly typed, unknown fields
        (chat(json={}), 400, "missing_field"),
        (chat(json={"message": None}), 400, "missing_field"),
        (chat(json={"message": ""}), 400, "invalid_field"),
        (chat(json={"message": "  \n"}), 400, "invalid_field"),
        (chat(json={"message": 42}), 400, "invalid_field"),
        (chat(json={"message": "hi", "max_turns": "3"}), 400, "invalid_field"),
        (chat(json={"message": "hi", "max_turns": 0}), 400, "invalid_field"),
        (chat(json={"message": "hi", "stream_deltas": "no"}), 400, "invalid_field"),
        (chat(json={"message": "hi", "allowed_tools": "Read"}), 400, "invalid_field"),
        (chat(json={"message": "hi", "max_budget_usd": -1}), 400, "invalid_field"),
        (chat(data=b'{"message": "hi", "max_budget_usd": 1' + b"0" * 400 + b"}", headers=as_json),
         400, "invalid_field"),
        (chat(json={"message": "hi", "session_id": "../etc"}), 400, "invalid_field"),
        (chat(json={"message": "hi", "session_id": "ok\n"}), 400, "invalid_field"),
        (chat(json={"message": "hi", "model": "x; rm -rf /"}), 400, "invalid_field"),
        (chat(json={"message": "hi", "on_busy": "never"}), 400, "invalid_field"),
        (chat(json={"message": "a\x00b"}), 400, "invalid_field"),
        (chat(data=b'{"message": "\\ud800"}', headers=as_json), 400, "invalid_field"),
        (chat(json={"message": "hi", "prompt": "typo"}), 400, "unknown_field"),
        (chat(json={"message": "hi", "mode": "NoSuchMode"}), 400, "unknown_mode"),
        (chat(json={"message": "hi", "cwd": "relative"}), 400, "invalid_cwd"),
        (chat(json={"message": "hi", "cwd": "/"}), 403, "cwd_not_allowed"),
        # over the size limit: the message (in bytes), and the whole body far over it
        (chat(json={"message": "x" * 1001}), 413, "message_too_large"),
        (chat(json={"message": "é" * 501}), 413, "message_too_large"),
        (chat(data=b'{"message": "' + b"x" * 3_000_000 + b'"}', headers=as_json), 413, None),
        (raw(server, "POST", f"/chat/{done}/approve", data=b'{"decision": "' + b"x" * 3_000_000 + b'"}',
             headers=as_json), 413, None),
        # unknown task, session or path; ids are checked
        (raw(server, "GET", f"/chat/{NO_TASK}/status"), 404, "not_found"),
        (raw(server, "GET", f"/chat/{NO_TASK.upper()}/status"), 404, "not_found"),
        (raw(server, "GET", f"/chat/{done}%0A/status"), 404, "not_found"),
        (raw(server, "GET", "/chat/..%2F..%2Fetc/status"), 404, "not_found"),
        (raw(server, "GET", "/chat/' OR 1=1 --/status"), 404, "not_found"),
        (raw(server, "GET", f"/chat/{NO_TASK}/stream"), 404, "not_found"),
        (raw(server, "POST", f"/chat/{NO_TASK}/stop"), 404, "not_found"),
        (raw(server, "POST", f"/chat/{NO_TASK}/approve", json={"decision": "allow"}), 404, "not_found"),
        (raw(server, "DELETE", f"/tasks/{NO_TASK}"), 404, "not_found"),
        (raw(server, "GET", "/sessions/no-such-session"), 404, "not_found"),
        (raw(server, "GET", "/sessions/bad%0Aid"), 404, "not_found"),
        (raw(server, "DELETE", "/sessions/no-such-session"), 404, "not_found"),
        (raw(server, "GET", "/no/such/path"), 404, "not_found"),
        (raw(server, "GET", "/sessions/a//transcript", allow_redirects=False), 404, "not_found"),  # no 308 page
        (raw(server, "GET", f"/chat//{NO_TASK}/status", allow_redirects=False), 404, "not_found"),
        (raw(server, "GET", "/tasks/", allow_redirects=False), 404, "not_found"),
        # bad query parameters and approvals
        (raw(server, "GET", "/tasks?limit=abc"), 400, "invalid_parameter"),
        (raw(server, "GET", "/tasks?limit=0"), 400, "invalid_parameter"),
        (raw(server, "GET", "/tasks?limit=5_0"), 400, "invalid_parameter"),
        (raw(server, "GET", "/tasks?cursor=-1"), 400, "invalid_parameter"),
        (raw(server, "GET", "/tasks?status=done"), 400, "invalid_parameter"),
        (raw(server, "GET", "/sessions?limit=100000"), 400, "invalid_parameter"),
        (raw(server, "GET", f"/chat/{done}/stream", headers={"Last-Event-ID": "x"}), 400, "invalid_parameter"),
        (raw(server, "GET", f"/chat/{done}/stream?last_event_id=-5"), 400, "invalid_parameter"),
        (raw(server, "POST", f"/chat/{done}/approve", json={"decision": "maybe"}), 400, "invalid_field"),
        (raw(server, "POST", f"/chat/{done}/approve", json={"decision": "allow", "x": 1}), 400, "unknown_field"),
        (raw(server, "POST", f"/chat/{done}/approve", data=b"allow"), 415, "unsupported_media_type"),
        (raw(server, "POST", f"/chat/{done}/approve", json={"decision": "allow"}), 409, "task_finished"),
    ]
    for i, (resp, status, code) in enumerate(cases):
        try:
            assert_error(resp, status, code)
        except AssertionError as exc:
            raise AssertionError(f"case {i}: {resp.request.method} {resp.request.url}: {exc}") from None
    assert snapshot(server) == before, "a rejected request created a task or a session"
    assert "Traceback" not in server.log() and "unexpected error" not in server.log()


@pytest.mark.parametrize("method,path,allowed", [
    ("GET", "/chat", {"POST"}),
    ("PUT", "/chat", {"POST"}),
    ("DELETE", f"/chat/{NO_TASK}/status", {"GET", "HEAD"}),
    ("POST", "/tasks", {"GET", "HEAD"}),
    ("PATCH", "/health", {"GET", "HEAD"}),
    ("GET", f"/chat/{NO_TASK}/stop", {"POST"}),
    ("POST", "/sessions/s1", {"GET", "HEAD", "DELETE"}),
    ("POST", "/openapi.json", {"GET", "HEAD"}),
])
def test_wrong_method_is_405_with_allow(server, method, path, allowed):
    resp = raw(server, method, path)
    assert_error(resp, 405, "method_not_allowed")
    assert {m.strip() for m in resp.headers["Allow"].split(",")} - {"OPTIONS"} == allowed


def test_too_many_pending_is_429_with_retry_after(make_server):
    server = make_server(SCOUT_MAX_WORKERS="1", SCOUT_MAX_PENDING="1")
    running = server.chat("SLOW: 300 0.1")
    server.wait(running, statuses=("running",))
    waiting = server.chat("waits its turn")
    before = snapshot(server)
    for _ in range(3):
        resp = raw(server, "POST", "/chat", json={"message": "one too many"})
        assert_error(resp, 429, "too_many_pending")
        assert int(resp.headers["Retry-After"]) > 0
    assert snapshot(server) == before
    assert server.status(waiting)["status"] == "pending"
    server.post(f"/chat/{waiting}/stop")
    accepted = server.chat("room again")  # the cancelled task no longer counts
    for task_id in (running, accepted):
        server.post(f"/chat/{task_id}/stop")


def test_busy_session_with_on_busy_reject_is_409(make_server):
    server = make_server(SCOUT_MAX_WORKERS="1")
    first = server.chat("SLOW: 300 0.1", session_id="busy-one")
    server.wait(first, statuses=("running",))
    before = snapshot(server)
    resp = raw(server, "POST", "/chat", json={"message": "me too", "session_id": "busy-one", "on_busy": "reject"})
    assert first in assert_error(resp, 409, "session_busy")["error"]["message"]
    assert snapshot(server) == before
    server.post(f"/chat/{first}/stop")


def test_sql_is_parameterised(server):
    """Quotes and SQL in every place a client can put text are data, never SQL."""
    evil = "x' OR '1'='1'; DROP TABLE tasks; --"
    task_id = server.chat(evil, session_id="s-1")
    server.wait(task_id)
    assert server.status(task_id)["message"] == evil
    assert server.get("/tasks", params={"session_id": "' OR '1'='1"}).json()["tasks"] == []
    assert server.get("/tasks", params={"session_id": "s-1' --"}).json()["tasks"] == []
    assert [t["task_id"] for t in server.get("/tasks", params={"session_id": "s-1"}).json()["tasks"]] == [task_id]
    assert_error(server.get("/tasks", params={"status": "completed' OR '1'='1"}), 400)
    assert_error(server.get("/sessions/s-1'--"), 404)
    approve = server.post(f"/chat/{task_id}/approve", json={"decision": "deny", "reason": evil,
                                                            "tool_use_id": "' OR 1=1 --"})
    assert_error(approve, 409)
    assert len(server.get("/tasks").json()["tasks"]) == 1


# -- cwd -----------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "file.txt").write_text("x")
    (root / "link-out").symlink_to(outside)
    (root / "link-in").symlink_to(root / "sub")
    return {"root": root, "outside": outside}


@pytest.mark.parametrize("cwd,status,code,words", [
    ("{root}/..", 403, "cwd_not_allowed", "outside the allowed roots"),
    ("{root}/sub/../../outside", 403, "cwd_not_allowed", "outside the allowed roots"),
    ("{root}/link-out", 403, "cwd_not_allowed", "resolved: {outside}"),
    ("{root}/link-out/../outside", 403, "cwd_not_allowed", "outside"),
    ("{root}/file.txt", 400, "invalid_cwd", "not a directory"),
    ("{root}/missing", 400, "invalid_cwd", "does not exist"),
    ("{outside}/missing", 403, "cwd_not_allowed", None),
    ("sub", 400, "invalid_cwd", "absolute"),
    ("./sub", 400, "invalid_cwd", "absolute"),
    ("", 400, "invalid_cwd", None),
    ("/etc", 403, "cwd_not_allowed", None),
])
def test_cwd_escapes_are_refused(make_server, tree, cwd, status, code, words):
    server = make_server(SCOUT_ALLOWED_ROOTS=str(tree["root"]))
    cwd = cwd.format(**tree)
    resp = raw(server, "POST", "/chat", json={"message": "hi", "cwd": cwd})
    body = assert_error(resp, status, code)
    if words:
        assert words.format(**tree) in body["error"]["message"]
    assert server.get("/tasks").json()["tasks"] == []


def test_cwd_inside_the_root_is_resolved(make_server, tree):
    server = make_server(SCOUT_ALLOWED_ROOTS=str(tree["root"]))
    for given, real in ((tree["root"] / "link-in", tree["root"] / "sub"),
                        (tree["root"] / "sub" / ".." / "sub", tree["root"] / "sub"),
                        (tree["root"], tree["root"])):
        task_id = server.chat("BASH: pwd", cwd=str(given))
        doc = server.wait(task_id)
        assert doc["status"] == "completed" and doc["cwd"] == str(real), (doc["error"], doc["events"][-3:])
        result = next(e for e in doc["events"] if e["type"] == "tool_result")
        assert result["payload"]["content"].strip() == str(real)


def test_default_allowed_root_is_the_start_directory(make_server, tmp_path):
    server = make_server(start=False)
    del server.env["SCOUT_ALLOWED_ROOTS"]
    server.start()  # in tmp_path
    (tmp_path / "inside").mkdir()
    assert raw(server, "POST", "/chat", json={"message": "hi", "cwd": str(tmp_path / "inside")}).status_code == 202
    assert_error(raw(server, "POST", "/chat", json={"message": "hi", "cwd": str(tmp_path.parent)}),
                 403, "cwd_not_allowed")
    doc = server.wait(server.chat("no cwd given"))
    assert doc["cwd"] == str(tmp_path.resolve())


# -- CORS ----------------------------------------------------------------------------

def test_cors_is_off_by_default(server):
    for resp in (raw(server, "GET", "/health", headers={"Origin": "http://evil.example"}),
                 raw(server, "OPTIONS", "/chat", headers={"Origin": "http://evil.example",
                                                          "Access-Control-Request-Method": "POST"})):
        assert not any(h.lower().startswith("access-control-") for h in resp.headers)


def test_cors_allow_list_and_preflight(make_server):
    token = secrets.token_hex(8)
    server = make_server(SCOUT_CORS_ORIGINS="http://ui.example, http://localhost:3000", SCOUT_API_TOKEN=token)
    ok = {"Origin": "http://ui.example"}
    resp = raw(server, "GET", "/tasks", headers=ok)
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "http://ui.example"
    assert "Origin" in resp.headers["Vary"]
    # A preflight carries no token: answered 204 for an allowed origin, with the CORS headers.
    pre = raw(server, "OPTIONS", "/chat", token=None, headers={
        **ok, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 204 and pre.content == b""
    assert pre.headers["Access-Control-Allow-Origin"] == "http://ui.example"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert {"authorization", "content-type"} <= {h.strip().lower() for h in
                                                 pre.headers["Access-Control-Allow-Headers"].split(",")}
    pre2 = raw(server, "OPTIONS", f"/chat/{NO_TASK}/stream", token=None,
               headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"})
    assert pre2.status_code == 204 and pre2.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    # Errors carry the headers too, so a browser can read them.
    err = raw(server, "GET", "/tasks", token=None, headers=ok)
    assert err.status_code == 401 and err.headers["Access-Control-Allow-Origin"] == "http://ui.example"
    # Other origins get nothing.
    for origin in ("http://evil.example", "http://ui.example.evil.com", "null"):
        bad = raw(server, "OPTIONS", "/chat", token=None, headers={"Origin": origin,
                                                                   "Access-Control-Request-Method": "POST"})
        assert bad.status_code != 204
        assert "Access-Control-Allow-Origin" not in bad.headers
        assert "Access-Control-Allow-Origin" not in raw(server, "GET", "/tasks", headers={"Origin": origin}).headers


# -- what the agent can see ----------------------------------------------------------

def bash_output(server, command: str) -> str:
    doc = server.wait(server.chat(f"BASH: {command}"))
    assert doc["status"] == "completed", doc
    return next(e for e in doc["events"] if e["type"] == "tool_result")["payload"]["content"]


def test_agent_bash_does_not_see_the_token(make_server):
    token = "scout-token-" + secrets.token_hex(16)
    server = make_server(SCOUT_API_TOKEN=token, SCOUT_WORKER_ENV="EXTRA_FOR_AGENT,SCOUT_API_TOKEN",
                         EXTRA_FOR_AGENT="visible", UNLISTED_SECRET="hidden-" + token[-8:])
    env = bash_output(server, "env")
    names = {line.split("=", 1)[0] for line in env.splitlines() if "=" in line}
    assert "ANTHROPIC_BASE_URL" in names
    assert "EXTRA_FOR_AGENT=visible" in env  # SCOUT_WORKER_ENV adds names...
    assert "SCOUT_API_TOKEN" not in env and token not in env  # ...but never the token
    assert "UNLISTED_SECRET" not in names
    assert {n for n in names if n.startswith("SCOUT_")} <= {"SCOUT_TASK_ID"}  # the process tag only


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def python_for_nobody() -> str:
    """This Python, or one of the same version that the user nobody may run (a venv's
    interpreter may live under root's 0700 home)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/{version}",
                f"/usr/local/bin/{version}"):
        check = subprocess.run([*NOBODY, exe, "-c", "import subprocess, sys; print(sys.version_info[:2]); "
                                "subprocess.run([sys.executable, '-c', ''], check=True)"],  # as the zygote is
                               capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.strip() == str(tuple(sys.version_info[:2])):
            return exe
    pytest.fail(f"no {version} that the user nobody can run")


def test_server_hides_its_environ_from_its_own_user(scout_env):
    """Run as an ordinary user (nobody), the server is non-dumpable: its /proc/<pid>/environ,
    which holds SCOUT_API_TOKEN, belongs to root, and another process of the same user (what
    the agent's Bash tool is) cannot read it."""
    token = "proc-token-" + secrets.token_hex(12)
    python = python_for_nobody()
    work = Path(tempfile.mkdtemp(prefix="scout-nobody-"))  # not under pytest's 0700 tmp dirs
    work.chmod(0o777)
    port = free_port()
    site_packages = [p for p in sys.path if p.endswith("site-packages")]
    env = {**scout_env, "SCOUT_DB": str(work / "scout.db"), "SCOUT_ALLOWED_ROOTS": str(work),
           "HOME": str(work), "SCOUT_API_TOKEN": token, "SCOUT_PORT": str(port),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *site_packages]), "SCOUT_WORKER_ENV": "PYTHONPATH"}
    with open(work / "server.log", "wb") as out:
        proc = subprocess.Popen([*NOBODY, python, "-m", "scout.server"], env=env, cwd=str(work),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            assert proc.poll() is None and time.time() < deadline, (work / "server.log").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.05)
        assert psutil.Process(proc.pid).uids().real == 65534  # it is nobody's process...
        assert os.stat(f"/proc/{proc.pid}/environ").st_uid == 0  # ...but its environ is root's
        read = subprocess.run([*NOBODY, "cat", f"/proc/{proc.pid}/environ"], capture_output=True)
        assert read.returncode != 0 and token.encode() not in read.stdout
        assert b"ermission denied" in read.stderr
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def test_make_undumpable_hides_environ_from_the_same_user(tmp_path):
    """As an ordinary user (nobody), another process of that user cannot read the environ
    of a process that called make_undumpable(); without it, it can."""
    results = {}
    for hide in (False, True):
        code = ("import os, sys, time; sys.path.insert(0, %r)\n"
                "from scout.serverproc import make_undumpable\n"
                "ok = make_undumpable() if %r else True\n"
                "print(os.getpid(), ok, flush=True); time.sleep(30)\n") % (str(ROOT), hide)
        proc = subprocess.Popen([*NOBODY, python_for_nobody(), "-c", code], stdout=subprocess.PIPE, text=True,
                                env={"PATH": os.environ["PATH"], "HIDDEN_VALUE": "s3cret",
                                     "PYTHONPATH": os.pathsep.join(p for p in sys.path if p.endswith("site-packages"))},
                                cwd="/")
        try:
            pid, ok = proc.stdout.readline().split()
            assert ok == "True"
            read = subprocess.run([*NOBODY, "cat", f"/proc/{pid}/environ"], capture_output=True)
            results[hide] = b"HIDDEN_VALUE=s3cret" in read.stdout
        finally:
            proc.kill()
            proc.wait()
    assert results == {False: True, True: False}


# -- secrets -------------------------------------------------------------------------

def test_secrets_never_leak(make_server, tmp_path):
    token = "tok-" + secrets.token_hex(20)
    api_key = "sk-ant-test-" + secrets.token_hex(20)
    server = make_server(SCOUT_API_TOKEN=token, ANTHROPIC_API_KEY=api_key, SCOUT_LOG_LEVEL="DEBUG",
                         SCOUT_MAX_MESSAGE_BYTES="1000")
    seen: list[str] = []

    def hit(method: str, path: str, **kw: Any) -> requests.Response:
        resp = raw(server, method, path, **kw)
        seen.append(f"{resp.status_code} {json.dumps(dict(resp.headers))} {resp.text}")
        return resp

    ok = hit("POST", "/chat", json={"message": "hello there"}).json()["task_id"]
    failing = hit("POST", "/chat", json={"message": "ERROR: 401"}).json()["task_id"]
    for task_id in (ok, failing):
        server.wait(task_id)
    with raw(server, "GET", f"/chat/{ok}/stream", stream=True) as stream:
        seen.append(json.dumps(list(read_sse(stream))))
    # Error paths: no token, wrong tokens (one that starts like the real one), bad bodies.
    for bad in (None, "nope", token[:10], token + "0"):
        hit("GET", "/tasks", token=bad)
        hit("POST", "/chat", token=bad, json={"message": "hi"})
    hit("POST", "/chat", data=b"{bad", headers={"Content-Type": "application/json"})
    hit("POST", "/chat", json={"message": "x" * 2000})
    hit("POST", "/chat", json={"message": "hi", "cwd": "/"})
    hit("POST", "/chat", json={"message": "hi", "nope": 1})
    hit("GET", f"/chat/{NO_TASK}/status")
    hit("PUT", "/health")
    for path in ("/health", "/openapi.json", "/modes", "/tasks", "/sessions", f"/chat/{ok}/status",
                 f"/chat/{failing}/status"):
        hit("GET", path)
    assert server.status(failing)["status"] == "failed"
    assert server.stop() == 0
    log = server.log()
    assert "Scout API on" in log and " 401 " in log  # the log is there and has the requests
    places = {"server log": log, "answers": "\n".join(seen)}
    data_dir = Path(server.db).parent
    for path in data_dir.rglob("*"):  # the database, its WAL, the workers' logs
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("latin-1")
    assert str(data_dir / "logs" / f"{ok}.log") in places  # the worker logs were searched too
    for where, text in places.items():
        for name, secret in (("SCOUT_API_TOKEN", token), ("ANTHROPIC_API_KEY", api_key)):
            assert secret not in text, f"{name} leaked into {where}"
            assert secret[-16:] not in text, f"part of {name} leaked into {where}"
