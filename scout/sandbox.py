"""The OS sandbox for a task's Bash commands: whether one works here, and its settings.

Scout does not build a sandbox of its own: it turns on Claude Code's (the SDK's ``sandbox``
option), which on Linux runs every Bash command under bubblewrap, with a network proxy
(socat) that lets through only the domains allowed. What a mode may write is decided here:

- ``temp`` (Scout, Plan): only the task's private temporary folder (CLAUDE_CODE_TMPDIR,
  created by the worker for the task alone); the working directory is read-only.
- ``cwd`` (Code): the working directory and the private temporary folder.

No mode can read Scout's own data directory (the database, the workers' logs), and network
for sandboxed commands is limited to the mode's ``allowed_domains`` (none by default). The
one exception is the task's own git worktree, which lives under SCOUT_WORKTREES, by default
inside the data directory (``open_to``).

Used by the server (the probe, for /health and to decide ``sandboxed`` when a task is
created) and by the worker (the settings handed to Claude Code); no process state here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from typing import Any

SANDBOX_CHOICES = ("auto", "required", "off")
WRITE_CHOICES = ("temp", "cwd")

# Claude Code's Linux sandbox keeps some files of a writable directory read-only (shell and
# git configs, .mcp.json, much of .claude/; the list changes with the CLI). Where one is
# missing it makes an empty read-only file to mount over and removes it when the command
# ends; a command killed midway leaves them behind (claude-code issues 17087, 83497), where a
# worktree's changes would count them and a merge would take them. They are only ever at
# the top of the directory or in its .claude folder.
PLACEHOLDER_DIRS = ("", ".claude")


@dataclass(frozen=True)
class Probe:
    """Whether Claude Code's sandbox can run on this machine, and if not, why."""

    available: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"available": self.available, **({"error": self.error} if self.error else {})}


def probe() -> Probe:
    """bubblewrap and socat on PATH, and bubblewrap able to make its namespaces (it cannot in
    some containers, where user namespaces are off)."""
    missing = [name for name, exe in (("bubblewrap", "bwrap"), ("socat", "socat")) if not shutil.which(exe)]
    if missing:
        return Probe(False, f"not installed: {', '.join(missing)} (apt-get install bubblewrap socat)")
    try:
        run = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                              "--unshare-all", "--die-with-parent", "true"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(False, f"bubblewrap does not run: {exc}")
    if run.returncode != 0:
        return Probe(False, f"bubblewrap cannot create its namespaces: {run.stderr.strip()[:300]}")
    return Probe(True)


def settings(cwd: str, writes: str, private_dirs: list[str], allowed_domains: list[str],
             ask_for_bash: bool, worktree: str | None = None) -> dict[str, Any]:
    """Claude Code's ``sandbox`` settings for one task. Commands may never leave the sandbox
    (allowUnsandboxedCommands false), and a sandbox that cannot start fails the task instead
    of letting commands run without it (failIfUnavailable). A task in a git worktree owns
    the whole worktree, not only its cwd inside it: `cwd` writes may go anywhere in it,
    `temp` writes nowhere in it."""
    filesystem: dict[str, Any] = {"denyRead": list(private_dirs), "denyWrite": list(private_dirs)}
    if writes == "temp":
        filesystem["denyWrite"].append(worktree or cwd)
    elif worktree and worktree != cwd:
        filesystem["allowWrite"] = [worktree]
    return {
        "enabled": True,
        "failIfUnavailable": True,
        "allowUnsandboxedCommands": False,
        # A mode that asks a person before Bash keeps asking, sandbox or not.
        "autoAllowBashIfSandboxed": not ask_for_bash,
        "filesystem": filesystem,
        "network": {"allowedDomains": list(allowed_domains)},
    }


def read_denials(private_dirs: list[str]) -> list[str]:
    """Permission rules that keep Claude Code's own Read/Grep/Glob tools out of `private_dirs`
    (the sandbox covers Bash only). ``//`` starts an absolute path in a rule."""
    rules = []
    for path in private_dirs:
        for tool in ("Read", "Grep", "Glob", "Edit", "Write"):
            rules.append(f"{tool}(/{path.rstrip('/')}/**)")
    return rules


def open_to(private_dirs: list[str], keep: str | None) -> list[str]:
    """`private_dirs` with `keep` (a task's worktree) left open. Neither the sandbox's nor the
    permission rules' denials can be reopened below them, so a private directory holding
    `keep` is replaced by its entries that do not lead to it, level by level down to `keep`
    (other sessions' worktrees and the lock files stay closed). What appears there after
    the task starts is not covered; the database and the logs are there from the start."""
    if not keep:
        return list(private_dirs)
    keep = os.path.abspath(keep)
    out: list[str] = []
    for top in private_dirs:
        top = os.path.abspath(top)
        if not keep.startswith(top.rstrip(os.sep) + os.sep):
            out.append(top)
            continue
        while top != keep:
            step = os.path.join(top, os.path.relpath(keep, top).split(os.sep)[0])
            try:
                names = sorted(os.listdir(top))
            except OSError:
                names = []
            out.extend(path for path in (os.path.join(top, n) for n in names) if path != step)
            top = step
    return list(dict.fromkeys(out))


def sweep_placeholders(dirs: list[str], since: float) -> list[str]:
    """Remove the sandbox's leftover placeholders from `dirs` after a task's processes were
    killed: empty, read-only regular files made since `since` (the task's start), at the top
    or in .claude/ (then .claude itself if they were all it held). Returns what went."""
    gone = []
    for folder in dict.fromkeys(d for d in dirs if d):
        for sub in PLACEHOLDER_DIRS:
            where = os.path.join(folder, sub)
            try:
                names = os.listdir(where)
            except OSError:
                continue
            for name in names:
                path = os.path.join(where, name)
                with contextlib.suppress(OSError):
                    st = os.lstat(path)
                    if (stat.S_ISREG(st.st_mode) and st.st_size == 0 and not st.st_mode & 0o222
                            and st.st_mtime >= since):
                        os.unlink(path)
                        gone.append(path)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(folder, ".claude"))  # only when empty
    return gone
