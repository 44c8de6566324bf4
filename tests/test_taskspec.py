"""The WorkerSpec that crosses the zygote's pipe. Part of the fast layer (`make test-fast`)."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from scout import worker
from scout.config import Settings
from scout.taskspec import WorkerSpec, warm_address, warm_key, zygote_address


def test_the_spec_comes_from_the_settings(tmp_path: Path) -> None:
    settings = Settings.from_env({"SCOUT_DB": str(tmp_path / "s.db"), "SCOUT_DB_MAX_MB": "5",
                                  "SCOUT_TASK_NICE": "3", "SCOUT_APPROVAL_TIMEOUT": "12",
                                  "SCOUT_CLAUDE_PATH": "/bin/true", "SCOUT_MAX_EVENTS_PER_TASK": "0"})
    spec = WorkerSpec.from_settings("t1", settings, str(tmp_path / "t1.log"))
    assert spec == WorkerSpec(task_id="t1", db=str(tmp_path / "s.db"), db_max_bytes=5 * 2**20,
                              log_path=str(tmp_path / "t1.log"), nice=3, claude_path="/bin/true",
                              approval_timeout=12.0, max_events_per_task=None,
                              allowed_roots=settings.allowed_roots, worktrees=str(tmp_path / "worktrees"),
                              session_idle=300.0, warm_address=str(tmp_path / "s.db") + ".warm")
    assert WorkerSpec.from_settings("t1", settings, cgroup="/sys/fs/cgroup/x/t1").cgroup == "/sys/fs/cgroup/x/t1"


def test_a_relative_database_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = WorkerSpec.from_settings("t", Settings.from_env({"SCOUT_DB": "data/x.db"}))
    assert spec.db == os.path.join(str(tmp_path), "data", "x.db") and spec.log_path is None


def test_the_spec_survives_the_pipe() -> None:
    spec = WorkerSpec(task_id="t", db="/d.db", db_max_bytes=None, log_path="/l", nice=0,
                      claude_path=None, approval_timeout=1.5, max_events_per_task=10)
    line = spec.to_json()
    assert "\n" not in line and WorkerSpec.from_json(line) == spec and WorkerSpec.from_json(line.encode()) == spec
    with pytest.raises(TypeError):
        WorkerSpec.from_json('{"task_id": "t", "db": "/d", "surprise": 1}')


def test_worker_main_builds_the_same_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"SCOUT_DB": str(tmp_path / "m.db"), "SCOUT_TASK_NICE": "4", "SCOUT_APPROVAL_TIMEOUT": "9"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    seen: list[WorkerSpec] = []
    monkeypatch.setattr(worker, "run", lambda spec: seen.append(spec) or 0)
    monkeypatch.setattr("sys.argv", ["scout.worker", "t9"])
    with pytest.raises(SystemExit) as exit_:
        worker.main()
    assert exit_.value.code == 0
    # the same spec, except that a task run by hand never stays warm (no server hands it more)
    assert seen == [replace(WorkerSpec.from_settings("t9", Settings.from_env()), session_idle=0.0)]


def test_each_node_of_a_shared_log_has_its_own_zygote_address() -> None:
    url = "postgresql://scout@127.0.0.1:5432/scout"
    a, b = zygote_address(url, "node-a"), zygote_address(url, "node-b")
    assert a.startswith("\0") and b.startswith("\0") and a != b  # two nodes on one machine
    assert zygote_address(url, "node-a") == a  # the next server of the node finds its zygote
    assert zygote_address("/tmp/x/scout.db", "node-a") == "/tmp/x/scout.db.zygote"  # SQLite: beside the file


def test_warm_sessions_off_reach_the_worker(tmp_path: Path) -> None:
    """SCOUT_SESSION_IDLE=0, or SCOUT_MAX_WARM=0, and every worker exits after its task."""
    for env in ({"SCOUT_SESSION_IDLE": "0"}, {"SCOUT_MAX_WARM": "0"}):
        settings = Settings.from_env({"SCOUT_DB": str(tmp_path / "s.db"), **env})
        assert WorkerSpec.from_settings("t", settings).session_idle == 0.0
    with pytest.raises(Exception, match="SCOUT_SESSION_IDLE"):
        Settings.from_env({"SCOUT_SESSION_IDLE": "-1"})


def test_a_warm_process_takes_only_what_it_was_started_with() -> None:
    """Model and permission mode are applied live, and the webhook never reaches Claude Code;
    any other option (cwd, mode, tools, prompt, workspace) needs a cold start."""
    base = {"cwd": "/w", "mode": "code", "model": "a", "permission_mode": "default", "allowed_tools": ["Read"],
            "webhook_url": None, "workspace": {"kind": "shared"}}
    key = warm_key(base)
    assert warm_key({**base, "model": "b", "permission_mode": "acceptEdits", "webhook_url": "http://x"}) == key
    assert warm_key(dict(reversed(list(base.items())))) == key  # order does not matter
    for change in ({"cwd": "/v"}, {"mode": "plan"}, {"allowed_tools": ["Read", "Bash"]},
                   {"append_system_prompt": "be brief"}, {"workspace": {"kind": "worktree"}}):
        assert warm_key({**base, **change}) != key, change


def test_the_warm_socket_sits_beside_the_database_as_the_zygotes_does(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    assert warm_address(db) == db + ".warm" and zygote_address(db) == db + ".zygote"
    url = "postgresql://h/db"
    assert warm_address(url, "n1").startswith("\0scout-warm-") and warm_address(url, "n1") != warm_address(url, "n2")
