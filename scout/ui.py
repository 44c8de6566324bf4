"""Scout's web UI: a Gradio chat app that is just another client of the HTTP API.

Everything it shows comes from the API (scout.client): answers stream in from
``GET /chat/{id}/stream``, each tool call Claude Code makes is a collapsible step,
and the conversation of a session is rebuilt from ``GET /sessions/{id}`` and each
task's event log. The current session id lives in the page's URL (``?session=``),
so a reload, or a link, opens the same conversation and re-attaches to a task that
is still running (resuming the stream from the last event it has shown).

    python -m scout.ui --help
    SCOUT_API_URL=http://127.0.0.1:8000 python -m scout.ui      # http://127.0.0.1:7860
"""
from __future__ import annotations

import os

# Gradio must not phone home (usage analytics, version checks): set before importing it.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import argparse  # noqa: E402
import functools  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Generator, Iterator  # noqa: E402

import gradio as gr  # noqa: E402

from .client import ScoutAPIError, ScoutClient, ScoutUnreachable, SSEEvent  # noqa: E402
from . import vault  # noqa: E402
from .gradio_idle import quiet_when_idle  # noqa: E402
from .guard import HostRules, LoginThrottle, is_loopback  # noqa: E402
from .serverproc import interrupt_on_sigterm, make_undumpable  # noqa: E402
from .reducer import Approval, Denied, FilesChanged, Part, TaskFold, Text, Thinking, Tool, changes_line  # noqa: E402
from .transcript import fmt_cost, fmt_duration  # noqa: E402
from .vocab import (CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, UNFINISHED,  # noqa: E402
                    WAITING, EventType)

log = logging.getLogger("scout.ui")

DEFAULT_UI_PORT = 7860
DEFAULT_API_URL = "http://127.0.0.1:8000"
MAX_TOOL_OUTPUT = 6000  # characters of a tool's result shown in its step
MAX_DIFF_CHARS = 300_000  # characters of a session's diff shown in the Changes panel
YIELD_EVERY = 0.05  # seconds: at most this often re-render during a burst of text deltas
STATUS_ICONS: dict[str, str] = {COMPLETED: "✅", FAILED: "❌", CANCELLED: "⏹️", RUNNING: "🟢", PENDING: "🕓",
                                WAITING: "✋"}


# =====================================================================================
# Rendering a task's event log as chat messages (pure functions, no Gradio state)


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return ""
    delta = max(0.0, (now or time.time()) - ts)
    if delta < 60:
        return "just now"
    if delta < 3600:
        return f"{int(delta // 60)} min ago"
    if delta < 86400:
        return f"{int(delta // 3600)} h ago"
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def fence(text: str, lang: str = "") -> str:
    """A Markdown code block that survives backticks inside the text."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{lang}\n{text.rstrip()}\n{ticks}"


def clip(text: str, limit: int = MAX_TOOL_OUTPUT) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… ({len(text) - limit} more characters)"


def one_line(text: str, limit: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


TOOL_SUMMARY_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "description", "prompt")


def tool_title(name: str, tool_input: dict[str, Any]) -> str:
    """'Bash · ls -la' — the tool and the gist of its input, on one line."""
    for key in TOOL_SUMMARY_KEYS:
        value = tool_input.get(key) if isinstance(tool_input, dict) else None
        if isinstance(value, str) and value.strip():
            return f"🔧 {name} · {one_line(value)}"
    return f"🔧 {name}"


def tool_input_markdown(name: str, tool_input: Any) -> str:
    if isinstance(tool_input, dict) and name == "Bash" and isinstance(tool_input.get("command"), str):
        return fence(tool_input["command"], "bash")
    try:
        text = json.dumps(tool_input, indent=2, ensure_ascii=False)
    except (TypeError, ValueError):
        text = str(tool_input)
    return fence(clip(text), "json")


def _folded(name: str) -> property:
    """A TaskView attribute that is the fold's (status, error, result, times, last seq)."""
    def get(view: "TaskView") -> Any:
        return getattr(view.fold, name)

    def put(view: "TaskView", value: Any) -> None:
        setattr(view.fold, name, value)
    return property(get, put)


