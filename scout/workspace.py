"""Workspaces: where a task's files are. All of Scout's git lives here.

A session runs either in its `cwd` itself (`shared`) or in a git worktree of its own
(`worktree`): a branch `scout/<session>` checked out in a folder under SCOUT_WORKTREES, so
parallel coding sessions never write into each other's files or into the user's checkout.
This module makes those worktrees, says what changed in them (per task, against where the
worktree stood when the task began; per session, against the commit it was made from),
merges them back into the user's branch, and removes them.

Used by the server (POST /chat, changes, merge, discard, start-up prune), the worker (make
the worktree, snapshot it when a task begins, log a task's changes when it ends) and the
supervisor (log the changes of a task it ends by force). Git is run with an argument list,
never a shell, with GIT_TERMINAL_PROMPT=0 and without the caller's GIT_* variables.
Operations that write a repository's shared state (refs, the worktree list, the user's
index) hold a per-repository lock file (flock) under SCOUT_WORKTREES/.locks, so the
server's threads and the workers' processes never trip over git's own lock files.

The user's checkout is only ever written by a successful merge, and then only as
`git merge` would (index, files, the branch ref); everything that can fail is decided
first with plumbing that writes objects only (`git merge-tree --write-tree`).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from .validate import ApiError

SHARED, WORKTREE, AUTO = "shared", "worktree", "auto"
KINDS = (SHARED, WORKTREE, AUTO)
BRANCH_PREFIX = "scout/"
LOCKS = ".locks"
GIT_TIMEOUT = 600.0  # a checkout of a very large repository can take minutes
CHANGES_EVENT = "changes"


class WorkspaceError(ApiError):
    """A workspace operation that cannot be done; carries its HTTP status, code and details."""


class GitError(WorkspaceError):
    """git itself failed in a way Scout did not expect."""

    def __init__(self, args: list[str], code: int, stderr: str):
        super().__init__(500, "git_failed", f"git {' '.join(args[:3])} failed ({code}): {stderr.strip()[:800]}")


@dataclass
class Workspace:
    """Where a session's tasks run. `shared` has only `kind`; `worktree` has the rest.

    repo: the top level of the user's checkout that held `cwd`; git_dir: its common git
    directory (the lock's key); path: the worktree folder; branch: `scout/<session>`;
    base_commit: the commit the session's changes are counted from (where the worktree was
    made, then what the latest merge took); target_branch: the branch the user's checkout
    had when the worktree was made (the one merge goes into), None if HEAD was detached.
    base_commit is None after a discard: the next message makes a fresh worktree.
    """

    kind: str = SHARED
    repo: str | None = None
    git_dir: str | None = None
    path: str | None = None
    branch: str | None = None
    base_commit: str | None = None
    target_branch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Workspace":
        if not data:
            return cls()
        return cls(kind=str(data.get("kind") or SHARED),
                   **{k: data.get(k) for k in cls.__dataclass_fields__ if k != "kind"})

    def public(self) -> dict[str, Any]:
        """The `workspace` of the status and session documents."""
        if self.kind != WORKTREE:
            return {"kind": SHARED}
        return {"kind": WORKTREE, "repo": self.repo, "path": self.path, "branch": self.branch,
                "base_commit": self.base_commit,
                "target_branch": _short(self.target_branch) if self.target_branch else None}


@dataclass
class FileChange:
    path: str
    status: str  # added | modified | deleted | type_changed
    additions: int = 0
    deletions: int = 0
    binary: bool = False


@dataclass
class Changes:
    """What changed between two trees: the payload of a `changes` event and of GET .../changes."""

    files: list[FileChange] = field(default_factory=list)

    @property
    def additions(self) -> int:
        return sum(f.additions for f in self.files)

    @property
    def deletions(self) -> int:
        return sum(f.deletions for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"files": [asdict(f) for f in self.files], "additions": self.additions,
                "deletions": self.deletions}


@dataclass
class MergeResult:
    commit: str
    files: list[FileChange]
    base_commit: str  # the session's new base: what was merged

    def to_dict(self) -> dict[str, Any]:
        return {"merged": True, "commit": self.commit, "files": [asdict(f) for f in self.files]}


# -- running git -----------------------------------------------------------------------

def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    env.update(extra or {})
    return env


def git(args: list[str], cwd: str, *, env: dict[str, str] | None = None, check: bool = True,
        stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """Run `git -C cwd args...`: no shell, no prompt, no automatic gc; raise GitError if check."""
    cmd = ["git", "-C", cwd, "-c", "gc.auto=0", "-c", "core.quotepath=off", *args]
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, env=_env(env), timeout=GIT_TIMEOUT,
                              stdin=None if stdin is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise WorkspaceError(500, "git_missing", "git is not installed (not found on PATH)") from None
    except subprocess.TimeoutExpired:
        raise WorkspaceError(500, "git_failed",
                             f"git {' '.join(args[:2])} took longer than {GIT_TIMEOUT:g} s") from None
    if check and proc.returncode != 0:
        raise GitError(args, proc.returncode, proc.stderr.decode("utf-8", "replace"))
    return proc


def _out(args: list[str], cwd: str, **kw: Any) -> str:
    return git(args, cwd, **kw).stdout.decode("utf-8", "surrogateescape").strip()


def _ok(args: list[str], cwd: str) -> bool:
    return git(args, cwd, check=False).returncode == 0


def _short(ref: str) -> str:
    return ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref


@contextlib.contextmanager
def repo_lock(root: str, git_dir: str) -> Iterator[None]:
    """Serialise writes to one repository's shared state, across threads and processes."""
    folder = os.path.join(root, LOCKS)
    os.makedirs(folder, exist_ok=True)
    key = hashlib.sha256(os.path.realpath(git_dir).encode()).hexdigest()[:24]
    fd = os.open(os.path.join(folder, key + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


# -- choosing a workspace ----------------------------------------------------------------

@dataclass
class RepoInfo:
    top: str
    git_dir: str
    head: str | None  # None: no commit yet
    head_ref: str | None  # refs/heads/<branch>, None when detached


def probe(cwd: str) -> RepoInfo | None:
    """The git work tree holding cwd, or None if cwd is not inside one."""
    proc = git(["rev-parse", "--show-toplevel", "--git-common-dir", "HEAD", "--symbolic-full-name", "HEAD"],
               cwd, check=False)
    lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
    if len(lines) < 2 or not lines[0]:
        return None  # not a repository, or inside .git / a bare one
    top, git_dir = os.path.realpath(lines[0]), os.path.realpath(os.path.join(cwd, lines[1]))
    if proc.returncode != 0 or len(lines) < 4:
        return RepoInfo(top, git_dir, None, None)
    return RepoInfo(top, git_dir, lines[2], lines[3] if lines[3].startswith("refs/heads/") else None)


def slug(session_id: str) -> str:
    """A session id as a folder and branch name git accepts; ids that need changing get a
    hash of the original appended, so two ids never share a worktree."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*", session_id) \
            and not session_id.endswith(".lock"):
        return session_id
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", session_id).strip("_-") or "session"
    return f"{clean[:100]}-{hashlib.sha256(session_id.encode()).hexdigest()[:10]}"


def plan(cwd: str, session_id: str, root: str, base: str | None = None) -> Workspace:
    """A new worktree workspace for a session whose cwd is `cwd` (not made yet: the worker
    makes it when the task starts). 400 not_a_git_repo / invalid_base."""
    info = probe(cwd)
    if info is None:
        raise WorkspaceError(400, "not_a_git_repo",
                             f"cwd {cwd} is not inside a git work tree; use workspace 'shared' or 'auto'")
    commit = info.head
    if base is not None:
        if base.startswith("-") or len(base) > 256 or not base.isprintable() or any(c.isspace() for c in base):
            raise WorkspaceError(400, "invalid_base", f"'base' is not a commit-ish: {base[:100]!r}")
        proc = git(["rev-parse", "--verify", "--quiet", "--end-of-options", base + "^{commit}"], info.top, check=False)
        commit = proc.stdout.decode().strip() if proc.returncode == 0 else None
        if not commit:
            raise WorkspaceError(400, "invalid_base", f"'base' {base[:100]!r} names no commit in {info.top}")
    if commit is None:
        raise WorkspaceError(400, "invalid_base",
                             f"the repository {info.top} has no commit yet to start a worktree from")
    name = slug(session_id)
    return Workspace(WORKTREE, info.top, info.git_dir, os.path.join(os.path.abspath(root), name),
                     BRANCH_PREFIX + name, commit, info.head_ref)


def run_dir(ws: Workspace, cwd: str) -> str:
    """Where a task whose cwd is `cwd` runs: cwd itself, or the same relative path in the worktree."""
    if ws.kind != WORKTREE:
        return cwd
    assert ws.repo and ws.path
    for top in (ws.path, ws.repo):
        if cwd == top or cwd.startswith(top.rstrip(os.sep) + os.sep):
            return os.path.join(ws.path, os.path.relpath(cwd, top)) if cwd != top else ws.path
    return ws.path


def contains(ws: Workspace, cwd: str) -> bool:
    """Is cwd inside the session's repository (or its worktree)?"""
    tops = [top for top in (ws.repo, ws.path) if top]
    return any(cwd == top or cwd.startswith(top.rstrip(os.sep) + os.sep) for top in tops)


# -- the worktree's life -----------------------------------------------------------------

def branch_exists(ws: Workspace) -> bool:
    assert ws.git_dir and ws.branch
    return _ok(["rev-parse", "--verify", "--quiet", f"refs/heads/{ws.branch}"], ws.git_dir)


def missing_problem(ws: Workspace) -> WorkspaceError | None:
    """The error for a worktree that was made and whose folder is gone (deleted by hand)."""
    if ws.kind != WORKTREE or not ws.base_commit or os.path.isdir(ws.path or ""):
        return None
    if not os.path.isdir(ws.git_dir or "") or branch_exists(ws):
        return WorkspaceError(409, "workspace_missing",
                              f"the worktree folder {ws.path} of this session is gone (deleted by hand?); "
                              "discard the workspace (POST /sessions/{id}/discard) to start a fresh one")
    return None


def ensure(ws: Workspace, root: str) -> bool:
    """Make the worktree if it is not there yet; True if it was made now."""
    assert ws.kind == WORKTREE and ws.path and ws.git_dir and ws.branch and ws.base_commit
    if os.path.isfile(os.path.join(ws.path, ".git")):
        return False
    problem = missing_problem(ws)
    if problem is not None:
        raise problem
    if os.path.exists(ws.path):
        raise WorkspaceError(409, "workspace_missing", f"{ws.path} exists but is not this session's worktree")
    os.makedirs(os.path.dirname(ws.path), exist_ok=True)
    with repo_lock(root, ws.git_dir):
        git(["worktree", "add", "--quiet", "-b", ws.branch, ws.path, ws.base_commit], ws.git_dir)
    return True


def discard(ws: Workspace, root: str) -> bool:
    """Remove the worktree folder and its branch; True if anything was there. Touches
    nothing outside `root` and no branch outside scout/."""
    assert ws.path and ws.branch
    inside = os.path.realpath(ws.path).startswith(os.path.realpath(root) + os.sep)
    if not inside or not ws.branch.startswith(BRANCH_PREFIX):
        raise WorkspaceError(500, "unsafe_workspace", f"refusing to remove {ws.path} / {ws.branch}: not Scout's")
    return _remove(ws.path, ws.git_dir, f"refs/heads/{ws.branch}", root)


def _remove(path: str, git_dir: str | None, branch_ref: str | None, root: str) -> bool:
    existed = os.path.lexists(path)
    repo_alive = bool(git_dir) and os.path.isdir(git_dir or "")
    if not repo_alive:  # the repository itself is gone: only our folder is left to remove
        shutil.rmtree(path, ignore_errors=True)
        return existed
    assert git_dir
    with repo_lock(root, git_dir):
        if existed and not _ok(["worktree", "remove", "--force", "--force", path], git_dir):
            shutil.rmtree(path, ignore_errors=True)  # not registered (any more): just our folder
        git(["worktree", "prune"], git_dir, check=False)
        if branch_ref and branch_ref.startswith("refs/heads/" + BRANCH_PREFIX):
            if _ok(["rev-parse", "--verify", "--quiet", branch_ref], git_dir):
                git(["update-ref", "-d", branch_ref], git_dir)
                existed = True
    return existed


def prune_orphans(root: str, keep: set[str]) -> list[str]:
    """Remove the worktrees under `root` that no session refers to (paths in `keep` stay).
    Only folders that are git worktrees are touched; returns the paths removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return removed
    keep = {os.path.realpath(p) for p in keep}
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False) \
                or os.path.realpath(entry.path) in keep:
            continue
        admin = _admin_dir(entry.path)
        if admin is None:
            continue  # not a worktree: not ours to judge
        git_dir = _read(os.path.join(admin, "commondir"))
        git_dir = os.path.realpath(os.path.join(admin, git_dir)) if git_dir else None
        head = _read(os.path.join(admin, "HEAD")) or ""
        ref = head[5:].strip() if head.startswith("ref: ") else None
        try:
            _remove(entry.path, git_dir, ref, root)
            removed.append(entry.path)
        except WorkspaceError as exc:
            print(f"scout: cannot prune worktree {entry.path}: {exc.message}", file=sys.stderr)
    return removed


def _admin_dir(path: str) -> str | None:
    """A worktree's administrative folder (in the main repository), from its `.git` file."""
    text = _read(os.path.join(path, ".git"))
    if not text or not text.startswith("gitdir: "):
        return None
    return os.path.realpath(os.path.join(path, text[len("gitdir: "):].strip()))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read().strip()
    except OSError:
        return None


# -- what changed ------------------------------------------------------------------------

def snapshot(path: str) -> str:
    """The worktree's files as a tree object (tracked and new untracked files, .gitignore
    respected), made in a temporary copy of its index: nothing of the worktree changes."""
    index = _out(["rev-parse", "--path-format=absolute", "--git-path", "index"], path)
    with tempfile.TemporaryDirectory(prefix="scout-index-") as tmp:
        temp_index = os.path.join(tmp, "index")
        if os.path.exists(index):
            shutil.copyfile(index, temp_index)  # keeps the stat data: only changed files are hashed
        env = {"GIT_INDEX_FILE": temp_index}
        git(["add", "--all", "--ignore-errors", "--", "."], path, env=env, check=False)
        return _out(["write-tree"], path, env=env)


_STATUS = {"A": "added", "M": "modified", "D": "deleted", "T": "type_changed"}


def diff(cwd: str, old: str, new: str) -> Changes:
    """The files that differ between two trees or commits, with line counts (binary marked)."""
    raw = git(["diff-tree", "-r", "-z", "--no-renames", "--raw", "--numstat", old, new], cwd).stdout
    parts = raw.decode("utf-8", "surrogateescape").split("\0")
    statuses: dict[str, str] = {}
    files: list[FileChange] = []
    i = 0
    while i < len(parts):
        part = parts[i]
        if part.startswith(":"):  # ":100644 100644 <old> <new> M" then the path
            statuses[parts[i + 1]] = _STATUS.get(part.split()[-1][:1], "modified")
            i += 2
        elif _is_numstat(part):  # "<added>\t<deleted>\t<path>" (numstat with -z; the path may hold tabs)
            added, deleted, path = part.split("\t", 2)
            binary = added == "-"
            files.append(FileChange(path, statuses.get(path, "modified"), 0 if binary else int(added),
                                    0 if binary else int(deleted), binary))
            i += 1
        else:
            i += 1
    return Changes(files)


def _is_numstat(part: str) -> bool:
    fields = part.split("\t", 2)
    return len(fields) == 3 and all(f.isdigit() or f == "-" for f in fields[:2])


def patch(cwd: str, old: str, new: str) -> str:
    """The unified diff between two trees or commits (binary files named, not included)."""
    return git(["diff-tree", "-r", "-p", "--no-renames", "--no-color", "--no-ext-diff", old, new],
               cwd).stdout.decode("utf-8", "replace")


def session_changes(ws: Workspace) -> Changes:
    require_worktree(ws)
    assert ws.path and ws.base_commit
    return diff(ws.path, ws.base_commit, snapshot(ws.path))


def session_patch(ws: Workspace) -> str:
    require_worktree(ws)
    assert ws.path and ws.base_commit
    return patch(ws.path, ws.base_commit, snapshot(ws.path))


def require_worktree(ws: Workspace) -> None:
    """409 unless the session has a worktree that exists now."""
    if ws.kind != WORKTREE:
        raise WorkspaceError(409, "no_worktree",
                             "this session runs in its cwd (workspace 'shared'): it has no worktree")
    problem = missing_problem(ws)
    if problem is not None:
        raise problem
    if not ws.base_commit or not os.path.isdir(ws.path or ""):
        raise WorkspaceError(409, "no_worktree", "this session has no worktree yet: its next task makes one")


# -- merge -------------------------------------------------------------------------------

def merge(ws: Workspace, root: str, session_id: str, message: str | None = None,
          squash: bool = False) -> MergeResult:
    """Commit what is uncommitted in the worktree to its branch, then merge the branch into
    the branch the user's checkout had, if the checkout is still on it and clean.

    Everything that can fail (target moved or dirty, conflicts) is found before the user's
    checkout is written; its index, files and HEAD change only on success.
    """
    require_worktree(ws)
    assert ws.path and ws.git_dir and ws.repo and ws.branch
    if not ws.target_branch:
        raise WorkspaceError(409, "target_moved", f"{ws.repo} had no branch checked out (detached HEAD) when the "
                             f"worktree was made; merge {ws.branch} yourself")
    ident = _identity(ws.repo)
    with repo_lock(root, ws.git_dir):
        target_head = _checked_out(ws)
        tip = _out(["rev-parse", "--verify", "HEAD^{commit}"], ws.path)
        head = _commit_uncommitted(ws, tip, message or f"Scout session {session_id}", ident)
        if _ok(["merge-base", "--is-ancestor", head, target_head], ws.git_dir):
            return MergeResult(target_head, [], head)  # nothing new: already merged
        new = _merge_commit(ws, target_head, head, session_id, message, squash, ident)
        _apply(ws, target_head, new, session_id)
        if head != tip:  # only now, after success, does the worktree's branch take the commit
            git(["update-ref", "-m", "scout: commit the session's changes", f"refs/heads/{ws.branch}", head, tip],
                ws.path)
            git(["reset", "--quiet"], ws.path)  # its index follows its HEAD; no file changes
        return MergeResult(new, diff(ws.git_dir, target_head, new).files, head)


def _identity(repo: str) -> dict[str, str]:
    """The committer git would use there; Scout's own when the user has none configured."""
    if _ok(["var", "GIT_COMMITTER_IDENT"], repo) and _ok(["var", "GIT_AUTHOR_IDENT"], repo):
        return {}
    return {"GIT_AUTHOR_NAME": "Scout", "GIT_AUTHOR_EMAIL": "scout@localhost",
            "GIT_COMMITTER_NAME": "Scout", "GIT_COMMITTER_EMAIL": "scout@localhost"}


def _commit_uncommitted(ws: Workspace, tip: str, message: str, ident: dict[str, str]) -> str:
    """A commit of the worktree's files on top of its branch's tip (plumbing: no hooks), or the
    tip if nothing is uncommitted. Not on the branch yet: a merge that fails leaves no trace."""
    assert ws.path
    tree = snapshot(ws.path)
    if tree == _out(["rev-parse", f"{tip}^{{tree}}"], ws.path):
        return tip
    return _out(["commit-tree", tree, "-p", tip, "-F", "-"], ws.path, env=ident, stdin=message.encode())


def _checked_out(ws: Workspace) -> str:
    """The target branch's commit, if the user's checkout is still on it with clean tracked files."""
    assert ws.repo and ws.target_branch
    current = git(["symbolic-ref", "--quiet", "HEAD"], ws.repo, check=False).stdout.decode().strip()
    if current != ws.target_branch:
        raise WorkspaceError(409, "target_moved",
                             f"{ws.repo} is on {_short(current) if current else 'a detached HEAD'}, not on "
                             f"{_short(ws.target_branch)} as when the worktree was made; switch back to merge")
    # GIT_OPTIONAL_LOCKS=0: status must not refresh (rewrite) the user's index.
    out = git(["status", "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=none"], ws.repo,
              env={"GIT_OPTIONAL_LOCKS": "0"}).stdout.decode("utf-8", "surrogateescape")
    dirty = [entry[3:] for entry in out.split("\0") if len(entry) > 3]
    if dirty:
        raise WorkspaceError(409, "target_dirty", f"{ws.repo} has uncommitted changes to tracked files: "
                             f"{', '.join(dirty[:10])}{' …' if len(dirty) > 10 else ''}", details={"paths": dirty})
    return _out(["rev-parse", "--verify", ws.target_branch + "^{commit}"], ws.repo)


def _merge_commit(ws: Workspace, target: str, head: str, session_id: str, message: str | None,
                  squash: bool, ident: dict[str, str]) -> str:
    """The commit the target branch moves to: the branch tip (fast-forward), or a merge or
    squash commit made with `git merge-tree --write-tree` (objects only, no checkout)."""
    assert ws.git_dir and ws.branch
    if not squash and _ok(["merge-base", "--is-ancestor", target, head], ws.git_dir):
        return head
    proc = git(["merge-tree", "--write-tree", "--name-only", "-z", "--no-messages", target, head],
               ws.git_dir, check=False)
    fields = proc.stdout.decode("utf-8", "surrogateescape").split("\0")
    if proc.returncode == 1:
        paths = sorted({p for p in fields[1:] if p})
        raise WorkspaceError(409, "merge_conflict",
                             f"merging {ws.branch} into {_short(ws.target_branch or '')} conflicts in: "
                             f"{', '.join(paths[:10])}{' …' if len(paths) > 10 else ''}", details={"paths": paths})
    if proc.returncode != 0:
        raise GitError(["merge-tree"], proc.returncode, proc.stderr.decode("utf-8", "replace"))
    tree = fields[0].strip()
    if squash:
        text, parents = message or f"Scout session {session_id}", ["-p", target]
    else:
        text, parents = message or f"Merge {ws.branch} (Scout session {session_id})", ["-p", target, "-p", head]
    return _out(["commit-tree", tree, *parents, "-F", "-"], ws.git_dir, env=ident, stdin=text.encode())


def _apply(ws: Workspace, old: str, new: str, session_id: str) -> None:
    """Move the user's checkout from `old` to `new` as a fast-forward would: files and
    index first (read-tree refuses, changing nothing, if that would overwrite untracked
    files), then the branch ref, compare-and-swap; if the ref moved meanwhile, undo."""
    assert ws.repo and ws.target_branch
    proc = git(["read-tree", "-m", "-u", old, new], ws.repo, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.decode("utf-8", "replace").strip()
        raise WorkspaceError(409, "target_dirty", f"{ws.repo} cannot take the merge: {reason[:800]}")
    moved = git(["update-ref", "-m", f"scout: merge session {session_id}", ws.target_branch, new, old],
                ws.repo, check=False)
    if moved.returncode != 0:
        git(["read-tree", "-m", "-u", new, old], ws.repo, check=False)
        raise WorkspaceError(409, "target_moved",
                             f"{_short(ws.target_branch)} moved during the merge; nothing was changed")


# -- tasks in a worktree (the worker, and the supervisor for endings by force) -------------

def begin_task(store: Any, task: Any, root: str) -> str:
    """Make the task's worktree if needed, remember its tree as the task's starting point,
    and return the directory the task runs in (the same relative path as its cwd)."""
    ws = Workspace.from_dict(task.options.get("workspace"))
    cwd = task.options.get("cwd") or ""
    if ws.kind != WORKTREE:
        return cwd
    ensure(ws, root)
    store.set_workspace_start(task.id, snapshot(ws.path or ""))
    where = run_dir(ws, cwd)
    os.makedirs(where, exist_ok=True)  # a folder git does not track (empty, or untracked in the checkout)
    return where


def log_task_changes(store: Any, task_id: str) -> Changes | None:
    """Log a `changes` event for a worktree task that began and has none yet (any ending:
    the worker's own, or a stop, a limit, a lost worker). Never raises: a task's ending
    must not wait on git."""
    try:
        task = store.get_task(task_id)
        if task is None or not task.workspace_start or store.has_event(task_id, CHANGES_EVENT):
            return None
        ws = Workspace.from_dict(task.options.get("workspace"))
        if ws.kind != WORKTREE or not os.path.isdir(ws.path or ""):
            return None
        changes = diff(ws.path or "", task.workspace_start, snapshot(ws.path or ""))
        store.append_event(task_id, CHANGES_EVENT, changes.to_dict())
        return changes
    except Exception as exc:  # noqa: BLE001 - logged, the ending goes on
        print(f"scout: cannot log the changes of task {task_id}: {exc}", file=sys.stderr, flush=True)
        return None
