"""`scout mcp`: Scout's API as tools of an MCP server over stdio.

An MCP client (Claude Code, Claude Desktop, any agent) starts `scout mcp` as a
subprocess and gets tools to hand work to a running Scout and follow it:
start_task, get_task (which can wait for the task to settle), list_tasks,
stop_task, answer_approval and get_changes. Each tool is one or two calls of the
HTTP API through :class:`~scout.client.ScoutClient`; nothing here runs a task or
touches the database, so this module is client-side only: it imports the client,
the event fold (scout.reducer), the vocabulary and the `mcp` package, no process code.

Every failure the client could meet (Scout down, the API refusing a request, an
unknown task, a bad argument) comes back as a tool error (``isError: true``) with
a sentence the calling model can act on; the MCP server itself keeps running.
The tools' results are typed (dataclasses), so the server also publishes an
output schema for each and sends the same data as structured content.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable, Literal, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from .client import ScoutAPIError, ScoutClient, ScoutUnreachable
from .reducer import TaskFold, Text, Tool
from .transcript import tool_summary
from .vocab import TERMINAL, WAITING, TaskStatus

__all__ = ["build_server", "serve", "TaskReport", "StartedTask", "TaskList", "MAX_WAIT_SECONDS"]

MAX_WAIT_SECONDS = 60  # longer waits risk the MCP client's own request timeout
POLL_SECONDS = 0.25  # how often get_task looks while it waits
PICKUP_SECONDS = 5.0  # answer_approval waits at most this long for the task to take its answer up
MAX_ANSWER_CHARS = 20_000  # an answer longer than this is cut from the front (the end matters most)
RECENT_STEPS = 5
SETTLED = (*TERMINAL, WAITING)  # where a wait ends: nothing more happens without the caller
ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
_ID = re.compile(ID_PATTERN)

INSTRUCTIONS = """\
Scout runs Claude Code tasks in the background on its own machine and keeps their history.
Hand it a self-contained piece of work with start_task, go on with your own work, and check on
it with get_task (pass wait_seconds to wait up to a minute for it to finish or to need an
approval). A task that asks for an approval stays `waiting` until answer_approval is called.
Follow-up messages in the same session_id continue the same conversation."""

T = TypeVar("T")


# -- results -----------------------------------------------------------------------------

@dataclass
class StartedTask:
    """A task Scout accepted: it runs in the background from now on."""

    task_id: str
    session_id: str
    status: str


@dataclass
class ApprovalRequest:
    """A tool use the task waits for a decision on (answer with answer_approval)."""

    tool_use_id: str
    tool: str
    input: Any = None
    title: str | None = None


@dataclass
class TaskSummary:
    """A task as list_tasks shows it."""

    task_id: str
    session_id: str
    status: str
    message: str
    mode: str | None = None
    cwd: str | None = None
    created_at: float | None = None
    finished_at: float | None = None
    error: str | None = None


@dataclass
class TaskReport(TaskSummary):
    """Where a task stands: its status, what it has answered so far, and how it ended."""

    finished: bool = False
    answer: str = ""
    result: dict[str, Any] | None = None
    pending_approval: ApprovalRequest | None = None
    recent_steps: list[str] = field(default_factory=list)
    started_at: float | None = None


@dataclass
class TaskList:
    """Tasks, newest first."""

    tasks: list[TaskSummary]
    more: bool = False


@dataclass
class StopOutcome:
    task_id: str
    status: str
    stopped: bool


@dataclass
class ApprovalOutcome:
    task_id: str
    tool_use_id: str
    decision: str


# -- reading a status document ------------------------------------------------------------

def summary_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """A task document's (status or list entry) TaskSummary fields."""
    return {"task_id": doc["task_id"], "session_id": doc["session_id"], "status": doc["status"],
            "message": doc.get("message") or "", "mode": doc.get("mode"), "cwd": doc.get("cwd"),
            "created_at": doc.get("created_at"), "finished_at": doc.get("finished_at"), "error": doc.get("error")}