class TaskView:
    """The chat messages of one task, rendered from the fold of its log (scout/reducer.py)."""

    status = _folded("status")
    error = _folded("error")
    result = _folded("result")
    started_at = _folded("started_at")
    finished_at = _folded("finished_at")
    last_seq = _folded("last_seq")

    def __init__(self, task_id: str, message: str, status: str = PENDING, error: str | None = None,
                 result: dict[str, Any] | None = None) -> None:
        self.task_id = task_id
        self.message = message
        self.fold = TaskFold(status=status, error=error, result=result)
        self.deleted = False

    @classmethod
    def from_status(cls, doc: dict[str, Any]) -> "TaskView":
        """A finished (or in-progress) task from its ``GET /chat/{id}/status`` document."""
        view = cls(task_id=doc["task_id"], message=doc.get("message") or "")
        for event in doc.get("events") or []:
            view.apply(event.get("type", ""), event.get("payload") or {}, event.get("seq"), event.get("time"))
        view.status = doc.get("status") or view.status
        view.error = doc.get("error") or view.error
        view.result = doc.get("result") or view.result
        view.started_at = doc.get("started_at") or view.started_at
        view.finished_at = doc.get("finished_at") or view.finished_at
        return view

    @property
    def active(self) -> bool:
        return self.status in UNFINISHED

    def apply_event(self, event: SSEEvent) -> None:
        if event.is_end:
            self.status = str(event.data.get("status") or self.status)
            self.deleted = self.status == "deleted"
            self.fold.close()
            return
        self.apply(event.type, event.payload, event.seq, event.time)

    def apply(self, kind: str, payload: dict[str, Any], seq: int | None = None, when: float | None = None) -> None:
        """Fold one log event in."""
        self.fold.apply(kind, payload, seq, when)

    def _items(self) -> list[dict[str, Any]]:
        """The task's parts as chat messages: text as text, everything else as a step.

        An approval is shown once: while it waits, as the card at the end (footer), which
        stands in for its tool's step; once answered, as a note on that step."""
        parts = self.fold.parts
        answers = {p.tool_use_id: p for p in parts if isinstance(p, Approval)}
        tool_ids = {p.id for p in parts if isinstance(p, Tool)}
        asking = {a.tool_use_id for a in self.fold.asking}
        items = [self._item(part, answers) for part in parts
                 if not (isinstance(part, Approval) and (part.tool_use_id in tool_ids or part.tool_use_id in asking))
                 and not (isinstance(part, Tool) and part.id in asking)]
        result = self.result or {}
        if result.get("is_error") and result.get("text") and not any(
                isinstance(p, Text) and not p.parent and p.text == result["text"] for p in self.fold.parts):
            items.append(notice(f"⚠️ {esc(result['text'])}", kind="error"))
        if self.deleted:
            items.append(notice("🗑️ This task was deleted."))
        return items

    def _item(self, part: Part, answers: dict[str, Approval]) -> dict[str, Any]:
        if isinstance(part, Text):
            if part.parent:
                return step("💬 Sub-agent", part.text, parent_id=part.parent)
            return {"role": "assistant", "content": part.text}
        if isinstance(part, Thinking):
            return step("💭 Thinking", part.text)
        if isinstance(part, Tool):
            return self._tool_item(part, answers.get(part.id))
        if isinstance(part, Approval):
            body = f"Claude Code asks to use **{part.tool}**:\n\n" + tool_input_markdown(part.tool, part.input)
            item = self._open_step(f"✋ Approval needed · {part.tool}", body, part.decision is not None,
                                   f"approval-{part.tool_use_id}")
            if part.decision is not None:
                item["metadata"]["log"] = "allowed" if part.decision == "allow" else "denied"
                item["content"] += f"\n\n**{part.decision.title()}**" + (f": {part.reason}" if part.reason else "")
            return item
        if isinstance(part, Denied):
            body = f"{part.reason or 'not allowed'}\n\n" + tool_input_markdown(part.tool, part.input)
            return step(f"⛔ {part.tool} not allowed", body)
        if isinstance(part, FilesChanged):
            return notice(f"📝 {esc(part.line)}", kind="changes")
        return notice(f"⚠️ {esc(part.message)}", kind="error")

    def _tool_item(self, tool: Tool, answer: Approval | None = None) -> dict[str, Any]:
        """A tool's step; `answer`, a person's answer to its approval request, is noted on it."""
        output = ""
        if tool.done:
            label = "**Error**" if tool.is_error else "**Output**"
            output = f"\n\n{label}\n\n" + (fence(clip(tool.output or "")) if (tool.output or "").strip()
                                               else "_(no output)_")
        if not tool.called:  # a result whose call is not in the log
            return step("🔧 Tool result", output.strip())
        title = tool_title(tool.name, tool.input)
        if tool.is_error:
            title = title.replace("🔧", "⚠️", 1)
        item = self._open_step(title, "**Input**\n\n" + tool_input_markdown(tool.name, tool.input) + output,
                               tool.done, tool.id, tool.parent)
        if tool.seconds is not None:
            item["metadata"]["duration"] = tool.seconds
        if answer is not None and answer.decision is not None:
            item["metadata"]["log"] = "allowed" if answer.decision == "allow" else "denied"
            item["content"] += (f"\n\n**{'Allowed' if answer.decision == 'allow' else 'Denied'}**"
                                + (f": {answer.reason}" if answer.reason else ""))
        return item

    def _open_step(self, title: str, body: str, resolved: bool, step_id: str,
                   parent_id: str | None = None) -> dict[str, Any]:
        """A step that spins until resolved; a finished task leaves none spinning."""
        spinning = not resolved and not self.fold.closed
        item = step(title, body, status="pending" if spinning else "done", step_id=step_id, parent_id=parent_id)
        if not resolved and self.fold.closed and self.status == CANCELLED:
            item["metadata"]["log"] = "stopped"
        return item

    def footer(self, items: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """The closing line: outcome, duration and cost; or a placeholder while nothing is shown
        yet. `items`: the task's messages, if already made."""
        r = self.result or {}
        cost = fmt_cost(r.get("total_cost_usd"), missing="")
        if r.get("duration_ms") is not None:
            took = fmt_duration(r["duration_ms"] / 1000, spaced=True, missing="")
        elif self.started_at and self.finished_at:
            took = fmt_duration(self.finished_at - self.started_at, spaced=True, missing="")
        else:
            took = ""
        turns = r.get("num_turns")
        extras = [x for x in (took, cost, f"{turns} turn{'s' if turns != 1 else ''}" if turns else "") if x]
        if self.status == COMPLETED:
            return notice(" · ".join(["✅ Done", *extras]), kind="done")
        if self.status == FAILED:
            text = "❌ Task failed" + (f": {esc(self.error)}" if self.error else "")
            return notice(" · ".join([text, *extras]), kind="error")
        if self.status == CANCELLED:
            return notice(" · ".join(["⏹️ Stopped — the task was cancelled", *extras]), kind="stopped")
        if self.status == "deleted":
            return None
        if self.fold.asking:
            first = self.fold.asking[0]
            return approval_card(first.tool_use_id, first.tool, first.input)
        if self.status == WAITING:
            return notice("✋ Waiting for an approval…", kind="live")
        if not any(i.get("content") for i in (self._items() if items is None else items)):
            text = "🕓 Queued — waiting for a free worker…" if self.status == PENDING else "⏳ Claude Code is starting…"
            return notice(text, kind="live")
        return None

    def messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"role": "user", "content": self.message}]
        items = self._items()
        out += [i for i in items if i.get("content") or i.get("metadata")]
        end = self.footer(items)
        if end:
            out.append(end)
        return out


def approval_card(tool_use_id: str, tool: str, tool_input: Any) -> dict[str, Any]:
    """The one place a pending approval is shown: what the tool wants to do, and the buttons.

    The buttons are Gradio's options of the conversation's last message (a click is
    chatbot.option_select); the CSS puts them on the card."""
    if isinstance(tool_input, dict) and isinstance(tool_input.get("command"), str):
        what = tool_input["command"]
    else:
        try:
            what = json.dumps(tool_input, indent=2, ensure_ascii=False)
        except (TypeError, ValueError):
            what = str(tool_input)
    card = notice(f"✋ Allow <b>{esc(tool)}</b> to do this?<pre><code>{esc(clip(what))}</code></pre>", kind="ask")
    card["options"] = [{"value": f"allow:{tool_use_id}", "label": "✅ Allow"},
                       {"value": f"deny:{tool_use_id}", "label": "🚫 Deny"}]
    return card


def step(title: str, content: str, status: str = "done", step_id: str | None = None,
         parent_id: str | None = None) -> dict[str, Any]:
    """A collapsible 'thought' message (tool call, thinking, sub-agent text)."""
    meta: dict[str, Any] = {"title": title, "status": status}
    if step_id:
        meta["id"] = step_id
    if parent_id:
        meta["parent_id"] = parent_id
    return {"role": "assistant", "content": content, "metadata": meta}


def esc(text: str) -> str:
    """Text shown inside a notice's HTML, as plain text."""
    return html.escape(str(text), quote=False)


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


ASK_PLACEHOLDER = "Ask Scout… (Enter to send, Shift+Enter for a new line)"
ENDED_PLACEHOLDER = "This conversation cannot be continued: press New chat to start another"


def composer(can_continue: bool = True, **changes: Any) -> Any:
    """The message box: usable, or not when the conversation shown cannot be continued
    (its history is gone: see the session's ``history_lost``)."""
    return gr.update(interactive=can_continue, placeholder=ASK_PLACEHOLDER if can_continue else ENDED_PLACEHOLDER,
                     **changes)


def ended_notice(reason: str | None) -> dict[str, Any]:
    return notice(f"🚫 {esc(reason or 'This conversation cannot be continued.')}", kind="error")


