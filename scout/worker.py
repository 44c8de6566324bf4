"""The worker: runs one task by driving Claude Code through claude-agent-sdk.

It runs in a process of its own (started by the supervisor) and appends every
message Claude Code sends to the event log the moment it arrives. It owns the
task's happy ending (completed, or failed with Claude Code's own error, or cancelled
by an interrupt it carried out); the supervisor owns every other ending (cancelled,
lost, timed out).

Warm sessions (SCOUT_SESSION_IDLE > 0): the worker holds its Claude Code process in a
ClaudeSDKClient, tells the server over a unix socket (scout/warm.py, the worker's side)
when a turn is done, and waits there, idle, for the next task of its session: the
server hands it over, and the same Claude Code answers it with no start-up and no
resume. Idle for SCOUT_SESSION_IDLE seconds, or handed a task it cannot take, the
worker exits; a task that ends otherwise than completed (or interrupted) ends it too.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from claude_agent_sdk import (
    AssistantMessage, CanUseToolShadowedWarning, ClaudeAgentOptions, ClaudeSDKClient, HookContext, HookMatcher,
    PermissionResult, PermissionResultAllow, PermissionResultDeny, ResultMessage, StreamEvent, SystemMessage,
    TextBlock, ThinkingBlock, ToolPermissionContext, ToolResultBlock, ToolUseBlock, UserMessage,
)

from . import sandbox, workspace
from .backends import open_store
from .mirror import ScoutSessionStore, history_available
from .modes import tool_matches
from .store import EventLog, Session, Task
from .taskspec import WorkerSpec, warm_key
from .vocab import ACTIVE, CANCELLED, COMPLETED, FAILED, RUNNING, WAITING, EventType
from .validate import ApiError, check_cwd
from .warm import WarmLine

APPROVAL_POLL_SECONDS = 0.1

# Scout's can_use_tool is meant only for the tools a mode does not already allow.
warnings.filterwarnings("ignore", category=CanUseToolShadowedWarning)


@dataclass
class Turn:
    """The task the worker's Claude Code is on now (a warm worker runs several, one by one);
    the approval callback and the error handling ask it."""

    task: Task
    interrupted: bool = False  # the server asked to interrupt this turn (on_busy=interrupt)


def run(spec: WorkerSpec) -> int:
    """Run the task the spec names (and, warm, its session's next ones); the exit code."""
    # A write that meets another process's lock waits for it, up to the task's idle limit.
    store = open_store(spec.db, migrate=False, max_bytes=spec.db_max_bytes, pool_size=2,
                       busy_timeout=spec.busy_timeout)
    store.max_events_per_task = spec.max_events_per_task  # past it: EventCapError, the task fails
    task = store.get_task(spec.task_id)
    if task is None or task.status not in ACTIVE or task.stop_requested:
        return 0  # stopped before it began: a stop's sweep may have come before our title
    private_tmp = tempfile.mkdtemp(prefix=f"scout-task-{task.id[:8]}-")  # the task's own, 0700

    def end_on_sigterm(signum: int, frame: Any) -> None:  # a stop, or a warm process evicted
        shutil.rmtree(private_tmp, ignore_errors=True)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, end_on_sigterm)
    turn = Turn(task)
    try:
        check_where(task, spec)
        asyncio.run(_serve(store, turn, spec, private_tmp))
        return 0
    except HistoryLost as exc:  # the session is over: later messages to it are refused at once
        print(f"scout worker: {exc}", file=sys.stderr, flush=True)
        store.mark_history_lost(turn.task.session_id, str(exc))
        store.transition(turn.task.id, FAILED, error=str(exc), unless_stop_requested=True)
        return 1
    except Exception as exc:  # the task fails; the process exits cleanly
        print(f"scout worker: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        workspace.log_task_changes(store, turn.task.id)
        store.transition(turn.task.id, FAILED, error=_describe(exc), unless_stop_requested=True)
        return 1
    finally:
        shutil.rmtree(private_tmp, ignore_errors=True)
        store.close()


class HistoryLost(Exception):
    """The session's earlier conversation is gone: neither Claude Code's file nor Scout's copy."""


def history_lost_message(session: Session) -> str:
    return (f"session {session.id} cannot be continued: its earlier conversation (Claude Code session "
            f"{session.claude_session_id}) is gone: Claude Code's transcript file was deleted and Scout "
            f"holds no copy of it. Start a new session (send without session_id).")


def check_history(store: EventLog, session: Session | None) -> None:
    """Raise HistoryLost unless the session is new or its conversation can be resumed."""
    if session is None:
        return
    if session.history_lost:
        raise HistoryLost(session.history_lost)
    if session.claude_session_id and not history_available(store, session.claude_session_id):
        raise HistoryLost(history_lost_message(session))


class CannotRun(Exception):
    """The task may not start as it is: its cwd left the roots, or its mode's sandbox is missing."""


def check_where(task: Task, spec: WorkerSpec) -> None:
    """Checks made again just before Claude Code starts, since things change while a task
    waits in the queue: its cwd (a directory swapped for a symlink to elsewhere, roots
    narrowed by a restart) must still resolve inside the roots, to the path it resolved to
    when the task was created; and a mode with sandbox = "required" must have one."""
    cwd = task.options.get("cwd")
    roots = spec.allowed_roots
    if cwd and roots is not None:
        try:
            real = check_cwd(cwd, roots)
        except ApiError as exc:
            raise CannotRun(f"cwd is no longer usable: {exc.message}") from None
        if real != cwd:
            raise CannotRun(f"cwd {cwd} now resolves to {real}: it was replaced after the task was created")
    if task.options.get("sandbox") == "required" and not task.options.get("sandboxed"):
        raise CannotRun(f"mode {task.options.get('mode')} requires the OS sandbox (sandbox = \"required\"), "
                        f"which is not available here: {task.options.get('sandbox_error') or 'unknown reason'}")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 2000 else text[:2000] + "…"


def build_options(store: EventLog, turn: Turn, spec: WorkerSpec, cwd: str | None = None,
                  private_tmp: str | None = None) -> ClaudeAgentOptions:
    """Translate a task's resolved options (mode, overrides, session) into the SDK's; `cwd`
    is where it runs when that is not its own cwd (the same place in its worktree)."""
    task = turn.task
    opts = task.options
    session = store.get_session(task.session_id)
    check_history(store, session)
    append = "\n\n".join(p for p in (opts.get("mode_prompt"), opts.get("append_system_prompt")) if p)
    system_prompt: dict[str, Any] = {"type": "preset", "preset": "claude_code"}
    if append:
        system_prompt["append"] = append
    where = cwd or opts.get("cwd") or os.getcwd()
    # Scout's data directory stays closed, except the task's own worktree, which lives
    # under SCOUT_WORKTREES, by default inside it.
    worktree = workspace.Workspace.from_dict(opts.get("workspace")).path
    private = sandbox.open_to(list(opts.get("private_dirs") or []), worktree)
    extra: dict[str, Any] = {}
    if opts.get("sandboxed"):
        extra["sandbox"] = sandbox.settings(
            where, opts.get("sandbox_writes") or "cwd", private,
            list(opts.get("allowed_domains") or []), bool({"Bash", "*"} & set(opts.get("approval_tools") or [])),
            worktree)
    return ClaudeAgentOptions(
        cwd=cwd or opts.get("cwd") or None,
        system_prompt=system_prompt,  # type: ignore[arg-type]
        resume=session.claude_session_id if session else None,
        permission_mode=opts.get("permission_mode") or "default",
        allowed_tools=list(opts.get("allowed_tools") or []),
        disallowed_tools=list(opts.get("disallowed_tools") or []) + sandbox.read_denials(private),
        mcp_servers=dict(opts.get("mcp_servers") or {}),
        model=opts.get("model"),
        max_turns=opts.get("max_turns"),
        max_budget_usd=opts.get("max_budget_usd"),
        include_partial_messages=bool(opts.get("stream_deltas", True)),
        cli_path=spec.claude_path,
        can_use_tool=_approver(store, turn, spec),
        hooks=_ask_hooks(opts),  # type: ignore[arg-type]
        stderr=lambda line: print(line, file=sys.stderr, flush=True),
        env={"CLAUDE_CODE_TMPDIR": private_tmp} if private_tmp else {},
        # Every transcript line also goes to Scout's log as Claude Code writes it ("eager"),
        # and resume restores the conversation from there when Claude Code's file is gone.
        # (list_sessions and list_session_summaries are left out on purpose: the SDK probes for
        # them, and Scout always resumes by id, never "the latest session".)
        session_store=ScoutSessionStore(store, task.session_id),  # type: ignore[abstract]
        session_store_flush="eager",
        **extra,
    )


def _approver(store: EventLog, turn: Turn, spec: WorkerSpec) -> Callable[..., Awaitable[PermissionResult]]:
    """The can_use_tool callback: ask a person over HTTP for the mode's approval tools.

    Claude Code calls it only for tool uses its permission mode and allowed_tools do
    not already settle. Tools the mode names in approval_tools wait for
    POST /chat/{id}/approve (no answer in time means deny); anything else is denied. It
    asks for the task of the turn at hand (a warm process's mode, and so its approval
    tools, never change between turns).
    """
    needs_person = list(turn.task.options.get("approval_tools") or [])
    timeout = float(spec.approval_timeout)

    async def can_use_tool(tool: str, tool_input: dict[str, Any],
                           context: ToolPermissionContext) -> PermissionResultAllow | PermissionResultDeny:
        task = turn.task
        if not tool_matches(tool, needs_person):
            store.append_event(task.id, EventType.PERMISSION_DENIED, {"tool": tool, "input": tool_input,
                                                              "reason": "not allowed in this mode"})
            return PermissionResultDeny(message=f"{tool} is not allowed in mode {task.options.get('mode')}")
        tool_use_id = context.tool_use_id or f"{tool}-{time.time()}"
        store.ask_approval(task.id, tool_use_id, tool, tool_input, {
            "tool_use_id": tool_use_id, "tool": tool, "input": tool_input,
            "title": context.title, "timeout": timeout})
        deadline = time.monotonic() + timeout
        answer = None
        while time.monotonic() < deadline:
            answer = store.approval_decision(task.id, tool_use_id)
            if answer:
                break
            await asyncio.sleep(APPROVAL_POLL_SECONDS)
        if answer is None:
            store.decide_approval(task.id, "deny", "no answer in time", tool_use_id)
            answer = ("deny", "no answer in time")
        decision, reason = answer
        store.append_event(task.id, EventType.APPROVAL, {"tool_use_id": tool_use_id, "decision": decision,
                                                 "reason": reason})
        store.transition(task.id, RUNNING, only_from=(WAITING,), unless_stop_requested=True, started_at=task.started_at)
        if decision == "allow":
            return PermissionResultAllow(updated_input=tool_input)
        return PermissionResultDeny(message=reason or "denied by a person")

    return can_use_tool


def _ask_hooks(opts: dict[str, Any]) -> dict[str, list[HookMatcher]] | None:
    """A PreToolUse hook that sends every use of an approval tool to can_use_tool.

    Claude Code approves Bash commands it takes for read-only (`ls`) and tools the mode
    allows before it asks can_use_tool; a hook runs before that decision, and its "ask"
    makes the CLI ask (tried with CLI 2.1.332, also under bypassPermissions). A mode with
    auto_approve_read_only = true leaves Claude Code's own judgement in place.
    """
    approval = set(opts.get("approval_tools") or [])
    if not approval or opts.get("auto_approve_read_only"):
        return None

    async def ask_a_person(hook_input: Any, tool_use_id: str | None, context: HookContext) -> Any:
        if "*" not in approval and hook_input.get("tool_name") not in approval:
            return {}  # no opinion: Claude Code decides as usual
        return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "ask",
                                       "permissionDecisionReason": "the mode asks a person for this tool"}}

    return {"PreToolUse": [HookMatcher(matcher=None, hooks=[ask_a_person])]}


