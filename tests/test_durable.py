"""History that cannot be lost: conversations outlive Claude Code's own transcript files,
and the log survives fills, locks and backups. Real servers, the real CLI, the scripted model."""
from __future__ import annotations

import glob
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil

from conftest import ROOT, ScoutServer, wait_for


def transcript_files(home: Path) -> list[str]:
    return glob.glob(str(home / ".claude" / "projects" / "*" / "*.jsonl"))


def delete_transcripts(home: Path) -> int:
    """Delete Claude Code's transcript files, as its cleanupPeriodDays sweep would."""
    files = transcript_files(home)
    for path in files:
        Path(path).unlink()
    return len(files)


# -- transcripts in Scout's log ----------------------------------------------------------

def test_conversation_outlives_its_transcript_files_and_its_home(make_server, scout_env, tmp_path: Path):
    home = Path(scout_env["HOME"])
    server = make_server()
    turns = ["my name is Ada", "I live in Paris"]
    for i, text in enumerate(turns):
        task = server.chat(text, session_id="talk")
        assert server.wait(task)["status"] == "completed"
        deleted = delete_transcripts(home)  # as Claude Code's own cleanup would, after each turn
        # The first turn's file was Claude Code's own; later turns resume from Scout's copy,
        # put in a temporary directory for the CLI, so nothing is left under HOME.
        assert deleted == 1 if i == 0 else deleted == 0
    third = server.wait(server.chat("ECHO-HISTORY what do you know?", session_id="talk"))
    assert third["status"] == "completed", third["error"]
    assert third["result"]["text"] == "my name is Ada | I live in Paris | ECHO-HISTORY what do you know?"
    delete_transcripts(home)
    server.stop()

    # The same log under another HOME: no transcript file of this conversation at all.
    other = tmp_path / "other-home"
    other.mkdir()
    moved = make_server(HOME=str(other))
    fourth = moved.wait(moved.chat("ECHO-HISTORY and now?", session_id="talk"))
    assert fourth["status"] == "completed", fourth["error"]
    assert fourth["result"]["text"] == ("my name is Ada | I live in Paris | ECHO-HISTORY what do you know? | "
                                        "ECHO-HISTORY and now?")
    assert moved.get("/sessions/talk").json()["can_continue"] is True