def notice(text: str, kind: str = "info") -> dict[str, Any]:
    """A short status line in the conversation (outcome, error, placeholder); `text` is HTML."""
    return {"role": "assistant", "content": f'<div class="scout-note scout-{kind}">{text}</div>'}


def files_html(changes: dict[str, Any]) -> str:
    """A session's changed files with their +/− counts, as HTML."""
    marks = {"added": "A", "modified": "M", "deleted": "D", "type_changed": "T"}
    ws = changes.get("workspace") or {}
    rows = []
    for f in changes.get("files") or []:
        counts = ("<span class='scout-bin'>binary</span>" if f.get("binary") else
                  f"<span class='scout-add'>+{f.get('additions', 0)}</span> "
                  f"<span class='scout-del'>−{f.get('deletions', 0)}</span>")
        rows.append(f"<li><code>{marks.get(f.get('status'), '?')}</code> <code>{esc(f.get('path', ''))}</code> "
                    f"{counts}</li>")
    target = f" · merges into <code>{esc(ws['target_branch'])}</code>" if ws.get("target_branch") else ""
    head = (f"<div class='scout-note'>Branch <code>{esc(ws.get('branch') or '')}</code> in "
            f"<code>{esc(ws.get('path') or '')}</code>, from <code>{esc(str(ws.get('base_commit') or '')[:12])}</code>"
            f"{target}</div>")
    summary = f"<p class='scout-changes-summary'><b>{esc(changes_line(changes))}</b></p>"
    return head + summary + (f"<ul class='scout-files'>{''.join(rows)}</ul>" if rows else "")


def diff_html(patch: str) -> str:
    """A unified diff as highlighted HTML: added, removed, hunk and file lines coloured."""
    if not patch.strip():
        return ""
    clipped = len(patch) > MAX_DIFF_CHARS
    lines = []
    for line in patch[:MAX_DIFF_CHARS].splitlines():
        kind = ("file" if line.startswith(("diff --git", "+++ ", "--- ", "index ", "new file", "deleted file",
                                           "Binary files"))
                else "hunk" if line.startswith("@@") else "add" if line.startswith("+")
                else "del" if line.startswith("-") else "ctx")
        lines.append(f"<span class='scout-d-{kind}'>{esc(line) or ' '}</span>")
    more = ("<span class='scout-d-hunk'>… (diff clipped; scout changes SESSION --patch has it all)</span>"
            if clipped else "")
    return f"<pre class='scout-diff'>{''.join(lines)}{more}</pre>"


def error_message(exc: BaseException, doing: str) -> dict[str, Any]:
    """A readable chat message for a failure; never a traceback."""
    if isinstance(exc, ScoutUnreachable):
        text = (f"⚠️ {esc(doing)}: {esc(exc.message)}. Is the Scout API server running? "
                "(<code>python run_servers.py</code> starts it together with this UI.)")
    elif isinstance(exc, ScoutAPIError):
        status = f" (HTTP {exc.status}, {exc.code})" if exc.status else ""
        text = f"⚠️ {esc(doing)}: {esc(exc.message)}{esc(status)}"
    else:
        log.exception("unexpected error while %s", doing)
        text = f"⚠️ {esc(doing)}: unexpected error ({type(exc).__name__}: {esc(one_line(str(exc), 200))})"
    return notice(text, kind="error")


# =====================================================================================
# The app


CSS = """
.gradio-container { max-width: 1800px !important; }
#scout-header { align-items: center; }
#scout-header h1 { margin: 0; font-size: 1.5rem; }
#scout-header p { margin: 0; opacity: .7; }
#scout-chat { flex-grow: 1; }
.scout-note { font-size: .9em; opacity: .85; }
.scout-done { color: var(--body-text-color-subdued); }
.scout-error { color: var(--error-text-color, #b91c1c); opacity: 1; }
.scout-stopped { color: var(--body-text-color-subdued); font-weight: 600; }
.scout-ask { font-weight: 600; opacity: 1; }
.scout-live { color: var(--body-text-color-subdued); font-style: italic; }
.scout-queued { font-style: italic; }
#scout-history { max-height: 40vh; overflow-y: auto; }
#scout-history .wrap { flex-direction: column; gap: 4px; }
#scout-history label { width: 100%; margin: 0; font-size: .88em; line-height: 1.3; }
#scout-status { font-size: .85em; opacity: .75; min-height: 1.4em; }
.scout-changes { color: var(--body-text-color-subdued); font-weight: 600; }
.scout-files { list-style: none; padding-left: 0; margin: 4px 0; font-size: .9em; }
.scout-add, .scout-d-add { color: #15803d; }
.scout-del, .scout-d-del { color: #b91c1c; }
.scout-bin { opacity: .7; font-style: italic; }
.scout-diff { max-height: calc(100vh - 330px); overflow: auto; font-size: .82em; line-height: 1.35; padding: 8px;
              background: var(--block-background-fill); border-radius: 6px; }
.scout-diff span { display: block; white-space: pre; }
.scout-d-add { background: rgba(34, 197, 94, .12); }
.scout-d-del { background: rgba(239, 68, 68, .12); }
.scout-d-hunk { color: #6366f1; }
.scout-d-file { font-weight: 700; }
#scout-status p { margin: 0; }
footer { display: none !important; }
/* The chat's Clear / Copy icons float over the top of the scrolling messages, hiding what
   passes under them: give them a row of their own above the messages instead. */
#scout-chat .top-panel { position: static; align-self: flex-end;
                         margin: var(--block-label-margin) var(--block-label-margin) 0 0; }
#scout-chat .bubble-wrap { flex: 1 1 0; min-height: 0; height: auto; }
/* The approval card: Gradio draws a message's options (Allow / Deny) after the message's copy
   button, right-aligned under the chat. Put them on the card instead: no copy button for the
   card, the buttons in the bottom of its bubble, left-aligned under what is asked. */
#scout-chat .message-buttons-left:has(+ .options) { display: none; }
#scout-chat .message-row:has(+ .message-buttons-left + .options) .message:last-child { padding-bottom: 2.9rem; }
#scout-chat .options { display: flex; justify-content: flex-start; gap: .6rem; max-width: none;
                       margin: -3.05rem 0 1rem 0; padding: 0 0 0 1.9rem; position: relative; }
#scout-chat .options .option { flex: none; width: auto; min-width: 6.5rem; padding: .35rem .9rem; }
.scout-ask { min-width: 15rem; }
.scout-ask pre { margin: .4rem 0 0; font-weight: normal; white-space: pre-wrap; }
"""

# The page's own count of conversation switches (New chat, a History pick), passed to the
# handlers as their last input (see Conversation). NEXT counts one more; NOW reads it.
VIEW_NEXT_JS = """
(...args) => {
  window.scoutView = (window.scoutView || 0) + 1;
  args[args.length - 1] = String(window.scoutView);
  return args;
}
"""
VIEW_NOW_JS = """
(...args) => {
  args[args.length - 1] = String(window.scoutView || 0);
  return args;
}
"""