async def _serve(store: EventLog, turn: Turn, spec: WorkerSpec, private_tmp: str | None = None) -> None:
    """Run the turn's task; warm, then wait for the session's next task and run it in the same
    Claude Code, until idle too long, handed one it cannot take, or a turn ends badly."""
    where = workspace.begin_task(store, turn.task, spec.worktrees)
    options = build_options(store, turn, spec, where, private_tmp)
    key = warm_key(turn.task.options)
    line = WarmLine(spec, turn.task.session_id, key) if spec.session_idle > 0 else None
    live = {"model": turn.task.options.get("model"), "permission_mode": options.permission_mode}
    async with ClaudeSDKClient(options) as client:
        if line is not None:
            line.start(turn.task.id)
        while await _turn(store, turn, client, line):
            assert line is not None
            task = await line.next_task(store, spec.session_idle)
            if task is None:
                return  # idle too long, ended by the server, or handed a task it cannot take
            turn.task, turn.interrupted = task, False
            check_where(task, spec)
            if workspace.begin_task(store, task, spec.worktrees) != where:
                raise CannotRun("the task's worktree is not where this session's Claude Code runs")
            await _apply_live(client, task, live)


async def _apply_live(client: ClaudeSDKClient, task: Task, live: dict[str, Any]) -> None:
    """A follow-up's model and permission mode, changed in the running Claude Code."""
    model = task.options.get("model")
    if model != live["model"]:
        await client.set_model(model)
        live["model"] = model
    mode = task.options.get("permission_mode") or "default"
    if mode != live["permission_mode"]:
        await client.set_permission_mode(mode)  # type: ignore[arg-type]  # a mode's, checked at load
        live["permission_mode"] = mode


