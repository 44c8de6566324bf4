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
from typing import Any, Iterable

TERMINAL = ("completed", "failed", "cancelled")
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


def changes_line(changes: dict[str, Any]) -> str:
    """A `changes` payload (or GET /sessions/{id}/changes) in words: "2 files changed, +3 −1"."""
    files = changes.get("files") or []
    if not files:
        return "no files changed"
    n = len(files)
    return f"{n} file{'s' if n != 1 else ''} changed, +{changes.get('additions', 0)} −{changes.get('deletions', 0)}"


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


def _event_blocks(events: Iterable[dict[str, Any]], h: str) -> tuple[list[str], dict[str, Any]]:
    """Markdown blocks for a task's events, and what was learnt on the way (model, result)."""
    blocks: list[str] = []
    seen: dict[str, Any] = {}
    tools: dict[str, str] = {}
    pending_text: list[str] = []  # text_delta pieces not (yet) covered by an assistant event
    assistant_open = False

    def heading_assistant() -> None:
        nonlocal assistant_open
        if not assistant_open:
            blocks.append(f"{h}# Assistant")
            assistant_open = True

    def flush_deltas() -> None:
        if pending_text:
            text = "".join(pending_text)
            pending_text.clear()
            if text.strip():
                heading_assistant()
                blocks.append(text.rstrip() + "\n\n*(partial: the text stopped here)*")

    for event in events:
        etype = event.get("type")
        p = event.get("payload") or {}
        if etype == "text_delta":
            pending_text.append(str(p.get("text", "")))
            continue
        if etype == "assistant":
            pending_text.clear()
            text = str(p.get("text", ""))
            if text.strip():
                heading_assistant()
                blocks.append(text.strip("\n"))
            continue
        flush_deltas()
        if etype == "system" and p.get("subtype") == "init":
            seen.setdefault("model", p.get("model"))
        elif etype == "thinking":
            text = str(p.get("text", "")).strip()
            if text:
                heading_assistant()
                blocks.append(f"<details><summary>Thinking</summary>\n\n{text}\n\n</details>")
        elif etype == "tool_use":
            heading_assistant()
            name = str(p.get("name") or "tool")
            tools[str(p.get("id"))] = name
            summary = tool_summary(name, p.get("input"))
            line = f"**⚙ {name}**" + (f" {inline_code(summary)}" if summary else "")
            described = (p.get("input") or {}).get("description") if isinstance(p.get("input"), dict) else None
            if isinstance(described, str) and described.strip() and TOOL_SUMMARY_KEYS.get(name) != "description":
                line += f" — *{described.strip()}*"
            blocks.append(line + "\n\n" + _input_block(name, p.get("input")))
        elif etype == "tool_result":
            heading_assistant()
            name = tools.get(str(p.get("tool_use_id")), "tool")
            label = f"Error from {name}:" if p.get("is_error") else f"Result of {name}:"
            text = clip(result_content(p.get("content")))
            blocks.append(f"*{label}*\n\n" + (fence(text, "text") if text.strip() else "*(no output)*"))
        elif etype == "approval_request":
            name = str(p.get("tool") or "tool")
            summary = tool_summary(name, p.get("input"))
            timeout = p.get("timeout")
            blocks.append(quote(f"⏸ **Approval requested** for {name}"
                                + (f": {inline_code(summary)}" if summary else "")
                                + (f" (answer within {timeout:g}s)" if isinstance(timeout, (int, float)) else "")))
        elif etype == "approval":
            decision = p.get("decision")
            mark = "✅ **Allowed**" if decision == "allow" else "❌ **Denied**"
            reason = p.get("reason")
            blocks.append(quote(mark + (f": {reason}" if reason else "")))
        elif etype == "permission_denied":
            name = str(p.get("tool") or "tool")
            summary = tool_summary(name, p.get("input"))
            reason = p.get("reason")
            blocks.append(quote(f"⛔ **Permission denied** for {name}"
                                + (f" {inline_code(summary)}" if summary else "")
                                + (f": {reason}" if reason else "")))
        elif etype == "error":
            blocks.append(quote(f"**Error:** {p.get('message', 'unknown error')}"))
        elif etype == "changes":
            paths = ", ".join(inline_code(f.get("path", "")) for f in (p.get("files") or [])[:20])
            blocks.append(quote(f"📝 {changes_line(p)}" + (f": {paths}" if paths else "")))
        elif etype == "result":
            seen["result"] = p
    flush_deltas()
    return blocks, seen


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
    events = sorted(doc.get("events") or [], key=lambda e: e.get("seq", 0))
    blocks, seen = _event_blocks(events, h)

    out = [f"{h} {title or 'Task ' + task_id}"]
    meta = [f"- **Task:** `{task_id}`", f"- **Status:** {status}"]
    if doc.get("session_id") and not in_session:
        meta.append(f"- **Session:** `{doc['session_id']}`")
    if doc.get("mode"):
        meta.append(f"- **Mode:** {doc['mode']}")
    if seen.get("model"):
        meta.append(f"- **Model:** {seen['model']}")
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
    if not result_doc.get("result") and seen.get("result"):
        result_doc["result"] = seen["result"]
    line = f"**{status.capitalize()}**"
    rest = result_line(result_doc).split(" · ", 1)
    if len(rest) > 1:
        line += " · " + rest[1]
    out.append(line)
    if doc.get("error"):
        out.append(quote(f"**Error:** {doc['error']}"))
    elif status == "cancelled":
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