# Delete the conversation shown, once the person confirms; either way a switch is counted
# (the handler gets an empty session id when they do not confirm).
DELETE_JS = """
(...args) => {
  const sid = args[args.length - 2];
  const ok = sid && confirm("Delete this conversation and all its tasks? Running ones are stopped.");
  window.scoutView = (window.scoutView || 0) + 1;
  args[args.length - 1] = String(window.scoutView);
  if (!ok) { args[args.length - 2] = ""; }
  return args;
}
"""

# Merge / Discard the session's worktree once the person confirms (else the session id is blanked).
def _confirm_js(question: str) -> str:
    return f"""
(...args) => {{
  const sid = args[args.length - 1];
  if (!(sid && confirm({json.dumps(question)}))) {{ args[args.length - 1] = ""; }}
  return args;
}}
"""


MERGE_JS = _confirm_js("Merge this conversation's changes into the branch of your checkout?")
DISCARD_JS = _confirm_js("Discard this conversation's worktree and every change in it?")

# Keeps ?session=<id> in the address bar in step with the conversation shown.
URL_SYNC_JS = """
(sid) => {
  const url = new URL(window.location.href);
  if (sid) { url.searchParams.set('session', sid); } else { url.searchParams.delete('session'); }
  window.history.replaceState(null, '', url.toString());
  return [];
}
"""

THEME = gr.themes.Soft(
    primary_hue="indigo",
    neutral_hue="slate",
    # System fonts only: the default theme would fetch fonts from the internet.
    font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"],
)

PLACEHOLDER = """
<div style="text-align:center; opacity:.8">
<h2>🔭 Ask Scout</h2>
<p>Scout runs Claude Code in the background: it reads, searches and runs commands in the
working directory, and streams what it does here. Tasks keep running if you close the page.</p>
</div>
"""


