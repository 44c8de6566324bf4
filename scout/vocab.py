"""Scout's vocabulary: task statuses, event types and the legal status changes, written once.

Every other module (the store, the supervisor, the worker, the server, and the client side:
the UI, the CLI, the transcript, the OpenAPI document) takes these names from here, so a
status or an event type is spelt in exactly one place. The module depends on nothing but
the standard library, so client-side code can import it without pulling in the server.

Both enums are ``StrEnum``: a member *is* its string (``TaskStatus.RUNNING == "running"``),
so it goes into SQL, JSON and f-strings as the plain word the API has always used.
"""
from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """Where a task is in its life. "waiting" means Claude Code waits for a person's approval."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


PENDING, RUNNING, WAITING = TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.WAITING
COMPLETED, FAILED, CANCELLED = TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED

STATUSES: tuple[TaskStatus, ...] = tuple(TaskStatus)
# A task whose worker process exists (or should): the supervisor watches these.
ACTIVE: tuple[TaskStatus, ...] = (RUNNING, WAITING)
# A task that is not over yet, queued or active: what a client keeps following.
UNFINISHED: tuple[TaskStatus, ...] = (PENDING, RUNNING, WAITING)
# A task that is over; nothing changes its status again.
TERMINAL: tuple[TaskStatus, ...] = (COMPLETED, FAILED, CANCELLED)

# The legal status changes, as data: from each status, the statuses it may move to.
# Store.transition checks every change against this table, so a rule lives here only.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # The dispatcher starts it; it cannot be started (no worker, no database); a stop.
    PENDING: frozenset({RUNNING, FAILED, CANCELLED}),
    # Claude Code asks a person (waiting), ends (completed/failed), is stopped; or, at
    # start-up, a task that never got its process goes back to the queue (pending).
    RUNNING: frozenset({WAITING, COMPLETED, FAILED, CANCELLED, PENDING}),
    # The person answers (running), or the task ends, is stopped or requeued meanwhile.
    WAITING: frozenset({RUNNING, COMPLETED, FAILED, CANCELLED, PENDING}),
    COMPLETED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


# The error of a task failed because the node running it lost its lease (a shared log).
NODE_LOST = "node lost"


def can_transition(current: str, to: str) -> bool:
    """Is a change from status `current` to status `to` legal?"""
    try:
        return TaskStatus(to) in TRANSITIONS[TaskStatus(current)]
    except ValueError:
        return False


def sources(to: str) -> tuple[TaskStatus, ...]:
    """Every status a task may move to `to` from, in the order of STATUSES."""
    return tuple(s for s in STATUSES if TaskStatus(to) in TRANSITIONS[s])


class EventType(StrEnum):
    """The kind of one event in a task's log (the SSE ``event:`` field); see the README's schema."""

    STATUS = "status"                        # the task's status changed (payload.status)
    SYSTEM = "system"                        # Claude Code's system message (init: session, model)
    TEXT_DELTA = "text_delta"                # a piece of the answer as it streams
    ASSISTANT = "assistant"                  # a whole text block of the answer
    THINKING = "thinking"                    # the model's thinking
    TOOL_USE = "tool_use"                    # Claude Code calls a tool
    TOOL_RESULT = "tool_result"              # what the tool returned
    RESULT = "result"                        # the final result: text, cost, usage
    APPROVAL_REQUEST = "approval_request"    # a tool use waits for a person
    APPROVAL = "approval"                    # the person's (or the timeout's) answer
    PERMISSION_DENIED = "permission_denied"  # a tool use the mode does not allow
    ERROR = "error"                          # an error Claude Code reported mid-task
    CHANGES = "changes"                      # what a task in a worktree changed (at its end)


EVENT_TYPES: tuple[EventType, ...] = tuple(EventType)
# The SSE event that ends every stream (not an event of the log: it has no id).
END = "end"