def task_report(doc: dict[str, Any]) -> TaskReport:
    """A status document (with its events) as the report get_task gives."""
    fold = TaskFold.of(doc.get("events") or [])
    asking = fold.asking if doc["status"] == WAITING else []
    return TaskReport(
        **summary_fields(doc), finished=doc["status"] in TERMINAL, answer=answer_so_far(doc, fold),
        result=doc.get("result"), started_at=doc.get("started_at"),
        pending_approval=ApprovalRequest(asking[0].tool_use_id, asking[0].tool, asking[0].input,
                                         asking[0].title) if asking else None,
        recent_steps=[f"{t.name}: {tool_summary(t.name, t.input, width=160)}"
                      for t in fold.parts if isinstance(t, Tool) and t.called][-RECENT_STEPS:])


def answer_so_far(doc: dict[str, Any], fold: TaskFold) -> str:
    """The task's answer: the result's text once there is one, else the text written so far
    (the main agent's, not its sub-agents'), cut from the front past MAX_ANSWER_CHARS."""
    result_text = (doc.get("result") or {}).get("text")
    if isinstance(result_text, str) and result_text.strip():
        text = result_text
    else:
        text = "\n\n".join(p.text.strip() for p in fold.parts
                            if isinstance(p, Text) and p.parent is None and p.text.strip())
    return text if len(text) <= MAX_ANSWER_CHARS else "…" + text[-MAX_ANSWER_CHARS:]


def _taken_up(doc: dict[str, Any], tool_use_id: str) -> bool:
    """Whether the task has acted on the answer to approval `tool_use_id` (or has ended)."""
    if doc["status"] in TERMINAL:
        return True
    return all(a.tool_use_id != tool_use_id for a in TaskFold.of(doc.get("events") or []).asking)


# -- calling the API ----------------------------------------------------------------------

def checked_id(value: str, what: str) -> str:
    """An id safe to put in a URL path; anything else is the caller's mistake."""
    value = value.strip()
    if not _ID.match(value) or set(value) == {"."}:
        raise ToolError(f"{what} {value!r} is not a Scout id (1-128 letters, digits, '.', '_' or '-')")
    return value


def api_call(client: ScoutClient, call: Callable[[], T]) -> T:
    """Run one API call; what goes wrong becomes a ToolError the model can read."""
    try:
        return call()
    except ScoutUnreachable as exc:
        raise ToolError(f"Scout is not reachable at {client.base_url} ({exc.reason}). Is the Scout server "
                        "running? `scout mcp` finds it through SCOUT_URL (and SCOUT_API_TOKEN).") from None
    except ScoutAPIError as exc:
        hint = " Set SCOUT_API_TOKEN for `scout mcp`." if exc.status == 401 else ""
        raise ToolError(f"Scout refused the request: {exc.message} (code {exc.code}).{hint}") from None


# -- the server ---------------------------------------------------------------------------

TaskId = Annotated[str, Field(description="The task's id, as start_task or list_tasks gave it.",
                              pattern=ID_PATTERN)]