@dataclass
class Conversation:
    """What one browser tab shows: a session's finished tasks, and the task being followed.

    Gradio hands every event of a tab this same object. Switching conversation (New chat,
    a pick in History, a page load) bumps ``epoch``: handlers still working for an older
    epoch stop writing, and their streams let go (see ``ScoutClient.stream(until=)``).
    That is the only way events are cancelled: Gradio's own ``cancels=`` cancels by
    function, so a late cancel of a finished send could kill the next one.

    One task is followed at a time: ``claim`` it first. A message sent meanwhile waits
    in ``queued`` (shown under the answer) and goes out as a follow-up when it is done.

    Gradio may run a tab's events out of order: a message sent right after New chat can
    reach its handler first. So the page numbers its own switches (``VIEW_*_JS``), each
    handler is told the page's number, and a send first waits (``wait_for_view``) until
    the switches the page had made before it have been applied here.
    """

    session_id: str = ""
    done: list[dict[str, Any]] = field(default_factory=list)  # messages of earlier tasks
    epoch: int = 0
    view: int = 0  # the page's switch count, as far as applied here
    busy: bool = False  # a handler of this epoch is following a task
    live: list[dict[str, Any]] = field(default_factory=list)  # what that task has shown so far
    queued: list[str] = field(default_factory=list)  # messages waiting for it, oldest first

    def __post_init__(self) -> None:
        # Not a field: Gradio serializes the fields of a State's value (dataclasses.asdict).
        self._cond = threading.Condition()

    def __deepcopy__(self, memo: dict[int, Any]) -> "Conversation":
        return Conversation()  # Gradio copies the initial value for each tab; a lock cannot be copied

    def switch(self, session_id: str = "", view: int | None = None) -> int:
        with self._cond:
            self.session_id, self.done, self.live, self.queued = session_id, [], [], []
            self.epoch += 1
            self.busy = False
            if view is not None:
                self.view = max(self.view, view)
            self._cond.notify_all()
            return self.epoch

    def saw_view(self, view: int) -> None:
        """The page's switch number ``view`` reached the server but changed nothing."""
        with self._cond:
            self.view = max(self.view, view)
            self._cond.notify_all()

    def wait_for_view(self, view: int, timeout: float = 10.0) -> None:
        """Wait until the page's switch number ``view`` has been applied (or ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.view < view and time.monotonic() < deadline:
                self._cond.wait(max(0.01, deadline - time.monotonic()))

    def enqueue(self, text: str) -> None:
        with self._cond:
            self.queued.append(text)

    def claim(self, epoch: int, waiting: str | None = None) -> bool:
        """Wait until no task of ``epoch`` is followed, then mark one as followed.

        False if the tab switched conversation meanwhile. ``waiting``, the queued message
        this is for, goes in its turn (first queued, first sent) and leaves the queue
        either way."""
        with self._cond:
            while self.epoch == epoch and (self.busy or waiting is not None and self.queued
                                           and self.queued[0] != waiting):
                self._cond.wait(1.0)
            if waiting is not None and waiting in self.queued:
                self.queued.remove(waiting)
            if self.epoch != epoch:
                return False
            self.busy = True
            return True

    def release(self, epoch: int) -> None:
        with self._cond:
            if self.epoch == epoch:
                self.busy, self.live = False, []
                self._cond.notify_all()

    def shown(self, live: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """What the chat shows: earlier tasks, the followed task and the queue. ``live``, what
        the followed task shows now, is kept: a send queued meanwhile repaints the chat
        from here, and must not drop the answer in progress."""
        if live is not None:
            self.live = live
        return self.done + self.live + self.pending()

    def pending(self) -> list[dict[str, Any]]:
        """The queued messages, as chat bubbles."""
        return [{"role": "user", "content": f'{text}\n\n<div class="scout-note scout-queued">🕓 queued: '
                                            'sent when this answer is done</div>'} for text in self.queued]


def build_ui(api_url: str = DEFAULT_API_URL, token: str | None = None) -> gr.Blocks:
    """The Scout chat app, talking to the API at ``api_url`` (with ``token`` if set)."""
    client = ScoutClient(api_url, token)

    # -- helpers that talk to the API -------------------------------------------------

    def history_choices() -> tuple[list[tuple[str, str]], str | None]:
        """(label, session_id) for the history panel, newest first; or an error text."""
        try:
            sessions = client.sessions(limit=100).get("sessions", [])
        except ScoutAPIError as exc:
            return [], exc.message
        now = time.time()
        choices = []
        for s in sessions:
            icon = STATUS_ICONS.get(s.get("last_status") or "", "•")
            count = s.get("task_count") or 0
            title = s.get("first_message") or s.get("last_message") or "(no message)"  # how it began
            label = (f"{icon} {one_line(title, 48)}  ·  "
                     f"{count} task{'s' if count != 1 else ''} · {fmt_ago(s.get('last_activity'), now)}")
            choices.append((label, s["session_id"]))
        return choices, None

    def load_modes() -> tuple[list[tuple[str, str]], str, dict[str, str]]:
        """(choices, default, descriptions) from GET /modes; raises ScoutAPIError."""
        doc = client.modes()
        descriptions = {m["name"]: m.get("description") or "" for m in doc.get("modes", [])}
        choices = [(name, name) for name in descriptions] or [("Scout", "Scout")]
        return choices, doc.get("default") or choices[0][1], descriptions

    def cwd_hints() -> dict[str, Any]:
        """The working directory box's placeholder and help, from GET /config."""
        try:
            config = client.config()
        except ScoutAPIError:
            return gr.update()  # a server without /config: keep the generic hint
        roots = config.get("allowed_roots") or []
        return gr.update(placeholder=f"default: {config.get('default_cwd')}",
                         info=("Must be inside " + ", ".join(roots)) if roots else None)

    def status_line(session_id: str, view: TaskView | None = None, extra: str = "") -> str:
        parts = []
        if session_id:
            parts.append(f"Session `{session_id[:8]}`")
        if view is not None:
            parts.append(f"task `{view.task_id[:8]}` {STATUS_ICONS.get(view.status, '')} {view.status}")
        if extra:
            parts.append(extra)
        return " · ".join(parts)

    def follow(conv: Conversation, view: TaskView, epoch: int) -> Generator[dict[Any, Any], None, TaskView]:
        """Stream a task's events into the chat until it ends (or the tab shows something else);
        returns the task as it was last seen (`view = yield from follow(...)`): when the stream
        ends without the final status, that is a new TaskView read from the status document."""
        last_yield = 0.0
        try:
            for event in client.stream(view.task_id, view.last_seq, until=lambda: conv.epoch != epoch):
                if conv.epoch != epoch:
                    return view
                view.apply_event(event)
                now = time.monotonic()
                if event.type != EventType.TEXT_DELTA or now - last_yield >= YIELD_EVERY or event.is_end:
                    last_yield = now
                    yield {chatbot: conv.shown(view.messages()), status_md: status_line(conv.session_id, view)}
        except ScoutAPIError as exc:
            if conv.epoch != epoch:
                return view
            problem = error_message(exc, "Lost the task's live stream")
            problem["content"] = problem["content"].replace(
                "</div>", " The task keeps running on the server: reload the page to re-attach.</div>")
            conv.done = conv.done + view.messages() + [problem]
            yield {chatbot: conv.shown([]), status_md: status_line(conv.session_id, view, "stream lost")}
            return view
        if view.active:  # the stream ended without saying how: ask once
            try:
                view = TaskView.from_status(client.status(view.task_id))
            except ScoutAPIError:
                pass
        if conv.epoch != epoch:
            return view
        conv.done = conv.done + view.messages()
        yield {chatbot: conv.shown([]), status_md: status_line(conv.session_id, view)}
        return view

    def open_session(conv: Conversation, session_id: str, view: int | None = None) -> Iterator[dict[Any, Any]]:
        """Show a session's whole conversation; re-attach to its running task, if any."""
        try:
            doc = client.session(session_id)
        except ScoutAPIError as exc:
            conv.switch(view=view)
            conv.done = [error_message(exc, f"Could not open session {session_id}")]
            yield {chatbot: conv.done, session_box: "", task_box: "", status_md: ""}
            return
        epoch = conv.switch(session_id, view)
        tasks = doc.get("tasks", [])
        last_mode = next((t.get("mode") for t in reversed(tasks) if t.get("mode")), None)
        can_continue = doc.get("can_continue", True)
        settings: dict[Any, Any] = {session_box: session_id, history: gr.update(value=session_id),
                                    cwd_box: doc.get("cwd") or "", msg_box: composer(can_continue)}
        if last_mode:
            settings[mode_dd] = gr.update(value=last_mode)
        followed = False
        try:
            for task in tasks:
                try:
                    task_view = TaskView.from_status(client.status(task["task_id"]))
                except ScoutAPIError as exc:
                    task_view = TaskView(task_id=task["task_id"], message=task.get("message") or "",
                                    status=task.get("status") or FAILED, error=exc.message)
                if conv.epoch != epoch:
                    return
                if not task_view.active:
                    conv.done = conv.done + task_view.messages()
                    continue
                # Still running (or queued): show what it has done so far, then follow it live.
                if not followed and not conv.claim(epoch):
                    return
                followed = True
                yield {**settings, chatbot: conv.shown(task_view.messages()), task_box: task_view.task_id,
                       send_btn: gr.update(visible=False), stop_btn: gr.update(visible=True, interactive=True),
                       status_md: status_line(session_id, task_view)}
                yield from follow(conv, task_view, epoch)
                if conv.epoch != epoch:
                    return
            if not followed:  # the status line tells how the last task ended, as it did before a reload
                last = task_view if tasks else None
                if not can_continue:
                    conv.done = conv.done + [ended_notice(doc.get("history_lost"))]
                yield {**settings, chatbot: conv.done, task_box: "", status_md: status_line(session_id, last)}
                return
            hist, _ = history_choices()
            yield {task_box: "", send_btn: gr.update(visible=True), stop_btn: gr.update(visible=False),
                   history: gr.update(choices=hist, value=session_id)}
        finally:
            if followed:
                conv.release(epoch)

    # -- event handlers ---------------------------------------------------------------

    def ends_quietly(handler: Any) -> Any:
        """When a generator handler ends, Gradio sends its last yield once more. A handler that
        went stale (the tab switched conversation) would then paint the old conversation over
        the new one: so every streaming handler ends on a yield that changes nothing."""
        @functools.wraps(handler)
        def run(*args: Any, **kwargs: Any) -> Iterator[dict[Any, Any]]:
            yield from handler(*args, **kwargs)
            yield {chatbot: gr.skip()}
        return run


    def on_load(conv: Conversation, request: gr.Request) -> Iterator[dict[Any, Any]]:
        try:
            conv.switch()
            session_id = (dict(request.query_params) if request else {}).get("session", "")
            try:
                choices, default, descriptions = load_modes()
            except ScoutAPIError as exc:
                problem = error_message(exc, "Could not load Scout")
                problem["content"] = problem["content"].replace("</div>", " Then reload this page.</div>")
                yield {chatbot: [problem]}
                return
            hist, _ = history_choices()
            yield {mode_dd: gr.update(choices=choices, value=default, info=descriptions.get(default, "")),
                   modes_json: json.dumps(descriptions), history: gr.update(choices=hist, value=None),
                   cwd_box: cwd_hints()}
            if session_id:
                yield from open_session(conv, session_id)
        except Exception as exc:  # never a traceback in the page
            yield {chatbot: [error_message(exc, "Could not load the page")]}

    def on_send(conv: Conversation, text: str, mode: str, cwd: str, extra: str,
                page_view: str) -> Iterator[dict[Any, Any]]:
        # NB: a generator event that ends without yielding would set every output to None.
        text = (text or "").strip()
        if not text:
            yield {}
            return
        conv.wait_for_view(_int(page_view))  # a New chat clicked just before must be in place
        epoch, queued = conv.epoch, conv.busy or bool(conv.queued)
        if queued:  # a task of this conversation is still running: send this after it (and the queue)
            conv.enqueue(text)
            yield {msg_box: "", chatbot: conv.shown()}
        if not conv.claim(epoch, waiting=text):
            yield {}  # the tab moved on to another conversation: the queued message goes with it
            return
        try:
            yield {msg_box: "", chatbot: conv.shown([{"role": "user", "content": text},
                                                     notice("⏳ Sending…", kind="live")])}
            try:
                started = client.post_chat(text, session_id=conv.session_id or None, mode=mode or None,
                                           cwd=(cwd or "").strip() or None,
                                           append_system_prompt=(extra or "").strip() or None)
            except ScoutAPIError as exc:
                conv.done = conv.done + [{"role": "user", "content": text},
                                         error_message(exc, "Could not start the task")]
                # Give the text back to send again (unless it waited: the box may hold a newer one).
                yield {chatbot: conv.shown([]), **({} if queued else {msg_box: text})}
                return
            if conv.epoch != epoch:
                return
            conv.session_id = started["session_id"]
            view = TaskView(task_id=started["task_id"], message=text, status=started.get("status", PENDING))
            hist, _ = history_choices()
            yield {chatbot: conv.shown(view.messages()), session_box: conv.session_id,
                   task_box: view.task_id, history: gr.update(choices=hist, value=conv.session_id),
                   send_btn: gr.update(visible=False), stop_btn: gr.update(visible=True, interactive=True),
                   status_md: status_line(conv.session_id, view)}
            # The task as follow last saw it: ended_check must see how it ended.
            view = yield from follow(conv, view, epoch)
            if conv.epoch != epoch:
                return
            hist, _ = history_choices()
            yield {task_box: "", send_btn: gr.update(visible=True), stop_btn: gr.update(visible=False),
                   history: gr.update(choices=hist, value=conv.session_id), **ended_check(conv, view)}
        except Exception as exc:
            if conv.epoch == epoch:
                conv.done = conv.done + conv.live + [error_message(exc, "Something went wrong")]
                yield {chatbot: conv.shown([]), task_box: "", send_btn: gr.update(visible=True),
                       stop_btn: gr.update(visible=False)}
        finally:
            conv.release(epoch)

    def ended_check(conv: Conversation, view: TaskView) -> dict[Any, Any]:
        """After a failed task: if it found the conversation's history gone, say so and stop
        offering to continue it."""
        if view.status != "failed":
            return {}
        try:
            doc = client.session(conv.session_id)
        except ScoutAPIError:
            return {}
        if doc.get("can_continue", True):
            return {}
        conv.done = conv.done + [ended_notice(doc.get("history_lost"))]
        return {chatbot: conv.shown([]), msg_box: composer(False)}

    def on_stop(task_id: str) -> dict[Any, Any]:
        if not task_id:
            return {}
        try:
            doc = client.stop(task_id)
        except ScoutAPIError as exc:
            gr.Warning(f"Could not stop the task: {exc.message}")
            return {stop_btn: gr.update(interactive=True)}
        if not doc.get("stopped") and doc.get("message"):
            gr.Info(doc["message"])
        return {}

    def on_new_chat(conv: Conversation, page_view: str) -> dict[Any, Any]:
        conv.switch(view=_int(page_view))
        hist, _ = history_choices()
        return {chatbot: [], session_box: "", task_box: "", msg_box: composer(True, value=""),
                history: gr.update(choices=hist, value=None), status_md: "",
                send_btn: gr.update(visible=True), stop_btn: gr.update(visible=False)}

    def on_delete(conv: Conversation, session_id: str, page_view: str) -> dict[Any, Any]:
        if not session_id:  # nothing shown, or not confirmed
            conv.saw_view(_int(page_view))
            return {}
        try:
            client.delete_session(session_id)  # the server stops its running tasks first
        except ScoutAPIError as exc:
            conv.saw_view(_int(page_view))
            gr.Warning(f"Could not delete the conversation: {exc.message}")
            return {}
        gr.Info("Conversation deleted.")
        return on_new_chat(conv, page_view)

    def on_pick(conv: Conversation, session_id: str, page_view: str) -> Iterator[dict[Any, Any]]:
        view = _int(page_view)
        if not session_id:
            conv.saw_view(view)  # nothing to open, but a send may be waiting for this number
            yield {}
            return
        try:
            yield {send_btn: gr.update(visible=True), stop_btn: gr.update(visible=False), task_box: ""}
            yield from open_session(conv, session_id, view)
        except Exception as exc:
            conv.switch(view=view)
            yield {chatbot: [error_message(exc, "Could not open the session")], session_box: "", task_box: ""}

    def on_refresh() -> dict[Any, Any]:
        hist, problem = history_choices()
        if problem:
            gr.Warning(f"Could not list sessions: {problem}")
        return {history: gr.update(choices=hist)}

    def on_approve(task_id: str, evt: gr.SelectData) -> None:
        value = str(evt.value if not isinstance(evt.value, dict) else evt.value.get("value", ""))
        decision, _, tool_use_id = value.partition(":")
        if decision not in ("allow", "deny") or not task_id:
            return
        try:
            client.approve(task_id, decision, reason="answered in the Scout UI", tool_use_id=tool_use_id or None)
        except ScoutAPIError as exc:
            gr.Warning(f"Could not answer the approval: {exc.message}")

    def changes_panel(session_id: str) -> dict[Any, Any]:
        """The Changes panel for a session: hidden unless it has a worktree."""
        hidden = {changes_acc: gr.update(visible=False), changes_files: "", changes_diff: ""}
        if not session_id:
            return hidden
        try:
            workspace = client.session(session_id).get("workspace") or {}
            if workspace.get("kind") != "worktree":
                return hidden
            if not workspace.get("base_commit"):
                return {changes_acc: gr.update(visible=True),
                        changes_files: "<p class='scout-note'>Discarded: the next message starts a fresh worktree.</p>",
                        changes_diff: ""}
            changes = client.changes(session_id)
            patch = client.patch(session_id)
        except ScoutAPIError as exc:
            return {changes_acc: gr.update(visible=True),
                    changes_files: f"<p class='scout-note'>{esc(exc.message)}</p>",
                    changes_diff: ""}
        return {changes_acc: gr.update(visible=True),
                changes_files: files_html(changes), changes_diff: diff_html(patch)}

    def worktree_action(conv: Conversation, session_id: str, action: str) -> dict[Any, Any]:
        """Merge or discard the session's worktree; the outcome goes into the conversation."""
        if not session_id:
            return {}  # not confirmed
        try:
            if action == "merge":
                res = client.merge(session_id)
                text = (f"🔀 Merged into <code>{esc(res.get('target_branch') or '')}</code>: "
                        f"<code>{esc(str(res.get('commit'))[:12])}</code> · {esc(changes_line(res))}")
                note = notice(text, kind="done")
            else:
                client.discard(session_id)
                note = notice("🗑️ Worktree discarded: its changes are gone; the next message starts afresh.",
                              kind="stopped")
        except ScoutAPIError as exc:
            body = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
            paths = body.get("paths") or []
            extra = (" Conflicting: " + ", ".join(f"<code>{esc(p)}</code>" for p in paths[:20])) if paths else ""
            untouched = " Your checkout was left as it was." if action == "merge" else ""
            note = notice(f"⚠️ {'Merge' if action == 'merge' else 'Discard'} refused: {esc(exc.message)}."
                          f"{extra}{untouched}", kind="error")
        if conv.session_id == session_id:
            conv.done = conv.done + [note]
        return {chatbot: conv.shown(), **changes_panel(session_id)}

    def on_mode(mode: str, descriptions: str) -> dict[Any, Any]:
        try:
            info = json.loads(descriptions or "{}").get(mode, "")
        except ValueError:
            info = ""
        return {mode_dd: gr.update(info=info)}

    # -- layout -----------------------------------------------------------------------

    with gr.Blocks(title="Scout", fill_height=True, analytics_enabled=False) as demo:
        # A value, not a factory: Gradio runs a factory as a load event of its own, which can
        # replace the tab's Conversation after on_load has started using it.
        state = gr.State(Conversation())
        session_box = gr.Textbox(visible="hidden", elem_id="scout-session-id")
        task_box = gr.Textbox(visible="hidden", elem_id="scout-task-id")
        modes_json = gr.Textbox(visible="hidden", value="{}")
        view_box = gr.Textbox(visible="hidden", value="0")  # filled in by VIEW_*_JS
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=270, elem_id="scout-sidebar"):
                with gr.Row(elem_id="scout-header"):
                    gr.Markdown("# 🔭 Scout\nClaude Code, in the background")
                with gr.Row():
                    new_btn = gr.Button("✏️ New chat", variant="secondary", elem_id="scout-new-chat", scale=3)
                    delete_btn = gr.Button("🗑", variant="secondary", elem_id="scout-delete", scale=0, min_width=48)
                with gr.Row():
                    gr.Markdown("**History**")
                    refresh_btn = gr.Button("↻", size="sm", min_width=40, scale=0, elem_id="scout-refresh")
                history = gr.Radio(choices=[], show_label=False, container=False, elem_id="scout-history",
                                   interactive=True)
                with gr.Accordion("Settings", open=True, elem_id="scout-settings"):
                    mode_dd = gr.Dropdown(choices=[("Scout", "Scout")], value="Scout", label="Mode",
                                          elem_id="scout-mode", interactive=True)
                    cwd_box = gr.Textbox(label="Working directory", placeholder="server default",
                                         elem_id="scout-cwd", max_lines=1)
                    extra_box = gr.Textbox(label="Extra instructions", lines=3, max_lines=8,
                                           placeholder="Appended to the system prompt",
                                           elem_id="scout-extra")
            with gr.Column(scale=4, elem_id="scout-main"):
                chatbot = gr.Chatbot(elem_id="scout-chat", show_label=False, height="calc(100vh - 150px)",
                                     min_height=360,
                                     placeholder=PLACEHOLDER, buttons=["copy", "copy_all"],
                                     feedback_options=None, layout="bubble", scale=1,
                                     group_consecutive_messages=True)
                with gr.Row(equal_height=True):
                    msg_box = gr.Textbox(show_label=False, placeholder=ASK_PLACEHOLDER,
                                         lines=1, max_lines=8, scale=8, container=False, autofocus=True,
                                         elem_id="scout-input", submit_btn=False)
                    send_btn = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id="scout-send")
                    stop_btn = gr.Button("■ Stop", variant="stop", scale=1, min_width=90, visible=False,
                                         elem_id="scout-stop")
                status_md = gr.Markdown("", elem_id="scout-status")
            # A session with a git worktree: what it changed, and Merge / Discard, beside the chat.
            with gr.Column(scale=3, min_width=380, visible=False, elem_id="scout-changes") as changes_acc:
                gr.Markdown("**Changes** in this conversation's worktree")
                changes_files = gr.HTML(elem_id="scout-changes-files")
                with gr.Row():
                    merge_btn = gr.Button("🔀 Merge", variant="primary", size="sm", elem_id="scout-merge",
                                          scale=0, min_width=110)
                    discard_btn = gr.Button("🗑 Discard", variant="stop", size="sm", elem_id="scout-discard",
                                            scale=0, min_width=110)
                    changes_refresh = gr.Button("↻", size="sm", min_width=40, scale=0,
                                                elem_id="scout-changes-refresh")
                changes_diff = gr.HTML(elem_id="scout-diff")

        everything = [state, chatbot, session_box, task_box, msg_box, send_btn, stop_btn, history,
                      mode_dd, modes_json, cwd_box, status_md]
        quiet: dict[str, Any] = dict(show_progress="hidden", concurrency_limit=None, api_visibility="private")

        demo.load(ends_quietly(on_load), inputs=[state], outputs=everything, **quiet)
        send_inputs = [state, msg_box, mode_dd, cwd_box, extra_box, view_box]
        # One event for Enter and the Send button. Each send runs at once ("multiple"): one sent
        # while a task runs waits in Conversation.claim and then goes out as a follow-up. No
        # `cancels=` anywhere: switching conversation bumps the epoch, which stops stale handlers.
        gr.on([msg_box.submit, send_btn.click], ends_quietly(on_send), inputs=send_inputs, outputs=everything,
              trigger_mode="multiple", js=VIEW_NOW_JS, **quiet)
        history.input(ends_quietly(on_pick), inputs=[state, history, view_box], outputs=everything,
                      js=VIEW_NEXT_JS, **quiet)
        new_btn.click(on_new_chat, inputs=[state, view_box], outputs=everything, js=VIEW_NEXT_JS, **quiet)
        delete_btn.click(on_delete, inputs=[state, session_box, view_box], outputs=everything, js=DELETE_JS,
                         **quiet)
        # The chat's own trash button means the same: start afresh (the tasks stay on the server).
        chatbot.clear(on_new_chat, inputs=[state, view_box], outputs=everything, js=VIEW_NEXT_JS, **quiet)
        stop_btn.click(lambda: gr.update(interactive=False), outputs=[stop_btn], queue=False,
                       show_progress="hidden", api_visibility="private")
        stop_btn.click(on_stop, inputs=[task_box], outputs=everything, **quiet)
        refresh_btn.click(on_refresh, outputs=everything, **quiet)
        chatbot.option_select(on_approve, inputs=[task_box], **quiet)
        mode_dd.change(on_mode, inputs=[mode_dd, modes_json], outputs=everything, **quiet)
        session_box.change(None, inputs=[session_box], js=URL_SYNC_JS)
        # The Changes panel follows the session shown, and each task's start and end.
        panel = [changes_acc, changes_files, changes_diff]
        for trigger in (session_box.change, task_box.change, changes_refresh.click):
            trigger(changes_panel, inputs=[session_box], outputs=panel, **quiet)
        merge_btn.click(lambda conv, sid: worktree_action(conv, sid, "merge"), inputs=[state, session_box],
                        outputs=[chatbot, *panel], js=MERGE_JS, **quiet)
        discard_btn.click(lambda conv, sid: worktree_action(conv, sid, "discard"), inputs=[state, session_box],
                          outputs=[chatbot, *panel], js=DISCARD_JS, **quiet)
    return demo


