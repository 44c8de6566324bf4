"""A warm worker's line to its server: the worker's side of the warm socket.

Runs in the worker process (scout/worker.py), inside its asyncio loop. The server's side
is scout/supervisor.py (WarmLink); the address is taskspec.warm_address. One JSON object
per line, each way:

    worker → server   {"event": "hello", "run_id", "pid", "session_id", "key", "task_id", "idle"}
                      {"event": "idle", "task_id"}       the turn is done; waiting for the next
                      {"event": "took" | "refused", "task_id"[, "reason"]}
    server → worker   {"op": "run", "task_id"}            the session's next task: take it
                      {"op": "interrupt", "task_id"}      interrupt this turn (on_busy=interrupt)
                      {"op": "end"}                       not yours to keep: exit

The worker connects when it starts and again whenever the line drops: a server that
crashed and came back hears every live warm worker say hello again, and adopts it (or
tells it to end). Ending a warm process is the server's job (it kills the process tree,
as a stop does); the worker ends by itself only when idle for SCOUT_SESSION_IDLE seconds.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any, Awaitable, Callable

import psutil

from .store import EventLog, Task
from .taskspec import WorkerSpec, warm_key
from .vocab import RUNNING

RECONNECT_SECONDS = 0.2
ALIVE_CHECK_SECONDS = 0.5  # while idle: is its Claude Code still there?


class WarmLine:
    """The worker's connection to the server that hands it its session's tasks."""

    def __init__(self, spec: WorkerSpec, session_id: str, key: str) -> None:
        self.spec = spec
        self.session_id = session_id
        self.key = key
        self.task_id = spec.task_id
        self.idle_now = False
        self.ops: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._writer: asyncio.StreamWriter | None = None
        self._keeper: asyncio.Task[None] | None = None

    def start(self, task_id: str) -> None:
        """Connect (and keep connecting) in the background."""
        self.task_id = task_id
        self._keeper = asyncio.create_task(self._keep_connected())

    async def _keep_connected(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.spec.warm_address)
            except OSError:
                await asyncio.sleep(RECONNECT_SECONDS)  # no server listening (yet)
                continue
            self._writer = writer
            try:
                await self._send({"event": "hello", "run_id": self.spec.task_id, "pid": os.getppid(),
                                  "session_id": self.session_id, "key": self.key, "task_id": self.task_id,
                                  "idle": self.idle_now})
                while raw := await reader.readline():
                    await self.ops.put(json.loads(raw))
            except (OSError, ValueError):
                pass
            self._writer = None
            writer.close()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _send(self, message: dict[str, Any]) -> None:
        writer = self._writer
        if writer is None:
            return  # not connected: the hello on reconnecting says where the worker is
        try:
            writer.write((json.dumps(message) + "\n").encode())
            await writer.drain()
        except OSError:
            pass

    async def idle(self, task_id: str) -> None:
        """Tell the server the turn of `task_id` is over and the worker waits for the next."""
        self.idle_now = True
        await self._send({"event": "idle", "task_id": task_id})

    async def next_task(self, store: EventLog, timeout: float) -> Task | None:
        """Wait up to `timeout` seconds for the server to hand over the session's next task;
        the task, once taken, or None (idle too long, told to end, or one it cannot take)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                op = await asyncio.wait_for(self.ops.get(), min(left, ALIVE_CHECK_SECONDS))
            except asyncio.TimeoutError:
                if not claude_alive():
                    return None  # its Claude Code died (killed, out of memory): nothing to keep warm
                continue
            if op.get("op") == "end":
                return None
            if op.get("op") != "run":
                continue  # a late interrupt of a turn already over
            task = store.get_task(op.get("task_id") or "")
            problem = self._cannot_take(task)
            if problem:
                await self._send({"event": "refused", "task_id": op.get("task_id"), "reason": problem})
                return None
            assert task is not None
            self.task_id, self.idle_now = task.id, False
            await self._send({"event": "took", "task_id": task.id})
            return task
        return None

    def _cannot_take(self, task: Task | None) -> str | None:
        """Why this process may not run `task` (None: it may)."""
        if task is None:
            return "no such task"
        if task.session_id != self.session_id:
            return "another session's task"
        if task.status != RUNNING or task.stop_requested:
            return f"the task is {task.status}{' and asked to stop' if task.stop_requested else ''}"
        if task.worker_pid != os.getppid() or task.run_id != self.spec.task_id:
            return "the task was not handed to this process"
        if warm_key(task.options) != self.key:
            return "the task's options need another Claude Code process"
        if not claude_alive():
            return "its Claude Code has exited"
        return None

    async def interrupts(self, task_id: str, interrupt: Callable[[], Awaitable[None]]) -> None:
        """While the turn of `task_id` runs: carry out the server's interrupt of it."""
        while True:
            op = await self.ops.get()
            if op.get("op") == "interrupt" and op.get("task_id") == task_id:
                await interrupt()


def claude_alive() -> bool:
    """Is the worker's Claude Code (its only child process) still running?"""
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            continue
    return False
