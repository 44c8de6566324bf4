"""The `scout` command line and the Markdown transcripts, against real Scout servers.

The CLI runs as a subprocess (`python -m scout.cli`) with its cwd inside tmp_path; the
server behind it is a real one running real tasks through Claude Code and the scripted
model (see conftest.py).
"""
from __future__ import annotations

import copy
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, ScoutServer, free_port

from scout import cli
from scout.transcript import fence, session_markdown, task_markdown

PY = sys.executable
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# -- helpers ---------------------------------------------------------------------------

def cli_env(server: ScoutServer | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONIOENCODING"] = "utf-8"
    if server is not None:
        env["SCOUT_URL"] = server.url
        if server.token:
            env["SCOUT_API_TOKEN"] = server.token
    env.update(extra)
    return env


def run_cli(*args: str, server: ScoutServer | None = None, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 90, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "scout.cli", *args], cwd=str(cwd), env=env or cli_env(server),
                          input=stdin, capture_output=True, text=True, encoding="utf-8", timeout=timeout,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A working directory for tasks (under the server's allowed root) with a known file."""
    d = tmp_path / "project"
    d.mkdir()
    (d / "scout_known_file_7.txt").write_text("known\n")
    return d


def read_until(proc: subprocess.Popen, needle: str, timeout: float = 60) -> str:
    """Read the process's stdout (bytes, unbuffered) until `needle` shows up."""
    buf = b""
    fd = proc.stdout.fileno()
    deadline = time.time() + timeout
    while needle.encode() not in buf:
        if time.time() > deadline:
            raise AssertionError(f"{needle!r} not seen in {timeout}s; got:\n{buf.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"stdout closed before {needle!r}; got:\n{buf.decode(errors='replace')}")
            buf += chunk
    return buf.decode(errors="replace")


def live_ctrl_c() -> None:
    """In a child before exec: a shell without job control (CI, `cmd &`) starts background commands
    with SIGINT ignored, and an ignored signal stays ignored across exec; a user's Ctrl-C is live."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_in_pty(args: list[str], env: dict[str, str], cwd: Path, react: Any, timeout: float = 90) -> tuple[str, int]:
    """Run the CLI with a pseudo-terminal as stdin/stdout; react(buffer, write) is called as output arrives."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            live_ctrl_c()
            os.chdir(str(cwd))
            os.execve(PY, [PY, "-m", "scout.cli", *args], env)
        finally:
            os._exit(127)
    buf = b""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                buf += chunk
                react(buf.decode(errors="replace"), lambda data: os.write(fd, data))
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return buf.decode(errors="replace"), os.waitstatus_to_exitcode(status)


# -- entry point, help, dispatch ------------------------------------------------------

def test_help_for_every_subcommand(tmp_path: Path) -> None:
    top = run_cli("--help", cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    commands = ["ask", "tasks", "show", "tail", "stop", "approve", "prune", "sessions", "session", "modes",
                "health", "mcp", "changes", "merge", "discard"]
    for name in commands + ["up", "serve", "ui", "backup"]:
        assert re.search(rf"^\s+{name}\s", top.stdout, re.M), f"{name} missing from scout --help"
    for name in commands:
        res = run_cli(name, "--help", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"usage: scout {name}"), res.stdout
        assert "--url" in res.stdout and "--json" in res.stdout
    # `scout serve --help` is the server's own help, passed through.
    serve = run_cli("serve", "--help", cwd=tmp_path)
    assert serve.returncode == 0 and "usage: python -m scout.server" in serve.stdout, serve.stdout + serve.stderr
    backup = run_cli("backup", "--help", cwd=tmp_path)
    assert backup.returncode == 0 and backup.stdout.startswith("usage: scout backup") and "Restore" in backup.stdout
    # No command: help on stderr, exit 2.
    bare = run_cli(cwd=tmp_path)
    assert bare.returncode == 2 and "usage: scout" in bare.stderr


def test_help_does_not_import_requests_or_the_server(tmp_path: Path) -> None:
    code = ("import sys, scout.cli as c\n"
            "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('requests', 'flask', 'gradio', 'scout.server',"
            " 'claude_agent_sdk', 'mcp') if m in sys.modules))")
    res = subprocess.run([PY, "-c", code], cwd=str(tmp_path), env=cli_env(), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "LOADED []"


def test_up_serve_ui_call_their_modules_main_with_the_rest_of_the_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []
    for command, module_name in (("up", "scout.launcher"), ("serve", "scout.server"), ("ui", "scout.ui")):
        fake = types.ModuleType(module_name)
        fake.main = lambda argv, _c=command: calls.append((_c, list(argv))) or 7  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module_name, fake)
    assert cli.main(["up", "--port", "9001", "--ui-port", "9002"]) == 7
    assert cli.main(["--url", "http://x", "serve", "--help"]) == 7
    assert cli.main(["ui"]) == 7
    assert calls == [("up", ["--port", "9001", "--ui-port", "9002"]), ("serve", ["--help"]), ("ui", [])]


def test_missing_launcher_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "scout.launcher", None)  # import raises ImportError
    assert cli.main(["up"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scout: `scout up` needs scout.launcher"), err


def test_default_url_comes_from_the_environment() -> None:
    assert cli.default_url({}) == "http://127.0.0.1:8000"
    assert cli.default_url({"SCOUT_PORT": "9100"}) == "http://127.0.0.1:9100"
    assert cli.default_url({"SCOUT_HOST": "0.0.0.0", "SCOUT_PORT": "9100"}) == "http://127.0.0.1:9100"
    assert cli.default_url({"SCOUT_HOST": "::1"}) == "http://[::1]:8000"
    assert cli.default_url({"SCOUT_URL": "https://scout.example", "SCOUT_PORT": "1"}) == "https://scout.example"
    assert cli.default_url({"SCOUT_API_URL": "http://api:1", "SCOUT_PORT": "2"}) == "http://api:1"
    assert cli.default_url({"SCOUT_URL": "http://a:1", "SCOUT_API_URL": "http://b:2"}) == "http://a:1"
    assert cli.normalize_url("localhost:9000/") == "http://localhost:9000"


# -- ask ---------------------------------------------------------------------------------

def test_ask_follows_a_tool_using_task(server: ScoutServer, work: Path) -> None:
    res = run_cli("ask", "BASH: ls", "--cwd", ".", server=server, cwd=work)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "\x1b" not in out  # not a terminal: no colours, no spinner
    tool = out.index("⚙ Bash: ls\n")
    listing = out.index("\n  scout_known_file_7.txt\n")  # the real result, indented
    answer = out.index("TOOL RESULT: scout_known_file_7.txt\n")
    final = out.index("✓ completed · ")
    assert tool < listing < answer < final
    assert re.search(r"✓ completed · \d+\.\d+s · \$\d+\.\d{4} · 2 turns", out), out
    task_id = re.search(r"▶ task ([0-9a-f-]{36})", out).group(1)
    doc = server.status(task_id)
    assert doc["status"] == "completed" and doc["cwd"] == str(work)  # --cwd . was made absolute


def test_ask_truncates_long_tool_results_keeping_indentation(server: ScoutServer, work: Path) -> None:
    (work / "code.py").write_text("def f():\n    return 1\n" + "".join(f"line {i}\n" for i in range(8))
                                  + "x" * 500 + "\n")
    res = run_cli("ask", "BASH: cat code.py", "--cwd", ".", server=server, cwd=work)
    assert res.returncode == 0, res.stderr
    step = res.stdout.split("⚙ Bash: cat code.py\n", 1)[1].split("TOOL RESULT", 1)[0]
    assert step == ("  def f():\n      return 1\n  line 0\n  line 1\n  line 2\n  line 3\n"
                    "  … 5 more lines\n"), step
    assert "x" * 500 in res.stdout  # the assistant's own text is never cut


def test_ask_failing_task_exits_1(server: ScoutServer, work: Path) -> None:
    res = run_cli("ask", "ERROR: 401", server=server, cwd=work)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "✗ failed · " in res.stdout
    assert "API error 401" in res.stdout
    assert "✗ error: authentication_failed" in res.stdout


def test_ask_json_prints_the_final_status_document(server: ScoutServer, work: Path) -> None:
    res = run_cli("ask", "hello there", "--json", server=server, cwd=work)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "completed"
    assert doc["result"]["text"] == "ECHO: hello there"
    assert doc["events"][-1]["payload"] == {"status": "completed"}
    assert doc == server.status(doc["task_id"])


def test_ask_no_follow_then_tail_and_json_tail(server: ScoutServer, work: Path) -> None:
    res = run_cli("--json", "ask", "SLOW: 6 0.1", "--no-follow", server=server, cwd=work)
    assert res.returncode == 0, res.stderr
    started = json.loads(res.stdout)
    assert started["status"] == "pending" and set(started) == {"task_id", "status", "session_id"}
    task_id = started["task_id"]
    tail = run_cli("tail", task_id[:8], server=server, cwd=work)  # follows it live to the end
    assert tail.returncode == 0, tail.stderr
    assert "word0 word1 word2 word3 word4 word5" in tail.stdout
    assert "✓ completed" in tail.stdout
    nd = run_cli("tail", task_id, "--json", server=server, cwd=work)
    lines = [json.loads(line) for line in nd.stdout.splitlines()]
    assert lines[-1] == {"event": "end", "id": None, "data": {"task_id": task_id, "status": "completed"}}
    seqs = [line["data"]["seq"] for line in lines[:-1]]
    assert seqs == list(range(1, len(seqs) + 1))


def test_ask_reads_the_message_from_stdin_and_continues_a_session(server: ScoutServer, work: Path) -> None:
    first = run_cli("--json", "ask", "-", server=server, cwd=work, stdin="remember the word PELICAN\n")
    doc = json.loads(first.stdout)
    assert doc["result"]["text"].startswith("ECHO: remember the word PELICAN")
    second = run_cli("ask", "ECHO-HISTORY", "--session", doc["session_id"][:8], server=server, cwd=work)
    assert second.returncode == 0, second.stderr
    assert "remember the word PELICAN" in second.stdout
    assert f"session {doc['session_id']}" in second.stdout


def test_ask_api_error_exits_2_with_the_message(server: ScoutServer, work: Path) -> None:
    res = run_cli("ask", "hi", "--mode", "NoSuchMode", server=server, cwd=work)
    assert res.returncode == 2
    assert res.stderr.strip() == "scout: unknown mode 'NoSuchMode'; valid modes: Scout, Plan, Code"
    assert res.stdout == ""
    bad_cwd = run_cli("ask", "hi", "--cwd", "/", server=server, cwd=work)
    assert bad_cwd.returncode == 2 and bad_cwd.stderr.startswith("scout: "), bad_cwd.stderr


def test_unreachable_server_gives_a_hint(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["tasks"], ["ask", "hello"], ["tail", "2b1e1b9e-0b7e-4d6b-9a51-0d9a3c8f6d11"]):
        res = run_cli("--url", url, *args, cwd=tmp_path, timeout=30)
        assert res.returncode == 2, res.stderr
        assert f"cannot reach the Scout API at {url}" in res.stderr
        assert "scout serve" in res.stderr and "--url" in res.stderr
        assert "Traceback" not in res.stderr


def test_url_from_scout_port_and_token_from_env(make_server: Any, work: Path) -> None:
    server = make_server(SCOUT_API_TOKEN="s3cret-token")
    env = cli_env(SCOUT_PORT=str(server.port))  # no SCOUT_URL, no token
    denied = run_cli("tasks", env=env, cwd=work)
    assert denied.returncode == 2
    assert "scout: missing or wrong bearer token" in denied.stderr and "--token" in denied.stderr
    ok = run_cli("tasks", "--token", "s3cret-token", env=env, cwd=work)
    assert ok.returncode == 0 and ok.stdout.strip() == "no tasks", ok.stderr
    ok_env = run_cli("tasks", "--json", env={**env, "SCOUT_API_TOKEN": "s3cret-token"}, cwd=work)
    assert json.loads(ok_env.stdout) == {"tasks": [], "next_cursor": None}


def test_ctrl_c_without_a_terminal_stops_the_task(server: ScoutServer, work: Path) -> None:
    proc = subprocess.Popen([PY, "-m", "scout.cli", "ask", "SLOW: 40 0.25"], cwd=str(work), env=cli_env(server),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=live_ctrl_c)
    try:
        seen = read_until(proc, "word2")  # text arrives live, long before the task ends
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    out = seen + rest.decode()
    assert proc.returncode == 1, out + err.decode()
    assert "stopping task" in out and "■ cancelled" in out
    assert "word39" not in out
    task_id = re.search(r"▶ task ([0-9a-f-]{36})", out).group(1)
    assert server.status(task_id)["status"] == "cancelled"


def test_ctrl_c_on_a_terminal_asks_and_stops_on_yes(server: ScoutServer, work: Path) -> None:
    state = {"sent": False, "answered": False}

    def react(buf: str, write: Any) -> None:
        if not state["sent"] and "word2" in buf:
            write(b"\x03")  # Ctrl-C, through the terminal's line discipline
            state["sent"] = True
        if state["sent"] and not state["answered"] and "Stop the task? [y/N]" in buf:
            write(b"y\n")
            state["answered"] = True

    out, code = run_in_pty(["ask", "SLOW: 40 0.25"], cli_env(server, TERM="xterm"), work, react)
    assert state["answered"], out
    assert code == 1, out
    assert any(frame in out for frame in cli.Spinner.FRAMES), "no spinner on a terminal"
    assert "\x1b[" in out  # colours on a terminal
    plain = ANSI.sub("", out)
    assert "■ cancelled" in plain and "word39" not in plain
    task_id = re.search(r"▶ task ([0-9a-f-]{36})", plain).group(1)
    assert server.status(task_id)["status"] == "cancelled"


def test_ctrl_c_on_a_terminal_answered_no_keeps_following(server: ScoutServer, work: Path) -> None:
    state = {"sent": False, "answered": False}

    def react(buf: str, write: Any) -> None:
        if not state["sent"] and "word2" in buf:
            write(b"\x03")
            state["sent"] = True
        if state["sent"] and not state["answered"] and "[y/N]" in buf:
            write(b"n\n")
            state["answered"] = True

    out, code = run_in_pty(["ask", "SLOW: 12 0.25"], cli_env(server, NO_COLOR="1"), work, react)
    assert state["answered"], out
    assert code == 0, out
    plain = ANSI.sub("", out)
    assert "\x1b[3" not in out  # NO_COLOR: no colours (the spinner's line clearing remains)
    assert "✓ completed" in plain
    words = re.findall(r"word(\d+)", plain)
    assert words == [str(i) for i in range(12)], plain  # resumed where it was: nothing lost or repeated


def test_ctrl_c_twice_on_a_terminal_detaches_and_leaves_the_task_running(server: ScoutServer, work: Path) -> None:
    state = {"interrupts": 0}

    def react(buf: str, write: Any) -> None:
        if state["interrupts"] == 0 and "word1" in buf:
            write(b"\x03")
            state["interrupts"] = 1
        elif state["interrupts"] == 1 and "[y/N]" in buf:
            write(b"\x03")  # a second Ctrl-C at the question
            state["interrupts"] = 2

    out, code = run_in_pty(["ask", "SLOW: 40 0.25"], cli_env(server), work, react)
    assert code == 130, out
    plain = ANSI.sub("", out)
    task_id = re.search(r"▶ task ([0-9a-f-]{36})", plain).group(1)
    assert f"detached; task {task_id} keeps running" in plain
    assert server.status(task_id)["status"] == "running"
    server.post(f"/chat/{task_id}/stop")


def test_ask_on_a_terminal_asks_approvals_inline(make_server: Any, tmp_path: Path, work: Path) -> None:
    """`scout ask` on a terminal: `Allow Bash: env? [y/N]`; y lets it run, Enter denies."""
    modes = tmp_path / "modes.toml"
    modes.write_text('[modes.Careful]\nallowed_tools = ["Read"]\napproval_tools = ["Bash"]\n')
    server = make_server(SCOUT_MODES_FILE=str(modes))
    asked: list[bytes] = []

    def answering(answer: bytes) -> Any:
        def react(buf: str, write: Any) -> None:
            if "? [y/N] " in buf and not asked[-1:] == [answer]:
                asked.append(answer)
                write(answer)
        return react

    out, code = run_in_pty(["ask", "BASH: env", "--mode", "Careful"], cli_env(server, NO_COLOR="1"), work,
                           answering(b"y\n"))
    plain = ANSI.sub("", out)
    assert code == 0, plain
    assert "Allow Bash: env? [y/N]" in plain and "answer with: scout approve" not in plain
    assert "✓ allowed" in plain and "HOME=" in plain and "✓ completed" in plain  # env ran
    task_id = re.search(r"▶ task ([0-9a-f-]{36})", plain).group(1)
    assert [e["payload"]["decision"] for e in server.status(task_id)["events"] if e["type"] == "approval"] == ["allow"]

    out, code = run_in_pty(["ask", f"BASH: touch {work / 'nope'}", "--mode", "Careful"],
                           cli_env(server, NO_COLOR="1"), work, answering(b"\n"))  # Enter: the default, N
    plain = ANSI.sub("", out)
    assert f"Allow Bash: touch {work / 'nope'}? [y/N]" in plain and "✗ denied" in plain, plain
    assert not (work / "nope").exists() and asked == [b"y\n", b"\n"]


def test_ask_resumes_the_stream_when_the_server_restarts(make_server: Any, work: Path) -> None:
    server = make_server()
    proc = subprocess.Popen([PY, "-m", "scout.cli", "ask", "SLOW: 30 0.2"], cwd=str(work), env=cli_env(server),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = read_until(proc, "word3")
        server.kill()  # the API crashes mid-stream; the task's worker goes on
        time.sleep(1.0)
        again = make_server(start=False)
        again.env, again.port = server.env, server.port
        again.start()
        rest, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    out = seen + rest.decode()
    assert proc.returncode == 0, out + err.decode()
    assert re.findall(r"word(\d+)", out) == [str(i) for i in range(30)]  # nothing lost, nothing twice
    assert "✓ completed" in out


# -- tasks, show, tail, stop -----------------------------------------------------------

def test_tasks_table_and_filters(server: ScoutServer, work: Path) -> None:
    ok = server.chat("BASH: ls", cwd=str(work))
    server.wait(ok)
    bad = server.chat("ERROR: 401", cwd=str(work))
    server.wait(bad)
    res = run_cli("tasks", server=server, cwd=work)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert re.match(r"ID\s+STATUS\s+AGE\s+MODE\s+MESSAGE$", lines[0])
    assert re.match(rf"{bad[:8]}\s+failed\s+\d+[sm]\s+Scout\s+ERROR: 401$", lines[1]), lines
    assert re.match(rf"{ok[:8]}\s+completed\s+\d+[sm]\s+Scout\s+BASH: ls$", lines[2]), lines
    assert len(lines) == 3
    failed = run_cli("tasks", "--status", "failed", server=server, cwd=work).stdout.splitlines()
    assert len(failed) == 2 and failed[1].startswith(bad[:8])
    session = server.status(ok)["session_id"]
    mine = run_cli("tasks", "--session", session, server=server, cwd=work).stdout.splitlines()
    assert len(mine) == 2 and mine[1].startswith(ok[:8])
    one = run_cli("tasks", "--limit", "1", server=server, cwd=work).stdout.splitlines()
    assert len(one) == 3 and one[1].startswith(bad[:8]) and "more tasks" in one[2]
    as_json = json.loads(run_cli("--json", "tasks", server=server, cwd=work).stdout)
    assert [t["task_id"] for t in as_json["tasks"]] == [bad, ok]
    bad_status = run_cli("tasks", "--status", "bogus", server=server, cwd=work)
    assert bad_status.returncode == 2 and "invalid choice" in bad_status.stderr


def test_show_renders_the_task_readably_and_as_markdown_and_json(server: ScoutServer, work: Path) -> None:
    task_id = server.chat("BASH: ls", cwd=str(work))
    doc = server.wait(task_id)
    res = run_cli("show", task_id[:6], server=server, cwd=work)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith(f"Task {task_id}  completed\n")
    assert f"  cwd      {work}\n" in out and "  mode     Scout\n" in out
    assert out.index("> BASH: ls") < out.index("⚙ Bash: ls") < out.index("  scout_known_file_7.txt") \
        < out.index("TOOL RESULT: scout_known_file_7.txt") < out.index("✓ completed")
    md = run_cli("show", task_id, "--markdown", server=server, cwd=work)
    assert md.returncode == 0 and md.stdout == task_markdown(doc)
    js = run_cli("show", task_id, "--json", server=server, cwd=work)
    assert json.loads(js.stdout) == doc
    missing = run_cli("show", "ffffffff-ffff-4fff-8fff-ffffffffffff", server=server, cwd=work)
    assert missing.returncode == 2 and missing.stderr.strip() == "scout: no task ffffffff-ffff-4fff-8fff-ffffffffffff"
    nomatch = run_cli("show", "zzzz", server=server, cwd=work)
    assert nomatch.returncode == 2 and nomatch.stderr.strip() == "scout: no task id starts with 'zzzz'"


def test_tail_replays_from_the_start_or_from_a_sequence_number(server: ScoutServer, work: Path) -> None:
    task_id = server.chat("BASH: ls", cwd=str(work))
    doc = server.wait(task_id)
    full = run_cli("tail", task_id, server=server, cwd=work)
    assert full.returncode == 0 and "⚙ Bash: ls" in full.stdout and "✓ completed" in full.stdout
    result_seq = next(e["seq"] for e in doc["events"] if e["type"] == "tool_result")
    later = run_cli("tail", task_id, "--from-seq", str(result_seq), server=server, cwd=work)
    assert later.returncode == 0
    assert "⚙ Bash" not in later.stdout and "scout_known_file_7.txt\n" in later.stdout
    assert later.stdout.startswith("TOOL RESULT: scout_known_file_7.txt")
    failed = server.chat("ERROR: 401", cwd=str(work))
    server.wait(failed)
    assert run_cli("tail", failed, server=server, cwd=work).returncode == 1


def test_stop_a_slow_task(server: ScoutServer, work: Path) -> None:
    task_id = server.chat("SLOW: 40 0.25", cwd=str(work))
    server.wait(task_id, statuses=("running",))
    res = run_cli("stop", task_id[:8], server=server, cwd=work)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"stopped task {task_id} (cancelled)"
    assert server.status(task_id)["status"] == "cancelled"
    again = run_cli("--json", "stop", task_id, server=server, cwd=work)
    assert again.returncode == 0
    assert json.loads(again.stdout) == {"task_id": task_id, "status": "cancelled", "stopped": False,
                                        "message": "task already cancelled; nothing to stop"}


def test_sessions_session_modes_health(server: ScoutServer, work: Path) -> None:
    first = server.chat("hello one", cwd=str(work))
    session_id = server.wait(first)["session_id"]
    second = server.chat("BASH: ls", session_id=session_id)
    server.wait(second)
    sessions = run_cli("sessions", server=server, cwd=work)
    assert sessions.returncode == 0
    assert re.search(rf"^{session_id[:8]}\s+2\s+\d+s\s+completed\s+\$\d+\.\d+\s+hello one$", sessions.stdout, re.M), \
        sessions.stdout
    shown = run_cli("session", session_id[:8], server=server, cwd=work)
    assert shown.returncode == 0
    assert shown.stdout.index("> hello one") < shown.stdout.index("ECHO: hello one") < shown.stdout.index("> BASH: ls")
    md = run_cli("session", session_id, "--markdown", server=server, cwd=work)
    session_doc = server.get(f"/sessions/{session_id}").json()
    assert md.stdout == session_markdown(session_doc, [server.status(first), server.status(second)])
    modes = run_cli("modes", server=server, cwd=work)
    assert re.search(r"^Scout \*\s+Investigates", modes.stdout, re.M) and re.search(r"^Plan\s", modes.stdout, re.M)
    assert json.loads(run_cli("--json", "modes", server=server, cwd=work).stdout)["default"] == "Scout"
    health = run_cli("health", server=server, cwd=work)
    assert health.returncode == 0 and health.stdout.startswith("ok  Scout ") and server.url in health.stdout


def test_plan_mode_refusal_is_shown_as_a_failed_tool_step(server: ScoutServer, work: Path) -> None:
    res = run_cli("ask", "BASH: touch made_by_plan.txt", "--mode", "Plan", server=server, cwd=work)
    assert res.returncode == 0, res.stdout + res.stderr
    step = res.stdout.split("⚙ Bash: touch made_by_plan.txt\n", 1)[1].splitlines()[0]
    assert step.startswith("  ✗ "), res.stdout  # the tool's error result, marked
    assert not (work / "made_by_plan.txt").exists()


def test_approval_asked_and_answered_with_scout_approve(make_server: Any, tmp_path: Path, work: Path) -> None:
    modes = tmp_path / "modes.toml"
    modes.write_text('[modes.Careful]\ndescription = "asks before running commands"\n'
                     'allowed_tools = ["Read"]\napproval_tools = ["Bash"]\n')
    server = make_server(SCOUT_MODES_FILE=str(modes))
    proc = subprocess.Popen([PY, "-m", "scout.cli", "ask", "BASH: touch approved.txt", "--mode", "Careful",
                             "--cwd", "."], cwd=str(work), env=cli_env(server), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = read_until(proc, "answer with: scout approve")
        task_id = re.search(r"▶ task ([0-9a-f-]{36})", seen).group(1)
        assert "⏸ Bash needs approval: touch approved.txt" in seen
        shown = run_cli("show", task_id, server=server, cwd=work).stdout
        assert "⏸ Bash needs approval: touch approved.txt" in shown and "answer with" not in shown
        assert server.status(task_id)["status"] == "waiting"
        assert not (work / "approved.txt").exists()
        ans = run_cli("approve", task_id[:8], "--reason", "fine", server=server, cwd=work)
        assert ans.returncode == 0 and ans.stdout.startswith("allowed "), ans.stderr
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    out = seen + rest.decode()
    assert proc.returncode == 0, out + err.decode()
    assert "  ✓ allowed: fine" in out and "✓ completed" in out
    assert (work / "approved.txt").exists()
    md = task_markdown(server.status(task_id))
    assert "> ⏸ **Approval requested** for Bash: `touch approved.txt`" in md and "> ✅ **Allowed**: fine" in md
    no_pending = run_cli("approve", task_id, server=server, cwd=work)
    assert no_pending.returncode == 2 and no_pending.stderr.startswith("scout: task already completed")

    # A tool the mode neither allows nor asks about is refused: a permission_denied event.
    target = work / "written.txt"
    denied = run_cli("ask", f'TOOL: Write {{"file_path": "{target}", "content": "x"}}', "--mode", "Careful",
                     "--cwd", ".", server=server, cwd=work)
    assert "⚙ Write: " + str(target) in denied.stdout
    assert "⛔ Write was not allowed: not allowed in this mode" in denied.stdout, denied.stdout
    assert not target.exists()
    denied_id = re.search(r"▶ task ([0-9a-f-]{36})", denied.stdout).group(1)
    assert "> ⛔ **Permission denied** for Write `" + str(target) + "`: not allowed in this mode" \
        in task_markdown(server.status(denied_id))


# -- prune -------------------------------------------------------------------------------

class _PruneStub(BaseHTTPRequestHandler):
    """Stands in for a server's POST /admin/prune (or its absence) to check the CLI's side."""

    seen: list[tuple[str, Any, str | None]] = []
    missing = False

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        type(self).seen.append((self.path, body, self.headers.get("Authorization")))
        if self.missing:
            self._send(404, {"error": {"code": "not_found", "message": "The requested URL was not found."}})
        else:
            self._send(200, {"deleted_tasks": 3, "deleted_events": 41})

    def _send(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("missing", [False, True])
def test_prune_request_and_output(tmp_path: Path, missing: bool) -> None:
    handler = type("Stub", (_PruneStub,), {"seen": [], "missing": missing})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        res = run_cli("--url", url, "--token", "tok", "prune", "--older-than", "7", cwd=tmp_path)
        default = run_cli("--url", url, "--json", "prune", cwd=tmp_path)
    finally:
        httpd.shutdown()
    assert handler.seen[0] == ("/admin/prune", {"older_than_days": 7}, "Bearer tok")
    assert handler.seen[1] == ("/admin/prune", {"older_than_days": 30}, None)
    if missing:
        assert res.returncode == 2 and "has no POST /admin/prune" in res.stderr
    else:
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == "deleted 3 tasks and 41 events finished more than 7 days ago"
        assert json.loads(default.stdout) == {"deleted_tasks": 3, "deleted_events": 41}
    bad = run_cli("--url", url, "prune", "--older-than", "-1", cwd=tmp_path)
    assert bad.returncode == 2 and "0 or more" in bad.stderr


# -- transcripts, on real status documents ---------------------------------------------

def test_task_markdown_of_a_tool_using_task(server: ScoutServer, work: Path) -> None:
    (work / "notes.md").write_text("Notes\n```python\nprint('hi')\n```\nend\n")
    task_id = server.chat("BASH: cat notes.md", cwd=str(work))
    doc = server.wait(task_id)
    before = copy.deepcopy(doc)
    md = task_markdown(doc)
    assert doc == before  # pure: the document is not changed
    assert md == task_markdown(before)
    assert md.startswith(f"# Task {task_id}\n\n- **Task:** `{task_id}`\n- **Status:** completed\n")
    assert f"- **Directory:** `{work}`" in md and "- **Mode:** Scout" in md
    model = next(e["payload"]["model"] for e in doc["events"] if e["type"] == "system")
    assert f"- **Model:** {model}" in md
    user = md.index("## User\n\n> BASH: cat notes.md\n")
    call = md.index("**⚙ Bash** `cat notes.md`")
    command = md.index("```bash\ncat notes.md\n```")
    # The result holds a ``` fence of its own, so the transcript's fence is longer.
    result = md.index("*Result of Bash:*\n\n````text\nNotes\n```python\nprint('hi')\n```\nend\n````")
    text = md.index("TOOL RESULT: Notes")
    final = md.index("---\n\n**Completed** · ")
    assert user < call < command < result < text < final
    r = doc["result"]
    assert md.rstrip().endswith(f"**Completed** · {r['duration_ms'] / 1000:.1f}s · ${r['total_cost_usd']:.4f} · "
                                f"{r['num_turns']} turns")
    assert md.count("## Assistant") == 1
    # Without events, the result text stands in for the conversation.
    brief = task_markdown(server.get(f"/chat/{task_id}/status?events=false").json())
    assert "## Assistant\n\n" + doc["result"]["text"] in brief and "⚙" not in brief


def test_task_markdown_of_failed_cancelled_and_running_tasks(server: ScoutServer, work: Path) -> None:
    failed = server.wait(server.chat("ERROR: 401", cwd=str(work)))
    md = task_markdown(failed)
    assert "- **Status:** failed" in md
    assert "> **Error:** authentication_failed" in md
    assert md.rstrip().endswith("> **Error:** " + failed["error"])
    assert "\n\n**Failed** · " in md

    slow = server.chat("SLOW: 40 0.25", cwd=str(work))
    server.wait(slow, statuses=("running",))
    deadline = time.time() + 30
    while not any(e["type"] == "text_delta" for e in server.status(slow)["events"]):
        assert time.time() < deadline
        time.sleep(0.1)
    running = server.status(slow)
    md_running = task_markdown(running)
    assert "*The task is still running; this transcript shows it so far.*" in md_running
    assert "*(partial: the text stopped here)*" in md_running
    server.post(f"/chat/{slow}/stop")
    cancelled = server.wait(slow)
    md_cancelled = task_markdown(cancelled)
    partial = "".join(e["payload"]["text"] for e in cancelled["events"] if e["type"] == "text_delta")
    assert partial.strip() and partial.rstrip() + "\n\n*(partial: the text stopped here)*" in md_cancelled
    assert "\n\n**Cancelled** · " in md_cancelled
    assert "*The task was stopped before it finished.*" in md_cancelled


def test_session_markdown_of_a_conversation(server: ScoutServer, work: Path) -> None:
    first = server.chat("remember PELICAN", cwd=str(work))
    session_id = server.wait(first)["session_id"]
    second = server.chat("BASH: ls", session_id=session_id)
    server.wait(second)
    session_doc = server.get(f"/sessions/{session_id}").json()
    docs = [server.status(first), server.status(second)]
    md = session_markdown(session_doc, list(reversed(docs)))  # the session's order wins
    assert md.startswith(f"# Session {session_id}\n")
    assert f"- **Directory:** `{work}`" in md
    assert md.count(f"`{work}`") == 1  # not repeated per task
    total = sum(d["result"]["total_cost_usd"] for d in docs)
    assert f"- **Turns:** 2 · **Total cost:** ${total:.4f}" in md
    one, two = md.index("## 1. remember PELICAN"), md.index("## 2. BASH: ls")
    assert one < md.index("### User\n\n> remember PELICAN") < md.index("ECHO: remember PELICAN") < two
    assert two < md.index("**⚙ Bash** `ls`") < md.index("TOOL RESULT: scout_known_file_7.txt")
    assert md.count("### Assistant") == 2 and "# Task" not in md
    # A task without a status document is shown from the session's summary of it.
    partial = session_markdown(session_doc, [docs[1]])
    assert "## 1. remember PELICAN" in partial and "### Assistant\n\nECHO: remember PELICAN" in partial


def test_fence_outlasts_backticks_inside() -> None:
    assert fence("a") == "```\na\n```"
    assert fence("x ```` y", "text") == "`````text\nx ```` y\n`````"


def test_durations_and_costs_for_terminals_and_for_the_web_ui() -> None:
    from scout.transcript import fmt_cost, fmt_duration
    assert [fmt_duration(x) for x in (1.234, 75, 4000, None)] == ["1.2s", "1m15s", "1h06m", "—"]
    assert [fmt_duration(x, spaced=True, missing="") for x in (1.234, 75, 4000, None, -1)] == \
        ["1.2 s", "1 min 15 s", "1 h 6 min", "", ""]
    assert [fmt_cost(x) for x in (0.01234, 12.5, None)] == ["$0.0123", "$12.50", "—"]
    assert fmt_cost(None, missing="") == ""


def test_prune_against_the_real_server(server: ScoutServer, work: Path) -> None:
    done = [server.chat(f"hello {i}", cwd=str(work)) for i in range(2)]
    docs = [server.wait(t) for t in done]
    slow = server.chat("SLOW: 40 0.25", cwd=str(work))
    server.wait(slow, statuses=("running",))
    assert run_cli("prune", "--older-than", "30", server=server, cwd=work).stdout.startswith("deleted 0 tasks")
    out = json.loads(run_cli("--json", "prune", "--older-than", "0", server=server, cwd=work).stdout)
    assert out["deleted_tasks"] == 2 and out["deleted_events"] == sum(len(d["events"]) for d in docs)
    assert server.get(f"/chat/{done[0]}/status").status_code == 404
    assert server.status(slow)["status"] == "running"
    server.post(f"/chat/{slow}/stop")
