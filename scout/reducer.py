"""One fold of a task's events into what it shows: text, tool steps, approvals, the result.

The web UI (scout/ui.py), the terminal (scout/cli.py) and the Markdown transcript
(scout/transcript.py) all show the same log, so they read it the same way: each feeds
events to a TaskFold and renders the parts it holds. Everything about how events relate
(text deltas streaming into a block the `assistant` event then replaces, a tool result
finding its call, an answer finding its approval request, a terminal status closing
what was left open) is decided here, once, and nowhere else.

No I/O and no dependencies beyond scout.vocab: client-side code imports it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Union

from .vocab import RUNNING, TERMINAL, EventType


@dataclass
class Text:
    """A block of the answer. Built from text deltas while it streams (final=False); the
    `assistant` event then gives its whole text (final=True). A sub-agent's text has a parent."""

    text: str = ""
    final: bool = False
    parent: str | None = None


@dataclass
class Thinking:
    text: str


@dataclass
class Tool:
    """A tool call and, once it came, its result."""

    id: str
    name: str
    input: Any
    parent: str | None = None
    started: float | None = None
    output: str | None = None     # the result as text; None until it came
    is_error: bool = False
    ended: float | None = None
    called: bool = True           # False: a result whose call is not in the log

    @property
    def done(self) -> bool:
        return self.output is not None

    @property
    def seconds(self) -> float | None:
        """How long the call took, when both ends are known."""
        if self.started and self.ended and self.ended >= self.started:
            return round(self.ended - self.started, 2)
        return None


@dataclass
class Approval:
    """A tool use that asked a person, and their answer once given."""

    tool_use_id: str
    tool: str
    input: Any
    title: str | None = None
    timeout: float | None = None
    decision: str | None = None   # "allow" or "deny"
    reason: str | None = None


@dataclass
class Denied:
    """A tool use the task's mode does not allow (denied without asking anyone)."""

    tool: str
    input: Any
    reason: str | None = None


@dataclass
class Problem:
    """An error Claude Code reported during the task."""

    message: str


@dataclass
class FilesChanged:
    """What a task in a git worktree changed (its `changes` event): files with +/− lines."""

    files: list[dict[str, Any]]
    additions: int = 0
    deletions: int = 0

    @property
    def line(self) -> str:
        return changes_line({"files": self.files, "additions": self.additions, "deletions": self.deletions})


def changes_line(changes: dict[str, Any]) -> str:
    """A `changes` payload (or GET /sessions/{id}/changes) in words: "2 files changed, +3 −1"."""
    files = changes.get("files") or []
    if not files:
        return "no files changed"
    n = len(files)
    return f"{n} file{'s' if n != 1 else ''} changed, +{changes.get('additions', 0)} −{changes.get('deletions', 0)}"


Part = Union[Text, Thinking, Tool, Approval, Denied, Problem, FilesChanged]