# =====================================================================================
# The door: Host, Origin and login throttle around Gradio's own app


class Doorman:
    """ASGI middleware wrapped around everything Gradio serves (its CORS layer included):

    - a ``Host`` this UI does not serve is answered 403 (DNS rebinding);
    - a state-changing request (``/gradio_api/queue/join`` is a POST) or a WebSocket from a
      foreign ``Origin`` is answered 403, and no answer to a foreign Origin carries an
      ``Access-Control-Allow-*`` header (Gradio's own CORS layer allows any Origin when the
      Host is not a loopback name);
    - ``POST /login`` is throttled per client address after repeated failures (429).
    """

    def __init__(self, app: Any, rules: HostRules, throttle: LoginThrottle) -> None:
        self.app, self.rules, self.throttle = app, rules, throttle

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host, origin = headers.get("host"), headers.get("origin")
        method = "POST" if scope["type"] == "websocket" else scope.get("method", "GET")
        refused = self.rules.refusal(method, host, origin)
        if refused:
            return await _answer(scope, receive, send, 403, refused.code, refused.message)
        foreign = origin is not None and not self.rules.origin_allowed(origin, host)
        if scope["type"] == "http" and method == "POST" and scope.get("path", "").rstrip("/") == "/login":
            return await self._login(scope, receive, send)
        if foreign:
            send = _without_cors(send)
        return await self.app(scope, receive, send)

    async def _login(self, scope: dict, receive: Any, send: Any) -> None:
        client = (scope.get("client") or ("?",))[0]
        wait = self.throttle.retry_after(client)
        if wait:
            return await _answer(scope, receive, send, 429, "too_many_logins",
                                 f"too many failed logins; try again in {wait} s", {"retry-after": str(wait)})
        status: list[int] = []

        async def noting(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, noting)
        if status and status[0] == 200:
            self.throttle.succeeded(client)
        else:
            self.throttle.failed(client)