def build_server(client: ScoutClient) -> MCPServer:
    """The MCP server with Scout's tools, each calling the API through `client`."""
    server = MCPServer("scout", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool()
    def start_task(
        message: Annotated[str, Field(min_length=1, description=(
            "What Claude Code should do, written as a complete, self-contained request: the task "
            "runs on its own and cannot see your conversation."))],
        session_id: Annotated[str | None, Field(pattern=ID_PATTERN, description=(
            "Continue this session (conversation): Claude Code sees the earlier tasks in it. "
            "Omit to start a new session; tasks of one session run one after another."))] = None,
        mode: Annotated[str | None, Field(description=(
            "What Claude Code may do: 'Scout' (default: read, search, run commands, no edits), "
            "'Plan' (plan only), 'Code' (edit files), or a mode the Scout operator defined."))] = None,
        cwd: Annotated[str | None, Field(description=(
            "Absolute working directory on Scout's machine (inside its allowed roots). Omit for the "
            "session's, else Scout's default."))] = None,
        workspace: Annotated[Literal["shared", "worktree", "auto"] | None, Field(description=(
            "Where a new session's tasks work on files: 'shared' (in cwd itself), 'worktree' (a git "
            "worktree of the session's own; see its edits with get_changes) or 'auto'. Omit for the "
            "mode's default. Needs a Scout server with worktree support."))] = None,
    ) -> StartedTask:
        """Start a Claude Code task in Scout, in the background, and return its task_id and session_id
        at once. Follow it with get_task (wait_seconds waits for it to finish). Use it for work that
        takes a while: investigations, reviews, changes in another directory."""
        if session_id is not None:
            session_id = checked_id(session_id, "session_id")
        options = {"workspace": workspace} if workspace is not None else {}
        doc = api_call(client, lambda: client.post_chat(message, session_id=session_id, mode=mode, cwd=cwd,
                                                        **options))
        return StartedTask(doc["task_id"], doc["session_id"], doc["status"])

    @server.tool()
    def get_task(
        task_id: TaskId,
        wait_seconds: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS, description=(
            f"Wait up to this many seconds (at most {MAX_WAIT_SECONDS}) for the task to finish or to "
            "ask for an approval, returning as soon as it does. 0 (default) answers at once."))] = 0,
    ) -> TaskReport:
        """Where a Scout task stands: status (pending, running, waiting, completed, failed,
        cancelled), the answer so far, the result once finished, the error if it failed, its last
        steps, and the approval it waits for (answer it with answer_approval). Call again with
        wait_seconds to keep waiting for a long task."""
        task_id = checked_id(task_id, "task_id")
        deadline = time.monotonic() + wait_seconds
        while True:
            brief = api_call(client, lambda: client.status(task_id, events=False))
            left = deadline - time.monotonic()
            if brief["status"] in SETTLED or left <= 0:
                break
            time.sleep(min(POLL_SECONDS, left))
        return task_report(api_call(client, lambda: client.status(task_id)))

    @server.tool()
    def list_tasks(
        status: Annotated[TaskStatus | None, Field(description="Only tasks in this status.")] = None,
        session_id: Annotated[str | None, Field(pattern=ID_PATTERN,
                                                description="Only this session's tasks.")] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="At most this many (default 20).")] = 20,
    ) -> TaskList:
        """List Scout's tasks, newest first, without their events (use get_task for one task's
        answer). Filter by status or session."""
        page = api_call(client, lambda: client.tasks(status=status, session_id=session_id, limit=limit))
        return TaskList([TaskSummary(**summary_fields(t)) for t in page["tasks"]], more=bool(page.get("next_cursor")))

    @server.tool()
    def stop_task(task_id: TaskId) -> StopOutcome:
        """Stop a running, waiting or queued Scout task and everything it started; returns once it
        has stopped. A task that already finished keeps its ending (stopped is then false)."""
        task_id = checked_id(task_id, "task_id")
        doc = api_call(client, lambda: client.stop(task_id))
        return StopOutcome(doc["task_id"], doc["status"], bool(doc["stopped"]))

    @server.tool()
    def answer_approval(
        task_id: TaskId,
        decision: Annotated[Literal["allow", "deny"], Field(description="Let the tool run, or refuse it.")],
        reason: Annotated[str | None, Field(description="Why; Claude Code is told.")] = None,
        tool_use_id: Annotated[str | None, Field(description=(
            "Which request, when several wait (get_task's pending_approval.tool_use_id); default: "
            "the oldest."))] = None,
    ) -> ApprovalOutcome:
        """Answer the tool approval a Scout task waits for (its status is `waiting`; get_task shows
        the tool and its input). The task goes on at once."""
        task_id = checked_id(task_id, "task_id")
        doc = api_call(client, lambda: client.approve(task_id, decision, reason, tool_use_id))
        # The task takes the answer up within a moment; until it has, it still looks `waiting` with
        # this request open, and a get_task(wait_seconds=...) right after would return at once.
        deadline = time.monotonic() + PICKUP_SECONDS
        while time.monotonic() < deadline and not _taken_up(api_call(client, lambda: client.status(task_id)),
                                                            doc["tool_use_id"]):
            time.sleep(POLL_SECONDS / 2)
        return ApprovalOutcome(doc["task_id"], doc["tool_use_id"], doc["decision"])

    @server.tool()
    def get_changes(
        session_id: Annotated[str, Field(pattern=ID_PATTERN, description="The session whose changes to show.")],
    ) -> dict[str, Any]:
        """The file changes a session's tasks made in their workspace (on Scout servers that give
        tasks workspaces of their own)."""
        session_id = checked_id(session_id, "session_id")
        return api_call(client, lambda: client.changes(session_id))

    return server


def serve(client: ScoutClient) -> int:
    """Serve the tools over stdio until the MCP client closes the connection."""
    build_server(client).run("stdio")
    return 0
