"""Markdown transcripts of tasks and sessions, rendered from the API's own documents.

Pure functions: no I/O, no clock. ``task_markdown`` takes a status document
(``GET /chat/{id}/status`` with its events); ``session_markdown`` takes a session
document (``GET /sessions/{id}``) and the status documents of its tasks.
Times are shown in UTC so the same document always renders the same text.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from .reducer import Approval, Denied, FilesChanged, Part, TaskFold, Text, Thinking, Tool
from .vocab import CANCELLED, TERMINAL

MAX_RESULT_LINES = 400
MAX_RESULT_CHARS = 40_000

# The input key that best summarises a call of each well-known tool.
TOOL_SUMMARY_KEYS = {
    "Bash": "command", "Read": "file_path", "Write": "file_path", "Edit": "file_path",
    "MultiEdit": "file_path", "NotebookEdit": "notebook_path", "Grep": "pattern", "Glob": "pattern",
    "LS": "path", "WebFetch": "url", "WebSearch": "query", "Task": "description",
}


# -- small helpers (also used by scout.cli) -------------------------------------------

def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_duration(seconds: float | None, *, spaced: bool = False, missing: str = "—") -> str:
    """75 -> '1m15s' for terminals and Markdown; with ``spaced``, '1 min 15 s' for the web UI."""
    if seconds is None or seconds < 0:
        return missing
    if seconds < 60:
        return f"{seconds:.1f} s" if spaced else f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if spaced else f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if spaced else f"{hours}h{minutes:02d}m"


def fmt_cost(usd: float | None, missing: str = "—") -> str:
    """Dollars: four decimals below $1 (a task often costs cents), two above."""
    if usd is None:
        return missing
    return f"${usd:.4f}" if usd < 1 else f"${usd:.2f}"


def task_duration(doc: dict[str, Any]) -> float | None:
    """Seconds the task ran: Claude Code's own figure when there is one, else the wall time."""
    result = doc.get("result") or {}
    if isinstance(result.get("duration_ms"), (int, float)):
        return result["duration_ms"] / 1000
    started, finished = doc.get("started_at"), doc.get("finished_at")
    if isinstance(started, (int, float)) and isinstance(finished, (int, float)):
        return max(0.0, finished - started)
    return None


def tool_summary(name: str, tool_input: Any, width: int = 120) -> str:
    """One line saying what a tool call does, e.g. ``ls -la`` for Bash."""
    if isinstance(tool_input, dict):
        key = TOOL_SUMMARY_KEYS.get(name)
        if key and isinstance(tool_input.get(key), str):
            text = tool_input[key]
        else:
            text = json.dumps(tool_input, ensure_ascii=False, separators=(", ", ": "))
    else:
        text = str(tool_input) if tool_input is not None else ""
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else text[: width - 1] + "…"


def fence(text: str, lang: str = "") -> str:
    """`text` in a fenced code block whose fence no run of backticks inside can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    body = text if text.endswith("\n") else text + "\n"
    return f"{ticks}{lang}\n{body}{ticks}"


def clip(text: str, max_lines: int = MAX_RESULT_LINES, max_chars: int = MAX_RESULT_CHARS) -> str:
    lines = text.splitlines()
    note = ""
    if len(lines) > max_lines:
        note = f"\n… {len(lines) - max_lines} more lines not shown"
        lines = lines[:max_lines]
    out = "\n".join(lines)
    if len(out) > max_chars:
        note = f"\n… {len(out) - max_chars} more characters not shown"
        out = out[:max_chars]
    return out + note


def quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.splitlines() or [""])


def inline_code(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def result_line(doc: dict[str, Any]) -> str:
    """``completed · 2.3s · $0.0123 · 2 turns`` for a status document."""
    status = doc.get("status") or "unknown"
    parts = [status]
    result = doc.get("result") or {}
    if status in TERMINAL or result:
        duration = task_duration(doc)
        if duration is not None:
            parts.append(fmt_duration(duration))
        if result.get("total_cost_usd") is not None:
            parts.append(fmt_cost(result["total_cost_usd"]))
        turns = result.get("num_turns")
        if turns is not None:
            parts.append(f"{turns} turn" + ("" if turns == 1 else "s"))
    return " · ".join(parts)


# -- task transcripts -----------------------------------------------------------------

def _input_block(name: str, tool_input: Any) -> str:
    if name == "Bash" and isinstance(tool_input, dict) and isinstance(tool_input.get("command"), str):
        out = fence(tool_input["command"], "bash")
        extra = {k: v for k, v in tool_input.items() if k not in ("command", "description")}
        if extra:
            out += "\n\n" + fence(json.dumps(extra, ensure_ascii=False, indent=2), "json")
        return out
    return fence(json.dumps(tool_input, ensure_ascii=False, indent=2), "json")


def _event_blocks(events: list[dict[str, Any]], h: str) -> tuple[list[str], TaskFold]:
    """Markdown blocks for a task's events, and their fold (for the model and the result)."""
    fold = TaskFold.of(events)
    blocks: list[str] = []
    assistant_open = False
    for part in fold.parts:
        if isinstance(part, (Text, Thinking, Tool)) and not assistant_open:
            if isinstance(part, Tool) or part.text.strip():
                blocks.append(f"{h}# Assistant")
                assistant_open = True
        blocks.extend(_part_blocks(part))
    return blocks, fold