async def _answer(scope: dict, receive: Any, send: Any, status: int, code: str, message: str,
                  extra: dict[str, str] | None = None) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _without_cors(send: Any) -> Any:
    async def stripped(message: dict) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [(k, v) for k, v in message.get("headers", [])
                                  if not k.lower().startswith(b"access-control-allow-")]
        await send(message)
    return stripped


def guarded(rules: HostRules) -> Any:
    """A lifespan for Gradio's app that puts the Doorman around its whole middleware stack.
    Gradio adds its CORS layer itself, outermost; the lifespan runs once that stack is built
    and before uvicorn accepts a connection, so no request gets past without the Doorman."""
    import contextlib

    throttle = LoginThrottle()

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        app.middleware_stack = Doorman(app.middleware_stack or app.build_middleware_stack(), rules, throttle)
        yield

    return lifespan


def ui_login(auth: tuple[str, str] | None, token: str | None) -> Any:
    """What the login form checks: SCOUT_UI_AUTH's user and password when set; otherwise,
    when the API has a token, that token as the password (any user name). None: no login
    (no token and no SCOUT_UI_AUTH, on loopback only)."""
    import hmac

    if auth is not None:
        user, password = auth

        def check_pair(name: str, given: str) -> bool:
            return hmac.compare_digest(name.encode(), user.encode()) & \
                hmac.compare_digest(given.encode(), password.encode())
        return check_pair
    if token:
        return lambda _name, given: hmac.compare_digest(given.encode(), token.encode())
    return None


