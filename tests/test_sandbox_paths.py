"""The sandbox's path rules where worktrees meet Scout's data directory (scout/sandbox.py):
the task's own worktree open inside the closed data directory, and the placeholders a
killed sandboxed command leaves swept. Plain functions on a temporary tree; no CLI."""
from __future__ import annotations

import os
import time
from pathlib import Path

from scout import sandbox


def test_a_tasks_worktree_is_left_open_inside_the_closed_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for folder in ("worktrees/one/sub", "worktrees/two", "worktrees/.locks", "logs"):
        (data / folder).mkdir(parents=True)
    (data / "scout.db").touch()
    closed = sandbox.open_to([str(data), str(data / "logs")], str(data / "worktrees" / "one"))
    assert sorted(closed) == sorted(str(data / p) for p in ("logs", "scout.db", "worktrees/.locks", "worktrees/two"))
    assert sandbox.open_to([str(data)], None) == [str(data)]
    assert sandbox.open_to([str(data)], str(tmp_path / "elsewhere")) == [str(data)]
    rules = sandbox.settings(str(data / "worktrees/one/sub"), "cwd", closed, [], False, str(data / "worktrees/one"))
    assert rules["filesystem"]["allowWrite"] == [str(data / "worktrees/one")]
    rules = sandbox.settings(str(data / "worktrees/one/sub"), "temp", closed, [], False, str(data / "worktrees/one"))
    assert str(data / "worktrees/one") in rules["filesystem"]["denyWrite"] and "allowWrite" not in rules["filesystem"]


def test_sweep_removes_only_fresh_empty_read_only_files_at_the_top_and_in_dot_claude(tmp_path: Path) -> None:
    def make(rel: str, mode: int, text: str = "") -> Path:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    started = time.time() - 5
    placeholders = [make(".bashrc", 0o444), make(".claude/agents", 0o444)]
    kept = [make(".gitconfig", 0o444, "[user]\n"), make("empty.txt", 0o644), make("sub/.bashrc", 0o444)]
    old = make(".profile", 0o444)
    os.utime(old, (started - 100, started - 100))
    gone = sandbox.sweep_placeholders([str(tmp_path)], started)
    assert sorted(gone) == sorted(str(p) for p in placeholders)
    assert all(p.exists() for p in kept + [old]) and not (tmp_path / ".claude").exists()
