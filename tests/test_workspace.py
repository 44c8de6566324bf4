"""scout/workspace.py against real git repositories in temporary folders (no Scout server)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path

import pytest

from scout import workspace as wsm
from scout.workspace import WorkspaceError


def sh(repo: Path | str, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def branches(repo: Path) -> list[str]:
    return sh(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/scout/").split()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    sh(r, "init", "-q", "-b", "main")
    sh(r, "config", "user.name", "Tester")
    sh(r, "config", "user.email", "t@example.com")
    (r / "a.txt").write_text("one\ntwo\nthree\n")
    (r / "sub").mkdir()
    (r / "sub" / "b.txt").write_text("b\n")
    sh(r, "add", ".")
    sh(r, "commit", "-q", "-m", "init")
    return r


@pytest.fixture
def root(tmp_path: Path) -> str:
    return str(tmp_path / "worktrees")


def fingerprint(repo: Path) -> dict[str, str]:
    """Everything of the user's checkout a merge must not change when it fails."""
    files = {}
    for path in sorted(repo.rglob("*")):
        if ".git" in path.relative_to(repo).parts[:1] or not path.is_file():
            continue
        files[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    git = repo / ".git"
    return {"files": repr(files), "index": hashlib.sha256((git / "index").read_bytes()).hexdigest(),
            "HEAD": (git / "HEAD").read_text(), "main": sh(repo, "rev-parse", "refs/heads/main"),
            "stash": sh(repo, "stash", "list"), "MERGE_HEAD": str((git / "MERGE_HEAD").exists()),
            "ORIG_HEAD": str((git / "ORIG_HEAD").exists())}


def made(repo: Path, root: str, session: str, cwd: Path | None = None) -> wsm.Workspace:
    ws = wsm.plan(str(cwd or repo), session, root)
    assert wsm.ensure(ws, root)
    return ws


def test_probe_and_plan(repo: Path, root: str, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert wsm.probe(str(plain)) is None
    with pytest.raises(WorkspaceError) as err:
        wsm.plan(str(plain), "s1", root)
    assert (err.value.status, err.value.code) == (400, "not_a_git_repo")
    ws = wsm.plan(str(repo / "sub"), "s1", root)
    assert ws.kind == "worktree" and ws.repo == str(repo) and ws.branch == "scout/s1"
    assert ws.base_commit == sh(repo, "rev-parse", "HEAD") and ws.target_branch == "refs/heads/main"
    assert ws.path == os.path.join(root, "s1") and not os.path.exists(ws.path)  # made by the task
    for bad in ("nope", "--output=/tmp/x", "a b"):
        with pytest.raises(WorkspaceError) as err:
            wsm.plan(str(repo), "s1", root, base=bad)
        assert err.value.code == "invalid_base"
    first = sh(repo, "rev-parse", "HEAD")
    (repo / "a.txt").write_text("changed\n")
    sh(repo, "commit", "-qam", "second")
    assert wsm.plan(str(repo), "s1", root, base="HEAD~1").base_commit == first


def test_slug_is_safe_for_git_and_folders() -> None:
    assert wsm.slug("3f1c-abc_d.e") == "3f1c-abc_d.e"
    seen = set()
    for sid in ("..", ".hidden", "x.lock", "a..b", "-x", "trailing.", "a..b_"):
        name = wsm.slug(sid)
        assert not name.startswith((".", "-")) and ".." not in name and not name.endswith((".", ".lock"))
        subprocess.run(["git", "check-ref-format", "refs/heads/scout/" + name], check=True)
        seen.add(name)
    assert len(seen) == 7


def test_worktree_leaves_the_checkout_alone_and_counts_changes(repo: Path, root: str) -> None:
    (repo / "mine.txt").write_text("the user's own uncommitted file\n")
    before = fingerprint(repo)
    ws = made(repo, root, "s1", repo / "sub")
    assert fingerprint(repo) == before
    assert branches(repo) == ["scout/s1"]
    assert not (Path(ws.path) / "mine.txt").exists()  # uncommitted work of the checkout is not there
    assert wsm.run_dir(ws, str(repo / "sub")) == os.path.join(ws.path, "sub")

    start = wsm.snapshot(ws.path)
    wt = Path(ws.path)
    (wt / "a.txt").write_text("one\nTWO\nthree\nfour\n")
    (wt / "new.txt").write_text("x\ny\n")
    (wt / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (wt / "sub" / "b.txt").unlink()
    (wt / "odd\tname:1.txt").write_text("tab\n")
    status_before = sh(ws.path, "status", "--porcelain")
    changes = wsm.diff(ws.path, start, wsm.snapshot(ws.path)).to_dict()
    assert sh(ws.path, "status", "--porcelain") == status_before  # the snapshot changed nothing
    files = {f["path"]: f for f in changes["files"]}
    assert files["a.txt"] == {"path": "a.txt", "status": "modified", "additions": 2, "deletions": 1, "binary": False}
    assert files["new.txt"]["status"] == "added" and files["new.txt"]["additions"] == 2
    assert files["blob.bin"]["binary"] and files["blob.bin"]["status"] == "added"
    assert files["sub/b.txt"]["status"] == "deleted" and files["sub/b.txt"]["deletions"] == 1
    assert files["odd\tname:1.txt"]["status"] == "added" and files["odd\tname:1.txt"]["additions"] == 1
    assert (changes["additions"], changes["deletions"]) == (5, 2)
    # a second task counts from where the first left the worktree
    mid = wsm.snapshot(ws.path)
    (wt / "new.txt").write_text("x\ny\nz\n")
    assert [(f.path, f.additions) for f in wsm.diff(ws.path, mid, wsm.snapshot(ws.path)).files] == [("new.txt", 1)]
    # the session's changes count from the base commit; the patch is a unified diff
    assert {f.path for f in wsm.session_changes(ws).files} == {"a.txt", "new.txt", "blob.bin", "sub/b.txt",
                                                               "odd\tname:1.txt"}
    text = wsm.session_patch(ws)
    assert "+TWO" in text and "-two" in text and "Binary files" in text
    assert fingerprint(repo) == before


def test_merge_then_conflict_leaves_the_checkout_byte_for_byte(repo: Path, root: str) -> None:
    one, two = made(repo, root, "one"), made(repo, root, "two")
    (Path(one.path) / "a.txt").write_text("one\nFIRST\nthree\n")
    (Path(two.path) / "a.txt").write_text("one\nSECOND\nthree\n")
    result = wsm.merge(one, root, "one")
    assert sh(repo, "rev-parse", "main") == result.commit
    assert (repo / "a.txt").read_text() == "one\nFIRST\nthree\n"
    assert sh(repo, "status", "--porcelain") == ""
    assert [(f.path, f.additions, f.deletions) for f in result.files] == [("a.txt", 1, 1)]
    assert result.base_commit == sh(repo, "rev-parse", "scout/one")
    assert sh(one.path, "status", "--porcelain") == ""  # the worktree's index follows its branch
    two_tip = sh(repo, "rev-parse", "scout/two")

    (repo / "untracked.txt").write_text("the user's\n")
    before = fingerprint(repo)
    with pytest.raises(WorkspaceError) as err:
        wsm.merge(two, root, "two")
    assert (err.value.status, err.value.code) == (409, "merge_conflict")
    assert err.value.details["paths"] == ["a.txt"]
    assert fingerprint(repo) == before
    assert not list((repo / ".git").glob("*.lock"))
    assert sh(repo, "rev-parse", "scout/two") == two_tip  # a failed merge commits nothing either


def test_merge_refuses_a_dirty_or_moved_target_and_untracked_files_in_the_way(repo: Path, root: str) -> None:
    ws = made(repo, root, "s")
    (Path(ws.path) / "new.txt").write_text("from scout\n")
    (repo / "a.txt").write_text("the user's edit\n")
    before = fingerprint(repo)
    with pytest.raises(WorkspaceError) as err:
        wsm.merge(ws, root, "s")
    assert err.value.code == "target_dirty" and err.value.details["paths"] == ["a.txt"]
    assert fingerprint(repo) == before
    sh(repo, "checkout", "-q", "a.txt")

    (repo / "new.txt").write_text("an untracked file of the user's\n")
    before = fingerprint(repo)
    with pytest.raises(WorkspaceError) as err:
        wsm.merge(ws, root, "s")
    assert err.value.code == "target_dirty" and "new.txt" in err.value.message
    assert fingerprint(repo) == before
    (repo / "new.txt").unlink()

    sh(repo, "checkout", "-q", "-b", "other")
    before = fingerprint(repo)
    with pytest.raises(WorkspaceError) as err:
        wsm.merge(ws, root, "s")
    assert err.value.code == "target_moved"
    assert fingerprint(repo) == before
    sh(repo, "checkout", "-q", "main")
    assert wsm.merge(ws, root, "s").commit == sh(repo, "rev-parse", "main")
    assert (repo / "new.txt").read_text() == "from scout\n"


def test_merge_commit_and_squash_after_the_user_moved_on(repo: Path, root: str) -> None:
    ws = made(repo, root, "s")
    (Path(ws.path) / "new.txt").write_text("from scout\n")
    (repo / "sub" / "b.txt").write_text("user's commit\n")
    sh(repo, "commit", "-qam", "user moves on")
    user_head = sh(repo, "rev-parse", "main")
    result = wsm.merge(ws, root, "s", message="Take Scout's file")
    parents = sh(repo, "rev-list", "--parents", "-n1", result.commit).split()[1:]
    assert parents == [user_head, sh(repo, "rev-parse", "scout/s")]
    assert sh(repo, "log", "-1", "--format=%s", "scout/s") == "Take Scout's file"
    assert (repo / "new.txt").exists() and (repo / "sub" / "b.txt").read_text() == "user's commit\n"
    # nothing new: merged again is a no-op
    assert wsm.merge(ws, root, "s").files == []
    # squash: one commit with one parent
    (Path(ws.path) / "more.txt").write_text("more\n")
    squashed = wsm.merge(ws, root, "s", squash=True)
    assert len(sh(repo, "rev-list", "--parents", "-n1", squashed.commit).split()) == 2
    assert (repo / "more.txt").exists() and sh(repo, "status", "--porcelain") == ""


def test_merge_without_a_git_identity(repo: Path, root: str, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    sh(repo, "config", "--unset", "user.name")
    sh(repo, "config", "--unset", "user.email")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.gitconfig either
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    ws = made(repo, root, "s")
    (Path(ws.path) / "new.txt").write_text("x\n")
    (repo / "a.txt").write_text("moved on\n")
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qam", "u"],
                   check=True)
    commit = wsm.merge(ws, root, "s").commit  # git's guess of an identity, or Scout's own
    assert sh(repo, "rev-parse", "main") == commit and (repo / "new.txt").exists()


def test_discard_and_prune(repo: Path, root: str) -> None:
    a, b, c = made(repo, root, "a"), made(repo, root, "b"), made(repo, root, "c")
    (Path(a.path) / "junk.txt").write_text("uncommitted\n")
    assert wsm.discard(a, root)
    assert not os.path.exists(a.path) and "scout/a" not in branches(repo)
    assert not wsm.discard(a, root)  # twice is fine
    outside = Path(root) / "not-a-worktree"
    outside.mkdir()
    removed = wsm.prune_orphans(root, keep={b.path})
    assert removed == [c.path]
    assert os.path.isdir(b.path) and outside.is_dir()
    assert branches(repo) == ["scout/b"]
    assert sh(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    with pytest.raises(WorkspaceError):
        wsm.discard(wsm.Workspace("worktree", str(repo), b.git_dir, str(repo), "main", "x"), root)


def test_a_folder_deleted_by_hand_is_a_clear_error(repo: Path, root: str) -> None:
    import shutil

    ws = made(repo, root, "s")
    shutil.rmtree(ws.path)
    problem = wsm.missing_problem(ws)
    assert problem is not None and problem.code == "workspace_missing" and ws.path in problem.message
    with pytest.raises(WorkspaceError) as err:
        wsm.ensure(ws, root)
    assert err.value.code == "workspace_missing"
    wsm.discard(ws, root)
    assert wsm.missing_problem(ws) is None and wsm.ensure(ws, root)  # fresh again


def test_concurrent_worktrees_of_one_repository(repo: Path, root: str) -> None:
    errors: list[BaseException] = []

    def make(i: int) -> None:
        try:
            ws = made(repo, root, f"s{i}")
            (Path(ws.path) / f"f{i}.txt").write_text(f"{i}\n")
            if i % 2:
                wsm.discard(ws, root)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert branches(repo) == ["scout/s0", "scout/s2", "scout/s4", "scout/s6"]