# =====================================================================================
# Command line


def main(argv: list[str] | None = None) -> int:
    """``python -m scout.ui``: serve the UI until Ctrl-C or SIGTERM."""
    make_undumpable()  # the API token it holds stays out of reach of the agent's tools
    vault.reexec_without_secrets()
    env = {**os.environ, **vault.take()}
    parser = argparse.ArgumentParser(
        prog="python -m scout.ui",
        description="Scout's web chat UI (Gradio). It talks to a running Scout API server over HTTP.")
    parser.add_argument("--host", default=env.get("SCOUT_UI_HOST") or "127.0.0.1",
                        help="address to listen on (SCOUT_UI_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None,
                        help=f"port (SCOUT_UI_PORT, default {DEFAULT_UI_PORT})")
    parser.add_argument("--api-url", default=env.get("SCOUT_API_URL") or DEFAULT_API_URL,
                        help=f"the Scout API server (SCOUT_API_URL, default {DEFAULT_API_URL})")
    parser.add_argument("--token", default=None,
                        help="bearer token for the API (SCOUT_API_TOKEN; prefer the variable: "
                             "arguments show in the process list)")
    parser.add_argument("--auth", default=env.get("SCOUT_UI_AUTH") or None, metavar="USER:PASSWORD",
                        help="ask for this user and password before showing the UI (SCOUT_UI_AUTH); "
                             "required to listen beyond loopback")
    args = parser.parse_args(argv)
    logging.basicConfig(level=env.get("SCOUT_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        port = args.port if args.port is not None else int(env.get("SCOUT_UI_PORT") or DEFAULT_UI_PORT)
    except ValueError:
        print(f"scout ui: SCOUT_UI_PORT must be a whole number, not {env.get('SCOUT_UI_PORT')!r}", file=sys.stderr)
        return 2
    token = args.token or env.get("SCOUT_API_TOKEN") or None
    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            print("scout ui: --auth / SCOUT_UI_AUTH must look like USER:PASSWORD", file=sys.stderr)
            return 2
        auth = (user, password)
    if not is_loopback(args.host) and auth is None:
        print(f"scout ui: refusing to listen on {args.host} without SCOUT_UI_AUTH: anyone who can reach "
              "the page could run commands on this machine through Scout", file=sys.stderr)
        return 2

    interrupt_on_sigterm()  # stop as on Ctrl-C
    demo = build_ui(args.api_url, token)
    demo.queue(default_concurrency_limit=None)
    rules = HostRules.build(args.host, [h for h in (env.get("SCOUT_ALLOWED_HOSTS") or "").split(",") if h.strip()],
                            [o for o in (env.get("SCOUT_CORS_ORIGINS") or "").split(",") if o.strip()])
    try:
        demo.launch(server_name=args.host, server_port=port, prevent_thread_lock=True, quiet=True,
                    show_error=False, ssr_mode=False, footer_links=[], run_history=False,
                    enable_monitoring=False, max_threads=200, auth=ui_login(auth, token), theme=THEME, css=CSS,
                    inbrowser=False, share=False, app_kwargs={"lifespan": guarded(rules)})
    except OSError as exc:
        reason = ("the port is already in use; choose another with --port or SCOUT_UI_PORT"
                  if "empty port" in str(exc) or "in use" in str(exc) else str(exc))
        print(f"scout ui: cannot listen on {args.host}:{port}: {reason}", file=sys.stderr)
        return 2
    quiet_when_idle(demo._queue)  # Gradio's queue polls every 1 ms otherwise (~5 % of a core idle)
    print(f"Scout UI on http://{args.host}:{port} (API {args.api_url})", flush=True)
    try:
        while demo.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