def _part_blocks(part: Part) -> list[str]:
    """One part of a task as Markdown blocks."""
    if isinstance(part, Text):
        if not part.text.strip():
            return []
        if not part.final:  # streamed, and the whole block never came
            return [part.text.rstrip() + "\n\n*(partial: the text stopped here)*"]
        return [part.text.strip("\n")]
    if isinstance(part, Thinking):
        text = part.text.strip()
        return [f"<details><summary>Thinking</summary>\n\n{text}\n\n</details>"] if text else []
    if isinstance(part, Tool):
        return _tool_blocks(part)
    if isinstance(part, Approval):
        summary = tool_summary(part.tool, part.input)
        out = [quote(f"⏸ **Approval requested** for {part.tool}"
                     + (f": {inline_code(summary)}" if summary else "")
                     + (f" (answer within {part.timeout:g}s)" if part.timeout is not None else ""))]
        if part.decision is not None:
            mark = "✅ **Allowed**" if part.decision == "allow" else "❌ **Denied**"
            out.append(quote(mark + (f": {part.reason}" if part.reason else "")))
        return out
    if isinstance(part, Denied):
        summary = tool_summary(part.tool, part.input)
        return [quote(f"⛔ **Permission denied** for {part.tool}"
                      + (f" {inline_code(summary)}" if summary else "")
                      + (f": {part.reason}" if part.reason else ""))]
    if isinstance(part, FilesChanged):
        paths = ", ".join(inline_code(str(f.get("path", ""))) for f in part.files[:20])
        return [quote(f"📝 {part.line}" + (f": {paths}" if paths else ""))]
    return [quote(f"**Error:** {part.message}")]


def _tool_blocks(tool: Tool) -> list[str]:
    """A tool call (its line and input) and its result, if it came."""
    out = []
    if tool.called:
        summary = tool_summary(tool.name, tool.input)
        line = f"**⚙ {tool.name}**" + (f" {inline_code(summary)}" if summary else "")
        described = tool.input.get("description") if isinstance(tool.input, dict) else None
        if isinstance(described, str) and described.strip() and TOOL_SUMMARY_KEYS.get(tool.name) != "description":
            line += f" — *{described.strip()}*"
        out.append(line + "\n\n" + _input_block(tool.name, tool.input))
    if tool.done:
        label = f"Error from {tool.name}:" if tool.is_error else f"Result of {tool.name}:"
        text = clip(tool.output or "")
        out.append(f"*{label}*\n\n" + (fence(text, "text") if text.strip() else "*(no output)*"))
    return out