def scout_cli(server: ScoutServer, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env.update(PYTHONPATH=str(ROOT), SCOUT_URL=server.url, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "scout.cli", *args], cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_a_session_whose_history_is_gone_says_so_and_is_not_offered_again(make_server, scout_env, tmp_path):
    home = Path(scout_env["HOME"])
    server = make_server()
    assert server.wait(server.chat("remember 42", session_id="gone"))["status"] == "completed"
    second = scout_cli(server, "ask", "--session", "gone", "and 43", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "continue this conversation: scout ask --session gone" in second.stdout
    # Lose both copies: Claude Code's file, and Scout's (as for a session from before Scout kept one).
    delete_transcripts(home)
    conn = sqlite3.connect(server.db, timeout=30)
    with conn:
        conn.execute("DELETE FROM transcripts")
    conn.close()
    third = scout_cli(server, "ask", "--session", "gone", "ECHO-HISTORY still there?", cwd=tmp_path)
    assert third.returncode != 0 and "cannot be continued" in third.stdout + third.stderr
    assert "continue this conversation" not in third.stdout  # no longer offered
    doc = server.get("/tasks", params={"session_id": "gone", "limit": 1}).json()["tasks"][0]
    assert doc["status"] == "failed"
    assert "session gone cannot be continued" in doc["error"] and "No conversation found" not in doc["error"]
    session = server.get("/sessions/gone").json()
    assert session["can_continue"] is False and "cannot be continued" in session["history_lost"]
    listed = [s for s in server.get("/sessions").json()["sessions"] if s["session_id"] == "gone"]
    assert listed[0]["can_continue"] is False
    # A further message to it is refused at once, with the reason; a new session works.
    resp = server.post("/chat", json={"message": "hello?", "session_id": "gone"})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "session_ended"
    assert "cannot be continued" in resp.json()["error"]["message"]
    shown = scout_cli(server, "session", "gone", cwd=tmp_path)
    assert "cannot be continued" in shown.stdout
    fresh = server.wait(server.chat("a new start"))
    assert fresh["status"] == "completed"


def test_deleting_a_session_or_pruning_it_removes_its_transcript(make_server):
    server = make_server()
    kept, dropped, pruned = (server.chat(f"hello {n}", session_id=n) for n in ("kept", "dropped", "pruned"))
    for task in (kept, dropped, pruned):
        assert server.wait(task)["status"] == "completed"

    def stored() -> dict[str, int]:
        conn = sqlite3.connect(server.db, timeout=30)
        try:
            return dict(conn.execute("SELECT session_id, COUNT(*) FROM transcripts GROUP BY session_id"))
        finally:
            conn.close()

    assert set(stored()) == {"kept", "dropped", "pruned"}
    assert server.delete("/sessions/dropped").status_code == 200
    conn = sqlite3.connect(server.db, timeout=30)
    with conn:
        conn.execute("UPDATE tasks SET finished_at = finished_at - 40 * 86400 WHERE id = ?", (pruned,))
    conn.close()
    assert server.post("/admin/prune", json={"older_than_days": 30}).json()["deleted_sessions"] == 1
    assert set(stored()) == {"kept"}


# -- space comes back every time ----------------------------------------------------------

def fill_until_full(server: ScoutServer) -> list[str]:
    """Post tasks with big messages until the capped log refuses one; stop them all (they
    end cancelled, so they can be pruned) and return their ids."""
    filler = "x" * 60_000
    ids = []
    for i in range(200):
        resp = server.post("/chat", json={"message": f"{filler} {i}", "mode": "Plan"})
        if resp.status_code != 202:
            break
        ids.append(resp.json()["task_id"])
    assert resp.status_code == 503 and "full" in resp.json()["error"]["message"], resp.text
    assert len(ids) >= 5
    health = server.get("/health")
    assert health.status_code == 503
    error = health.json()["database"]["error"]
    assert "full" in error and "scout prune --older-than N" in error and "SCOUT_DB_MAX_MB" in error
    for task_id in ids:
        server.post(f"/chat/{task_id}/stop")
    for task_id in ids:
        assert server.wait(task_id)["status"] in ("cancelled", "completed", "failed")
    return ids


def test_fill_prune_fill_prune_shrinks_the_file_both_times(make_server, tmp_path):
    server = make_server(SCOUT_DB_MAX_MB="2", SCOUT_MAX_WORKERS="1")
    first = fill_until_full(server)
    # Nothing is 30 days old: `scout prune` deletes nothing and says what to do instead.
    advice = scout_cli(server, "prune", cwd=tmp_path)
    assert advice.returncode == 2, advice.stdout + advice.stderr
    assert "deleted 0 tasks" in advice.stdout
    assert "still full" in advice.stderr and "nothing finished more than 30 days ago" in advice.stderr
    assert "--older-than" in advice.stderr and "SCOUT_DB_MAX_MB" in advice.stderr

    for round_, ids in enumerate((first, None)):
        if ids is None:
            ids = fill_until_full(server)
        full_size = server.get("/health").json()["database"]["size_bytes"]
        res = server.post("/admin/prune", json={"older_than_days": 0}).json()
        assert res["deleted_tasks"] == len(ids) and res["database_full"] is False, (round_, res)
        health = server.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok", (round_, health.json()["database"].get("error"))
        size = health.json()["database"]["size_bytes"]
        assert size < full_size / 2, (round_, full_size, size)  # the file itself shrank
        conn = sqlite3.connect(server.db, timeout=30)
        try:
            assert conn.execute("PRAGMA freelist_count").fetchone()[0] < 16, round_
        finally:
            conn.close()
    done = server.wait(server.chat("still working?"))
    assert done["status"] == "completed", done["error"]


# -- locks delay, they don't kill ----------------------------------------------------------

# The case is a 60 s lock: twice the 30 s every write used to wait before failing.
LOCK_SECONDS = float(os.environ.get("SCOUT_TEST_LOCK_SECONDS", "60"))

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
print("released", flush=True)
"""


def test_a_long_write_lock_delays_running_tasks_and_never_fails_them(server):
    tasks = [server.chat(f"SLOW: 60 0.1 {name}") for name in ("alpha", "beta")]
    for task_id in tasks:
        wait_for(lambda: sum(e["type"] == "text_delta" for e in server.status(task_id)["events"]) >= 3,
                 60, "the task streaming")
    locker = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, server.db, str(LOCK_SECONDS)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        locked_at = time.monotonic()
        # /health notices within about a second (its probe waits 1 s for the write lock).
        health = server.get("/health")
        while health.status_code == 200 and time.monotonic() - locked_at < 10:
            health = server.get("/health")
        assert time.monotonic() - locked_at < 2.0 and health.status_code == 503
        assert "locked" in health.json()["database"]["error"]
        # A new task is refused at once, saying when to come back; reads go on.
        started = time.monotonic()
        resp = server.post("/chat", json={"message": "hello"})
        assert time.monotonic() - started < 2.0
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "database_busy"
        assert int(resp.headers["Retry-After"]) >= 1
        started = time.monotonic()
        assert server.status(tasks[0])["status"] == "running"
        assert time.monotonic() - started < 1.0
        assert locker.wait(LOCK_SECONDS + 30) == 0
    finally:
        if locker.poll() is None:
            locker.kill()
    for task_id in tasks:
        doc = server.wait(task_id, timeout=120)
        assert doc["status"] == "completed", doc["error"]
        seqs = [e["seq"] for e in doc["events"]]
        assert seqs == list(range(1, len(seqs) + 1))  # every event, no gap
        deltas = "".join(e["payload"]["text"] for e in doc["events"] if e["type"] == "text_delta")
        assert deltas == doc["result"]["text"] and doc["result"]["text"].count(" ") >= 59
    assert server.get("/health").status_code == 200
    assert server.wait(server.chat("after the lock"))["status"] == "completed"


# -- backups -------------------------------------------------------------------------------

def test_backup_during_a_burst_is_consistent_and_restores(make_server, tmp_path):
    server = make_server()
    burst = [server.chat(f"SLOW: 300 0.01 burst {i}") for i in range(3)]
    wait_for(lambda: sum(len(server.status(t)["events"]) for t in burst) > 100, 90, "the burst under way")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOUT_")}
    env.update(PYTHONPATH=str(ROOT), SCOUT_DB=server.db)
    copies = []
    for n in range(2):  # two copies while the tasks write
        path = tmp_path / "backups" / f"scout-{n}.db"
        path.parent.mkdir(exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "scout.cli", "backup", str(path)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "integrity ok" in done.stdout
        copies.append(path)
    refused = subprocess.run([sys.executable, "-m", "scout.cli", "backup", str(copies[0])], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--force" in refused.stderr
    mid_burst = 0
    for path in copies:
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            rows = conn.execute("SELECT t.id, t.status, COUNT(e.seq), MIN(e.seq), MAX(e.seq) FROM tasks t"
                                " JOIN events e ON e.task_id = t.id GROUP BY t.id").fetchall()
        finally:
            conn.close()
        assert {r[0] for r in rows} == set(burst)
        for task_id, status, count, low, high in rows:
            assert (low, high) == (1, count), (path, task_id)  # gap-free
            mid_burst += status == "running"
    assert mid_burst  # taken while the tasks were still logging
    for task_id in burst:
        assert server.wait(task_id, timeout=120)["status"] == "completed"

    # Restore: a server started on the copy has its log (tasks cut short by the copy are settled).
    restored = make_server(SCOUT_DB=str(copies[-1]))
    assert restored.get("/health").json()["database"]["ok"] is True
    listed = {t["task_id"] for t in restored.get("/tasks").json()["tasks"]}
    assert listed == set(burst)


# -- no zombie, real exit statuses, after a server crash ---------------------------------------

def zygote_of(server: ScoutServer) -> psutil.Process:
    """The server's zygote: its one child titled so (found by parentage: forked processes
    that set a title no longer show their environment)."""
    children = [p for p in psutil.Process(server.proc.pid).children() if p.cmdline()[:1] == ["scout: zygote"]]
    assert len(children) == 1, children
    return children[0]


def zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_after_a_server_crash_no_zombie_remains_and_adopted_tasks_report_how_they_ended(make_server):
    first = make_server()
    doomed = first.chat("SLOW: 3000 0.1 runs until killed")
    finishing = first.chat("SLOW: 60 0.1 ends by itself")
    for task_id in (doomed, finishing):
        wait_for(lambda: any(e["type"] == "text_delta" for e in first.status(task_id)["events"]), 90,
                 "the task streaming")
    zygote = zygote_of(first).pid
    before = psutil.Process(zygote).children(recursive=True)  # leaders, workers, CLIs, tools
    doomed_worker = next(p.pid for p in before if p.cmdline()[:1] == [f"scout: worker {doomed}"])
    first.kill()  # a crash: the zygote and the tasks outlive it

    second = make_server()
    assert not zombie(zygote) and psutil.pid_exists(zygote)  # picked up, not left to init
    os.kill(doomed_worker, signal.SIGKILL)  # the adopted task dies
    killed = second.wait(doomed, timeout=60)
    assert killed["status"] == "failed"
    assert killed["error"].startswith("the worker was killed by SIGKILL"), killed["error"]
    done = second.wait(finishing, timeout=120)
    assert done["status"] == "completed", done["error"]
    # Once they have ended, nothing of theirs is left, not even a zombie (this sandbox's
    # PID 1 does not reap: a process left to it would stay a zombie).
    pids = {p.pid for p in before}
    wait_for(lambda: not any(psutil.pid_exists(pid) for pid in pids), 30,  # a zombie's pid exists
             "every process of the tasks reaped")
    assert psutil.Process(zygote).status() != psutil.STATUS_ZOMBIE  # still serving the second server
    assert second.wait(second.chat("after the crash"))["status"] == "completed"


def test_a_clean_shutdown_with_nothing_running_ends_its_zygote(make_server):
    server = make_server()
    assert server.wait(server.chat("hello"))["status"] == "completed"
    zygote = zygote_of(server).pid
    wait_for(lambda: server.get("/health").json()["workers"]["active"] == 0, 30, "the task's leader reaped")
    assert server.stop() == 0
    assert not psutil.pid_exists(zygote)  # told to exit, and reaped by its server


def test_a_backup_is_readable_by_its_owner_only(tmp_path):
    """The copy holds what the log holds, so it is as guarded as the log (0600), whatever the umask."""
    from scout.backup import backup
    from scout.store import Store
    db = str(tmp_path / "scout.db")
    Store(db).close()
    old = os.umask(0o022)
    try:
        out = backup(db, str(tmp_path / "copy.db"))
    finally:
        os.umask(old)
    assert os.stat(out.path).st_mode & 0o777 == 0o600 and out.integrity == "ok"