async def _turn(store: EventLog, turn: Turn, client: ClaudeSDKClient, line: WarmLine | None) -> bool:
    """Send the turn's message and log what comes back, up to its result; whether the worker
    may stay warm for the next one."""
    task = turn.task
    await client.query(task.message)
    watcher = asyncio.create_task(line.interrupts(task.id, lambda: _interrupt(turn, client))) if line else None
    try:
        async for message in client.receive_response():
            if isinstance(message, ResultMessage):
                return await _finish(store, turn, message, line)
            for type_, payload in translate(message):
                store.append_event(task.id, type_, payload)
                if type_ == EventType.SYSTEM and payload.get("subtype") == "init" and payload.get("session_id"):
                    store.set_claude_session(task.session_id, payload["session_id"], task.options.get("cwd"))
    finally:
        if watcher is not None:
            watcher.cancel()
    raise RuntimeError("Claude Code ended without a result: its output held no answer "
                       "(not valid stream-json, or the CLI stopped early)")


async def _interrupt(turn: Turn, client: ClaudeSDKClient) -> None:
    turn.interrupted = True
    await client.interrupt()


async def _finish(store: EventLog, turn: Turn, msg: ResultMessage, line: WarmLine | None) -> bool:
    """Log the result and end the task; whether the worker stays warm. The server hears
    "idle" before the task's ending is logged, so a follow-up posted the moment it ends
    finds the session warm."""
    task = turn.task
    summary: dict[str, Any] = {
        "text": msg.result, "subtype": msg.subtype, "is_error": msg.is_error,
        "duration_ms": msg.duration_ms, "num_turns": msg.num_turns,
        "total_cost_usd": msg.total_cost_usd, "usage": msg.usage,
        "claude_session_id": msg.session_id, "stop_reason": msg.stop_reason,
    }
    if msg.api_error_status is not None:
        summary["api_error_status"] = msg.api_error_status
    if msg.errors:
        summary["errors"] = list(msg.errors)
    store.append_event(task.id, EventType.RESULT, summary)
    workspace.log_task_changes(store, task.id)  # before the ending: streams close at the final status
    if msg.session_id:
        store.set_claude_session(task.session_id, msg.session_id, task.options.get("cwd"))
    if turn.interrupted:
        if line is not None:
            await line.idle(task.id)
        return store.transition(task.id, CANCELLED, result=summary, note={"interrupted": True},
                                unless_stop_requested=True) and line is not None
    if msg.is_error:
        store.transition(task.id, FAILED, error=result_error(msg), result=summary, unless_stop_requested=True)
        return False
    if line is not None:
        await line.idle(task.id)
    return store.transition(task.id, COMPLETED, result=summary, unless_stop_requested=True) and line is not None


