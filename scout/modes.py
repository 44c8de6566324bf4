"""Modes: named profiles of how Claude Code may work (prompt, tools, permissions, model).

Built-in modes can be overridden, and new ones added, from a TOML file
(SCOUT_MODES_FILE), one table per mode:

    [modes.Review]
    description = "Reads code and comments on it"
    prompt = "Review the code you are shown."
    allowed_tools = ["Read", "Grep", "Glob"]
    disallowed_tools = ["Bash"]
    approval_tools = ["Write"]      # asked of a person over HTTP, on every use
    auto_approve_read_only = false  # true: Claude Code's read-only Bash commands are not asked
    permission_mode = "default"     # default | acceptEdits | plan | bypassPermissions | dontAsk
    model = "claude-sonnet-4-5"
    max_turns = 20
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from typing import Any

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
    # False: every use of an approval tool is asked of a person, even a Bash command Claude
    # Code takes for read-only (`ls`), which it would otherwise approve on its own.
    auto_approve_read_only: bool = False
    permission_mode: str = "default"
    model: str | None = None
    max_turns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BUILTIN = {
    "Scout": Mode(
        "Scout", "Investigates and answers: reads, searches and runs commands, edits nothing.",
        prompt="You are Scout. Investigate the question with the tools you have and answer it. "
               "Do not modify files.",
        allowed_tools=READ_TOOLS + ["Bash"],
        disallowed_tools=["Edit", "Write", "NotebookEdit"]),
    "Plan": Mode(
        "Plan", "Plans only: Claude Code's plan permission mode, no changes are made.",
        prompt="Make a plan for the request; do not carry it out.",
        allowed_tools=list(READ_TOOLS), permission_mode="plan"),
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
        if not isinstance(mode.auto_approve_read_only, bool):
            raise ModeError(f"mode {name!r}: auto_approve_read_only must be true or false")
        if mode.permission_mode not in PERMISSION_MODES:
            raise ModeError(f"mode {name!r}: permission_mode must be one of {', '.join(PERMISSION_MODES)}")
        modes[name] = mode
    return modes