def result_content(content: Any) -> str:
    """A tool_result's content as text (the API sends text; older rows may hold blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'block')}]")
            else:
                parts.append(str(block))
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False, indent=2)


@dataclass
class TaskFold:
    """A task as its events so far describe it. Feed events to apply(), in seq order."""

    status: str | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    model: str | None = None
    result: dict[str, Any] | None = None
    last_seq: int = 0
    closed: bool = False            # ended: nothing is left waiting or spinning
    parts: list[Part] = field(default_factory=list)
    _live: Text | None = None       # the text block deltas go to
    _tools: dict[str, Tool] = field(default_factory=dict)
    _approvals: dict[str, Approval] = field(default_factory=dict)

    @classmethod
    def of(cls, events: list[dict[str, Any]]) -> TaskFold:
        """The fold of a list of events as the API returns them ({type, payload, seq, time})."""
        fold = cls()
        for event in sorted(events, key=lambda e: e.get("seq") or 0):
            fold.apply(str(event.get("type") or ""), event.get("payload") or {}, event.get("seq"),
                       event.get("time"))
        return fold

    @property
    def asking(self) -> list[Approval]:
        """Approvals still waiting for an answer, oldest first."""
        if self.closed:
            return []
        return [a for a in self._approvals.values() if a.decision is None]

    def close(self) -> None:
        """The task is over (or gone): nothing streams or waits any more."""
        self.closed = True
        self._live = None

    def apply(self, kind: str, payload: dict[str, Any], seq: int | None = None,
              when: float | None = None) -> Part | None:
        """Fold one event in; returns the part it added or changed, if any."""
        if seq:
            self.last_seq = max(self.last_seq, int(seq))
        parent = payload.get("parent_tool_use_id")
        if kind == EventType.STATUS:
            self._status(payload, when)
        elif kind == EventType.SYSTEM:
            if payload.get("subtype") == "init" and self.model is None:
                self.model = payload.get("model")
        elif kind == EventType.TEXT_DELTA:
            if parent:
                return None  # a sub-agent's live text: its whole block arrives as `assistant`
            if self._live is None:
                self._live = self._add(Text())
            self._live.text += str(payload.get("text", ""))
            return self._live
        elif kind == EventType.ASSISTANT:
            return self._assistant(str(payload.get("text") or ""), parent)
        elif kind == EventType.THINKING:
            return self._add(Thinking(str(payload.get("text") or "")))
        elif kind == EventType.TOOL_USE:
            return self._tool_use(payload, parent, when)
        elif kind == EventType.TOOL_RESULT:
            return self._tool_result(payload, when)
        elif kind == EventType.APPROVAL_REQUEST:
            tool_use_id = str(payload.get("tool_use_id") or "")
            approval = Approval(tool_use_id, str(payload.get("tool") or "tool"), payload.get("input"),
                                payload.get("title"), _number(payload.get("timeout")))
            self._approvals[tool_use_id] = approval
            return self._add(approval)
        elif kind == EventType.APPROVAL:
            answered = self._approvals.get(str(payload.get("tool_use_id") or ""))
            if answered is not None:
                answered.decision = str(payload.get("decision") or "?")
                answered.reason = payload.get("reason")
            return answered
        elif kind == EventType.PERMISSION_DENIED:
            return self._add(Denied(str(payload.get("tool") or "tool"), payload.get("input"), payload.get("reason")))
        elif kind == EventType.ERROR:
            return self._add(Problem(str(payload.get("message") or "error")))
        elif kind == EventType.CHANGES:
            return self._add(FilesChanged(list(payload.get("files") or []), int(payload.get("additions") or 0),
                                          int(payload.get("deletions") or 0)))
        elif kind == EventType.RESULT:
            self.result = payload
        return None

    # -- the folds ------------------------------------------------------------------------

    def _add(self, part: Part) -> Any:
        """Append a part; any part but streaming text ends the text block being streamed."""
        if not isinstance(part, Text):
            self._live = None
        self.parts.append(part)
        return part

    def _status(self, payload: dict[str, Any], when: float | None) -> None:
        self.status = payload.get("status") or self.status
        if payload.get("error"):
            self.error = payload["error"]
        if self.status == RUNNING and self.started_at is None:
            self.started_at = when
        if self.status in TERMINAL:
            self.finished_at = when
            self.close()

    def _assistant(self, text: str, parent: str | None) -> Text | None:
        if parent:
            return self._add(Text(text, final=True, parent=parent))
        if self._live is not None:  # the whole block the deltas were part of
            live, self._live = self._live, None
            live.text, live.final = text, True
            return live
        return self._add(Text(text, final=True)) if text else None

    def _tool_use(self, payload: dict[str, Any], parent: str | None, when: float | None) -> Tool:
        tool = Tool(str(payload.get("id") or f"tool-{len(self.parts)}"), str(payload.get("name") or "tool"),
                    payload.get("input") or {}, parent, when)
        self._tools[tool.id] = tool
        return self._add(tool)

    def _tool_result(self, payload: dict[str, Any], when: float | None) -> Tool:
        tool_use_id = str(payload.get("tool_use_id") or "")
        tool = self._tools.get(tool_use_id)
        if tool is None:  # a result whose call is not in the log: shown on its own
            tool = Tool(tool_use_id, "tool", None, called=False)
            self.parts.append(tool)
        tool.output = result_content(payload.get("content"))
        tool.is_error = bool(payload.get("is_error"))
        tool.ended = when
        return tool


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None
