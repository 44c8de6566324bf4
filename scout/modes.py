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
    sandbox = "auto"                # auto | required | off: Bash in the OS sandbox (scout/sandbox.py)
    sandbox_writes = "cwd"          # cwd | temp: where sandboxed commands may write
    allowed_domains = ["pypi.org"]  # network for sandboxed commands (none by default)
    workspace = "auto"              # shared | worktree | auto (a git worktree when cwd is in one)

    [modes.Review.mcp_servers.tracker]   # an MCP server Claude Code starts for the task (stdio)
    command = "/usr/local/bin/tracker-mcp"
    args = ["--read-only"]
    env = { TRACKER_TOKEN = "..." }

    [modes.Review.mcp_servers.docs]      # or one it reaches over HTTP (type = "sse" for old servers)
    url = "https://docs.example.com/mcp"
    headers = { Authorization = "Bearer ..." }

MCP servers come only from this file, the operator's: a client of the API cannot
add one (a server's command line is a way to run code). The tools of a mode's MCP
servers (`mcp__NAME__TOOL`) are allowed in that mode unless its tool rules say
otherwise: once allowed_tools, disallowed_tools or approval_tools name a server
(`mcp__NAME`, `mcp__NAME__*` or one of its tools), those rules alone decide for it.
The API shows a mode's server names only, never their commands, URLs or secrets.
"""
from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable

from .sandbox import SANDBOX_CHOICES, WRITE_CHOICES
from .workspace import KINDS as WORKSPACES

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")
READ_TOOLS = ["Read", "Grep", "Glob", "LS", "WebFetch", "WebSearch", "TodoWrite", "Task"]
MCP_TRANSPORTS = ("stdio", "http", "sse")
# Claude Code names a server's tools mcp__NAME__TOOL; other characters would be rewritten to `_`.
MCP_SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class McpServer:
    """One MCP server of a mode: a command Claude Code starts (stdio) or a URL (http, sse)."""

    type: str = "stdio"
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def sdk_config(self) -> dict[str, Any]:
        """The server as claude-agent-sdk's McpServerConfig (what ClaudeAgentOptions.mcp_servers takes)."""
        if self.type == "stdio":
            return {"type": "stdio", "command": self.command, "args": list(self.args), "env": dict(self.env)}
        return {"type": self.type, "url": self.url, "headers": dict(self.headers)}


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
    sandbox: str = "auto"
    sandbox_writes: str = "cwd"
    allowed_domains: list[str] = field(default_factory=list)
    workspace: str = "shared"  # where a session's first task runs: see scout/workspace.py
    mcp_servers: dict[str, McpServer] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The mode as the API shows it: its MCP servers by name only (their env and headers hold secrets)."""
        out = asdict(self)
        out["mcp_servers"] = sorted(self.mcp_servers)
        return out

    def sdk_mcp_servers(self) -> dict[str, dict[str, Any]]:
        return {name: server.sdk_config() for name, server in self.mcp_servers.items()}

    def tool_rules(self, allowed: list[str], disallowed: list[str]) -> list[str]:
        """`allowed` plus `mcp__NAME` for each of the mode's MCP servers no rule names."""
        named = [*allowed, *disallowed, *self.approval_tools]
        return [*allowed, *(f"mcp__{name}" for name in self.mcp_servers
                            if not any(_names_server(rule, name) for rule in named))]


def _names_server(rule: str, server: str) -> bool:
    return rule == f"mcp__{server}" or rule.startswith(f"mcp__{server}__")


def tool_matches(tool: str, rules: Iterable[str]) -> bool:
    """Whether a rule list covers `tool`: its own name, `*`, or for an MCP tool (mcp__NAME__TOOL)
    its server's `mcp__NAME` or `mcp__NAME__*`, as Claude Code reads its own rules."""
    server = "__".join(tool.split("__")[:2]) if tool.startswith("mcp__") else None
    return any(rule in (tool, "*") or (server is not None and rule in (server, server + "__*"))
               for rule in rules)


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
        permission_mode="acceptEdits", workspace="auto"),
}
DEFAULT_MODE = "Scout"


class ModeError(ValueError):
    """The modes file is unreadable or describes a mode Scout cannot run."""


def load_modes(path: str | None = None) -> dict[str, Mode]:
    """The built-in modes, overridden and extended by the TOML file at `path`."""
    modes = copy.deepcopy(BUILTIN)
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
        base = copy.deepcopy(modes.get(name, Mode(name))).__dict__
        base.update(table)
        if "mcp_servers" in table:
            base["mcp_servers"] = parse_mcp_servers(name, table["mcp_servers"])
        mode = Mode(**base)
        if not isinstance(mode.auto_approve_read_only, bool):
            raise ModeError(f"mode {name!r}: auto_approve_read_only must be true or false")
        if mode.permission_mode not in PERMISSION_MODES:
            raise ModeError(f"mode {name!r}: permission_mode must be one of {', '.join(PERMISSION_MODES)}")
        if mode.sandbox not in SANDBOX_CHOICES:
            raise ModeError(f"mode {name!r}: sandbox must be one of {', '.join(SANDBOX_CHOICES)}")
        if mode.sandbox_writes not in WRITE_CHOICES:
            raise ModeError(f"mode {name!r}: sandbox_writes must be one of {', '.join(WRITE_CHOICES)}")
        if not isinstance(mode.allowed_domains, list) or not all(isinstance(d, str) for d in mode.allowed_domains):
            raise ModeError(f"mode {name!r}: allowed_domains must be a list of domain names")
        if mode.workspace not in WORKSPACES:
            raise ModeError(f"mode {name!r}: workspace must be one of {', '.join(WORKSPACES)}")
        modes[name] = mode
    return modes


def parse_mcp_servers(mode: str, tables: Any) -> dict[str, McpServer]:
    """`[modes.X.mcp_servers.NAME]` tables as McpServer values; ModeError names what is wrong."""
    if not isinstance(tables, dict):
        raise ModeError(f"mode {mode!r}: mcp_servers must be a table of servers")
    return {name: _parse_mcp_server(f"mode {mode!r}, MCP server {name!r}", name, table)
            for name, table in tables.items()}


def _parse_mcp_server(where: str, name: str, table: Any) -> McpServer:
    if not MCP_SERVER_NAME.match(name):
        raise ModeError(f"{where}: a server name is 1-64 letters, digits, '_' or '-'")
    if not isinstance(table, dict):
        raise ModeError(f"{where} must be a table")
    unknown = set(table) - {f.name for f in fields(McpServer)}
    if unknown:
        raise ModeError(f"{where} has unknown keys: {', '.join(sorted(unknown))}")
    kind = table.get("type") or ("stdio" if "command" in table else "http")
    if kind not in MCP_TRANSPORTS:
        raise ModeError(f"{where}: type must be one of {', '.join(MCP_TRANSPORTS)}")
    wanted, unwanted = (("command", ("url", "headers")) if kind == "stdio" else ("url", ("command", "args", "env")))
    if not isinstance(table.get(wanted), str) or not table[wanted].strip():
        raise ModeError(f"{where}: a {kind} server needs `{wanted}` (a string)")
    stray = [key for key in unwanted if key in table]
    if stray:
        raise ModeError(f"{where}: {', '.join(stray)} do not apply to a {kind} server")
    for key in ("env", "headers"):
        value = table.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ModeError(f"{where}: {key} must be a table of strings")
    args = table.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ModeError(f"{where}: args must be a list of strings")
    return McpServer(type=kind, command=table.get("command"), args=list(args), env=dict(table.get("env", {})),
                     url=table.get("url"), headers=dict(table.get("headers", {})))