def task_markdown(status_doc: dict[str, Any], *, heading_level: int = 1, title: str | None = None,
                  session_cwd: str | None = None) -> str:
    """One task as Markdown: the user's message, what the assistant said and did, the outcome.

    `status_doc` is ``GET /chat/{id}/status`` (with events). `heading_level` is the
    level of the task's own heading (sections go one deeper). Inside a session
    transcript (`session_cwd` given) the session and an unchanged directory are
    not repeated.
    """
    in_session = session_cwd is not None
    doc = status_doc
    level = max(1, min(heading_level, 5))
    h = "#" * level
    task_id = str(doc.get("task_id") or "?")
    status = doc.get("status") or "unknown"
    blocks, fold = _event_blocks(doc.get("events") or [], h)

    out = [f"{h} {title or 'Task ' + task_id}"]
    meta = [f"- **Task:** `{task_id}`", f"- **Status:** {status}"]
    if doc.get("session_id") and not in_session:
        meta.append(f"- **Session:** `{doc['session_id']}`")
    if doc.get("mode"):
        meta.append(f"- **Mode:** {doc['mode']}")
    if fold.model:
        meta.append(f"- **Model:** {fold.model}")
    if doc.get("cwd") and doc.get("cwd") != session_cwd:
        meta.append(f"- **Directory:** `{doc['cwd']}`")
    if doc.get("created_at") is not None:
        meta.append(f"- **Created:** {fmt_time(doc['created_at'])}")
    out.append("\n".join(meta))

    out.append(f"{h}# User")
    out.append(quote(str(doc.get("message") or "")))
    out.extend(blocks)
    if "events" not in doc and (doc.get("result") or {}).get("text"):
        out.append(f"{h}# Assistant")
        out.append(str(doc["result"]["text"]).strip("\n"))

    # The outcome: the result line, then whatever went wrong.
    out.append("---")
    result_doc = dict(doc)
    if not result_doc.get("result") and fold.result:
        result_doc["result"] = fold.result
    line = f"**{status.capitalize()}**"
    rest = result_line(result_doc).split(" · ", 1)
    if len(rest) > 1:
        line += " · " + rest[1]
    out.append(line)
    if doc.get("error"):
        out.append(quote(f"**Error:** {doc['error']}"))
    elif status == CANCELLED:
        out.append("*The task was stopped before it finished.*")
    elif status not in TERMINAL:
        out.append(f"*The task is still {status}; this transcript shows it so far.*")
    return "\n\n".join(b for b in out if b is not None) + "\n"


# -- session transcripts --------------------------------------------------------------

def session_markdown(session_doc: dict[str, Any], status_docs: list[dict[str, Any]]) -> str:
    """A whole conversation: every task of the session, oldest first.

    `session_doc` is ``GET /sessions/{id}``; `status_docs` are the tasks' status
    documents. A task listed in the session without a status document is shown
    from the session's summary of it.
    """
    by_id = {d.get("task_id"): d for d in status_docs}
    summaries = list(session_doc.get("tasks") or [])
    ordered: list[dict[str, Any]] = []
    for summary in summaries:
        doc = by_id.pop(summary.get("task_id"), None)
        if doc is None:
            doc = {"task_id": summary.get("task_id"), "status": summary.get("status"),
                   "message": summary.get("message"), "error": summary.get("error"),
                   "mode": summary.get("mode"), "created_at": summary.get("created_at"),
                   "finished_at": summary.get("finished_at"),
                   "result": ({"text": summary.get("result_text"), "total_cost_usd": summary.get("cost_usd")}
                              if summary.get("result_text") is not None or summary.get("cost_usd") is not None
                              else None)}
        ordered.append(doc)
    ordered.extend(sorted(by_id.values(), key=lambda d: d.get("created_at") or 0))

    session_id = session_doc.get("session_id", "?")
    costs = [(d.get("result") or {}).get("total_cost_usd") for d in ordered]
    total = sum(c for c in costs if isinstance(c, (int, float)))
    meta = [f"- **Session:** `{session_id}`"]
    if session_doc.get("cwd"):
        meta.append(f"- **Directory:** `{session_doc['cwd']}`")
    if session_doc.get("created_at") is not None:
        meta.append(f"- **Started:** {fmt_time(session_doc['created_at'])}")
    if session_doc.get("last_activity") is not None:
        meta.append(f"- **Last activity:** {fmt_time(session_doc['last_activity'])}")
    meta.append(f"- **Turns:** {len(ordered)} · **Total cost:** {fmt_cost(total)}")

    out = [f"# Session {session_id}", "\n".join(meta)]
    for n, doc in enumerate(ordered, 1):
        first = " ".join(str(doc.get("message") or "").split())
        first = first if len(first) <= 60 else first[:59] + "…"
        out.append(task_markdown(doc, heading_level=2, title=f"{n}. {first}" if first else f"{n}.",
                                 session_cwd=session_doc.get("cwd") or "").rstrip("\n"))
    return "\n\n".join(out) + "\n"