def result_error(msg: ResultMessage) -> str:
    """Claude Code's own reason for a failed result, in plain words."""
    reasons = {
        "error_max_turns": "maximum number of turns reached",
        "error_max_budget_usd": "spending cap (max_budget_usd) reached",
        "error_during_execution": "Claude Code failed during execution",
    }
    parts = []
    if msg.api_error_status:
        parts.append(f"API error {msg.api_error_status}")
    if msg.subtype in reasons:
        parts.append(reasons[msg.subtype])
    if msg.result:
        parts.append(msg.result.strip())
    if msg.errors:
        parts.extend(str(e) for e in msg.errors)
    return ": ".join(parts) or f"Claude Code reported an error ({msg.subtype})"


def _tool_result_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            out.append(block.get("text", ""))
        else:
            out.append(str(block))
    return "\n".join(out)


def translate(message: Any) -> list[tuple[EventType, dict[str, Any]]]:
    """One SDK message as event-log entries (type, payload); see the README's event schema."""
    events: list[tuple[EventType, dict[str, Any]]] = []
    if isinstance(message, StreamEvent):
        ev = message.event
        if ev.get("type") == "content_block_delta" and ev.get("delta", {}).get("type") == "text_delta":
            events.append((EventType.TEXT_DELTA, {"text": ev["delta"].get("text", ""),
                                          "parent_tool_use_id": message.parent_tool_use_id}))
    elif isinstance(message, AssistantMessage):
        for block in message.content:
            if isinstance(block, TextBlock):
                events.append((EventType.ASSISTANT, {"text": block.text,
                                             "parent_tool_use_id": message.parent_tool_use_id}))
            elif isinstance(block, ToolUseBlock):
                events.append((EventType.TOOL_USE, {"id": block.id, "name": block.name, "input": block.input,
                                            "parent_tool_use_id": message.parent_tool_use_id}))
            elif isinstance(block, ThinkingBlock):
                events.append((EventType.THINKING, {"text": block.thinking}))
        if message.error:
            events.append((EventType.ERROR, {"message": str(message.error), "source": "assistant"}))
    elif isinstance(message, UserMessage):
        if isinstance(message.content, list):
            for block in message.content:
                if isinstance(block, ToolResultBlock):
                    events.append((EventType.TOOL_RESULT, {"tool_use_id": block.tool_use_id,
                                                   "content": _tool_result_text(block.content),
                                                   "is_error": bool(block.is_error)}))
    elif isinstance(message, SystemMessage):
        data = message.data or {}
        payload: dict[str, Any] = {"subtype": message.subtype}
        if message.subtype == "init":
            for key in ("session_id", "model", "cwd", "permissionMode", "tools", "claude_code_version"):
                if key in data:
                    payload[key] = data[key]
        events.append((EventType.SYSTEM, payload))
    return events


def main() -> None:
    """`python -m scout.worker TASK_ID` runs one task in the foreground (for debugging)."""
    import argparse

    from .config import Settings

    parser = argparse.ArgumentParser(description="Run one Scout task in this process (debugging aid).")
    parser.add_argument("task_id")
    args = parser.parse_args()
    settings = Settings.from_env()
    sys.exit(run(replace(WorkerSpec.from_settings(args.task_id, settings), session_idle=0.0)))


if __name__ == "__main__":
    main()
