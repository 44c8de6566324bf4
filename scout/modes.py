"""Modes: named profiles of how Claude Code may work (prompt, tools, permissions, model).

Built-in modes can be overridden, and new ones added, from a TOML file
(SCOUT_MODES_FILE), one table per mode:

    [modes.Review]
    description = "Reads code and comments on it"
    prompt = "Review the code you are shown."
    allowed_tools = ["Read", "Grep", "Glob"]
    disallowed_tools = ["Bash"]
    approval_tools = ["Write"]      # asked of a person over HTTP
    permission_mode = "default"     # default | acceptEdits | plan | bypassPermissions | dontAsk
    model = "claude-sonnet-4-5"
    max_turns = 20
    sandbox = "auto"                # auto | required | off: Bash in the OS sandbox (scout/sandbox.py)
    sandbox_writes = "cwd"          # cwd | temp: where sandboxed commands may write
    allowed_domains = ["pypi.org"]  # network for sandboxed commands (none by default)
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from typing import Any

from .sandbox import SANDBOX_CHOICES, WRITE_CHOICES

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")
READ_TOOLS = ["Read", "Grep", "Glob", "LS", "WebFetch", "WebSearch", "TodoWrite", "Task"]


@dataclass
class Mode:
    name: str
    description: str = ""
    prompt: str = ""
    allowed_tools: list[str] = field(default_factory=list)
    disallowed_tools: list[str] = field(default_factory=list)
    approval_tools: list[str] = field(default_factory=list)
    permission_mode: str = "default"
    model: str | None = None
    max_turns: int | None = None
    sandbox: str = "auto"
    sandbox_writes: str = "cwd"
    allowed_domains: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BUILTIN = {
    "Scout": Mode(
        "Scout", "Investigates and answers: reads, searches and runs commands, edits nothing.",
        prompt="You are Scout. Investigate the question with the tools you have and answer it. "
               "Do not modify files.",
        allowed_tools=READ_TOOLS + ["Bash"],
        disallowed_tools=["Edit", "Write", "NotebookEdit"], sandbox_writes="temp"),
    "Plan": Mode(
        "Plan", "Plans only: Claude Code's plan permission mode, no changes are made.",
        prompt="Make a plan for the request; do not carry it out.",
        allowed_tools=list(READ_TOOLS), permission_mode="plan", sandbox_writes="temp"),
    "Code": Mode(
        "Code", "May edit files under the working directory (acceptEdits) and run commands.",
        prompt="You may edit files in the working directory to carry out the request.",
        allowed_tools=READ_TOOLS + ["Bash", "Edit", "Write", "NotebookEdit"],
        permission_mode="acceptEdits"),
}
DEFAULT_MODE = "Scout"


class ModeError(ValueError):
    """The modes file is unreadable or describes a mode Scout cannot run."""


def load_modes(path: str | None = None) -> dict[str, Mode]:
    """The built-in modes, overridden and extended by the TOML file at `path`."""
    modes = {name: Mode(**m.to_dict()) for name, m in BUILTIN.items()}
    if not path:
        return modes
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModeError(f"cannot read modes file {path}: {exc}") from exc
    known = set(Mode.__dataclass_fields__) - {"name"}
    for name, table in (data.get("modes") or {}).items():
        if not isinstance(table, dict):
            raise ModeError(f"mode {name!r} must be a table")
        unknown = set(table) - known
        if unknown:
            raise ModeError(f"mode {name!r} has unknown keys: {', '.join(sorted(unknown))}")
        base = modes.get(name, Mode(name)).to_dict()
        base.update(table)
        mode = Mode(**base)
        if mode.permission_mode not in PERMISSION_MODES:
            raise ModeError(f"mode {name!r}: permission_mode must be one of {', '.join(PERMISSION_MODES)}")
        if mode.sandbox not in SANDBOX_CHOICES:
            raise ModeError(f"mode {name!r}: sandbox must be one of {', '.join(SANDBOX_CHOICES)}")
        if mode.sandbox_writes not in WRITE_CHOICES:
            raise ModeError(f"mode {name!r}: sandbox_writes must be one of {', '.join(WRITE_CHOICES)}")
        if not isinstance(mode.allowed_domains, list) or not all(isinstance(d, str) for d in mode.allowed_domains):
            raise ModeError(f"mode {name!r}: allowed_domains must be a list of domain names")
        modes[name] = mode
    return modes
