"""`scout`: the command line for a Scout server.

    scout ask "why does the build fail?" --cwd .     start a task and follow it live
                                                     (on a terminal, approvals are asked inline)
    scout tasks / show ID / tail ID / stop ID        look at and control tasks
    scout changes / merge / discard SESSION          a Code session's worktree
    scout serve / ui / up                            run the API, the web UI, or both
    scout mcp                                        serve Scout's tools to an MCP client (stdio)

Task and session ids may be shortened to a unique prefix (at least 4 characters).
The server is found at --url, else $SCOUT_URL (or $SCOUT_API_URL), else at
http://$SCOUT_HOST:$SCOUT_PORT (127.0.0.1:8000). The bearer token is --token or
$SCOUT_API_TOKEN.

Exit codes: 0 success (for ask/tail: the task completed); 1 the task failed or was
cancelled; 2 the request could not be made (API error, unreachable server, bad
arguments); 130 interrupted.

Every call goes through scout.client.ScoutClient, the same client the web UI uses;
it (with requests) and the server modules are imported only when a command runs, so
`scout --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import select
import shutil
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Generator, TextIO

if TYPE_CHECKING:  # imported for real only when a command runs (see run_command)
    from .client import ScoutClient, SSEEvent

from .vocab import (CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, STATUSES, TERMINAL, WAITING,
                    EventType)
from .reducer import Approval, Denied, FilesChanged, Problem, TaskFold, Text, Thinking, Tool, changes_line
from .transcript import (fmt_cost, fmt_duration, fmt_time, result_line, session_markdown,
                         task_duration, task_markdown, tool_summary)

EXIT_OK, EXIT_TASK_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
RESULT_LINES = 6  # lines of a tool result shown while following a task
PASSTHROUGH = {
    "up": ("scout.launcher", "start the API server and the web UI together"),
    "serve": ("scout.server", "run the API server (python -m scout.server)"),
    "ui": ("scout.ui", "run the Gradio web UI"),
    "backup": ("scout.backup", "copy the database to a file, also while tasks run (reads SCOUT_DB)"),
}


# -- errors ----------------------------------------------------------------------------

class CliError(Exception):
    """Something the user should be told on stderr as `scout: <message>`."""

    exit_code = EXIT_ERROR


class Unreachable(CliError):
    """No Scout server answers at the URL."""


class Detach(Exception):
    """Stop following a task and leave it running."""


# -- talking to the API ----------------------------------------------------------------

def default_url(env: dict[str, str] | os._Environ = os.environ) -> str:
    for name in ("SCOUT_URL", "SCOUT_API_URL"):  # SCOUT_API_URL is what the web UI reads
        if env.get(name):
            return env[name]
    host = env.get("SCOUT_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"  # a server listening everywhere is reachable on loopback
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{env.get('SCOUT_PORT') or 8000}"


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://", url, re.I):
        url = "http://" + url
    return url


def _id_or_prefix(ref: str, kind: str) -> tuple[str, bool]:
    """(a full id, True) or (a lower-case prefix of at least 4 characters, False)."""
    ref = ref.strip()
    if UUID.match(ref):
        return ref.lower(), True
    if len(ref) < 4:
        raise CliError(f"{ref!r} is too short to name a {kind}: give at least 4 characters of its id")
    return ref.lower(), False


def resolve_task(client: ScoutClient, ref: str) -> str:
    """A full task id from an id or a unique prefix of one (searching the newest 5000 tasks)."""
    prefix, full = _id_or_prefix(ref, "task")
    if full:
        return prefix
    matches: list[str] = []
    cursor = None
    for _ in range(5):
        page = client.tasks(limit=1000, cursor=cursor)
        matches += [t["task_id"] for t in page["tasks"] if t["task_id"].startswith(prefix)]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return _one(matches, "task", ref.strip())


def resolve_session(client: ScoutClient, ref: str) -> str:
    """A full session id from an id or a unique prefix of one (among the newest 1000 sessions)."""
    prefix, full = _id_or_prefix(ref, "session")
    if full:
        return prefix
    sessions = client.sessions(limit=1000)["sessions"]
    return _one([s["session_id"] for s in sessions if s["session_id"].startswith(prefix)], "session", ref.strip())


def follow(client: ScoutClient, task_id: str, after: int = 0) -> Generator[SSEEvent, None, None]:
    """The task's events until its `end` event, resuming if the stream drops (for ~20 s)."""
    return client.stream(task_id, after, reconnect=8, reconnect_delay=0.5)


def _one(matches: list[str], kind: str, ref: str) -> str:
    if not matches:
        raise CliError(f"no {kind} id starts with {ref!r}")
    if len(matches) > 1:
        raise CliError(f"{ref!r} is ambiguous: " + ", ".join(m[:13] + "…" for m in matches[:5])
                       + (" …" if len(matches) > 5 else ""))
    return matches[0]


# -- terminal output -------------------------------------------------------------------

class Out:
    """Writes to the terminal (or a pipe), with optional colour, and keeps out of the spinner's way."""

    CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34",
             "magenta": "35", "cyan": "36"}

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.tty = _isatty(self.stream)
        self.color = self.tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        self.lock = threading.RLock()
        self.col0 = True
        self.spinner_visible = False
        self.last_write = time.monotonic()

    @property
    def width(self) -> int:
        return max(40, shutil.get_terminal_size((120, 24)).columns) if self.tty else 160

    def style(self, text: str, *styles: str) -> str:
        if not self.color or not styles:
            return text
        codes = ";".join(self.CODES[s] for s in styles)
        return f"\033[{codes}m{text}\033[0m"

    def clear_spinner(self) -> None:
        with self.lock:
            if self.spinner_visible:
                self.stream.write("\r\033[K")
                self.spinner_visible = False
                self.stream.flush()

    def write(self, text: str) -> None:
        if not text:
            return
        with self.lock:
            self.clear_spinner()
            self.stream.write(text)
            self.stream.flush()
            self.col0 = text.endswith("\n")
            self.last_write = time.monotonic()

    def newline(self) -> None:
        """End the current line if something is on it."""
        with self.lock:
            if not self.col0:
                self.write("\n")

    def line(self, text: str = "") -> None:
        with self.lock:
            self.newline()
            self.write(text + "\n")


class Spinner:
    """A line that shows the task is alive while nothing else is being printed (TTY only)."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, out: Out, label: str = "waiting"):
        self.out = out
        self.label = label
        self.started = time.monotonic()
        self.paused = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Spinner":
        if self.out.tty and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="scout-spinner", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(0.1):
            with self.out.lock:
                if self.paused or not self.out.col0 or time.monotonic() - self.out.last_write < 0.3:
                    continue
                elapsed = fmt_duration(time.monotonic() - self.started)
                frame = self.FRAMES[n % len(self.FRAMES)]
                n += 1
                self.out.stream.write("\r\033[K" + self.out.style(f"{frame} {self.label} · {elapsed}", "dim"))
                self.out.stream.flush()
                self.out.spinner_visible = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
        self.out.clear_spinner()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def clip_line(line: str, width: int) -> str:
    """One line of output cut to `width`, keeping its indentation."""
    line = line.expandtabs(4).rstrip()
    return line if len(line) <= width else line[: max(1, width - 1)] + "…"


def age(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "—"
    secs = max(0.0, (now or time.time()) - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


STATUS_STYLE: dict[str, tuple[str, ...]] = {COMPLETED: ("green",), FAILED: ("red",), CANCELLED: ("yellow",),
                                         RUNNING: ("cyan",), WAITING: ("magenta",), PENDING: ("dim",)}
STATUS_MARK: dict[str, str] = {COMPLETED: "✓", FAILED: "✗", CANCELLED: "■"}


class EventRenderer:
    """Turns a task's events into readable terminal lines, live or replayed: each event is
    folded (scout/reducer.py) and the part it added or changed is printed."""

    def __init__(self, out: Out, task_id: str, spinner: Spinner | None = None, live: bool = True):
        self.out = out
        self.live = live  # following as it happens (hints about what to do now make sense)
        self.task_id = task_id
        self.spinner = spinner
        self.fold = TaskFold()
        self.streamed = ""  # text printed from deltas for the current block
        self._streaming: Text | None = None  # the block those deltas belong to
        self.last_seq = 0

    @property
    def status(self) -> str | None:
        return self.fold.status

    def _label(self, text: str) -> None:
        if self.spinner:
            self.spinner.label = text

    def handle(self, event: dict[str, Any]) -> None:
        seq = event.get("seq")
        if isinstance(seq, int):
            self.last_seq = max(self.last_seq, seq)
        etype = str(event.get("type") or "")
        payload = event.get("payload") or {}
        part = self.fold.apply(etype, payload, seq if isinstance(seq, int) else None, event.get("time"))
        if isinstance(part, Text):
            self._text(part)
        elif isinstance(part, Thinking):
            if part.text.strip():
                self.out.line(self.out.style("💭 " + short(part.text, self.out.width - 4), "dim"))
        elif isinstance(part, Tool):
            self._end_text()
            if part.done:
                self._tool_result(part)
                self._label("thinking")
            else:
                self._tool_call(part)
        elif isinstance(part, Approval):
            self._approval(part)
        elif isinstance(part, Denied):
            self._end_text()
            reason = f": {part.reason}" if part.reason else ""
            self.out.line(self.out.style("⛔ ", "red") + self.out.style(part.tool, "bold") + " was not allowed"
                          + short(reason, self.out.width - 30))
        elif isinstance(part, Problem):
            self._end_text()
            self.out.line(self.out.style("✗ error: ", "red") + part.message)
        elif isinstance(part, FilesChanged):
            self._end_text()
            self.out.line(self.out.style("📝 " + part.line, "cyan"))
        elif etype == EventType.STATUS:
            labels: dict[str | None, str] = {PENDING: "queued", RUNNING: "starting",
                                             WAITING: "waiting for approval"}
            if self.status in labels:
                self._label(labels[self.status])
        elif etype == EventType.RESULT:
            self._end_text()
        elif etype == EventType.SYSTEM and payload.get("subtype") == "init":
            self._label("thinking")

    def _text(self, part: Text) -> None:
        """Print what is new of a text block: a delta as it comes, the rest once it is whole."""
        out = self.out
        if part is not self._streaming:
            self._streaming, self.streamed = part, ""
        if not part.final:
            # Mark it printed before printing: a Ctrl-C landing between the two must not make
            # the next delta print this one again.
            new, self.streamed = part.text[len(self.streamed):], part.text
            out.write(new)
            self._label("writing")
            return
        if not self.streamed:
            out.newline()
            out.write(part.text)
        elif part.text.startswith(self.streamed):
            out.write(part.text[len(self.streamed):])
        self.streamed, self._streaming = "", None
        out.newline()
        self._label("thinking")

    def _tool_call(self, tool: Tool) -> None:
        out, w = self.out, self.out.width
        summary = tool_summary(tool.name, tool.input, width=max(20, w - len(tool.name) - 4))
        out.line(out.style("⚙ ", "cyan") + out.style(tool.name, "bold") + (f": {summary}" if summary else ""))
        self._label(f"running {tool.name}")

    def _approval(self, approval: Approval) -> None:
        out, w = self.out, self.out.width
        if approval.decision is not None:
            allowed = approval.decision == "allow"
            reason = f": {approval.reason}" if approval.reason else ""
            out.line("  " + (out.style("✓ allowed", "green") if allowed else out.style("✗ denied", "red")) + reason)
            self._label("running")
            return
        self._end_text()
        summary = tool_summary(approval.tool, approval.input, width=max(20, w - len(approval.tool) - 24))
        out.line(out.style("⏸ ", "magenta") + out.style(approval.tool, "bold") + " needs approval"
                 + (f": {summary}" if summary else ""))
        if self.live:
            out.line(out.style(f"  answer with: scout approve {self.task_id[:8]}   (or --deny)", "dim"))
        self._label("waiting for approval")

    def _end_text(self) -> None:
        self.streamed = ""
        self.out.newline()

    def _tool_result(self, tool: Tool) -> None:
        out, w = self.out, self.out.width
        text = (tool.output or "").rstrip("\n")
        lines = text.splitlines() or [""]
        shown = lines[:RESULT_LINES]
        colour = ("red",) if tool.is_error else ("dim",)
        if not text.strip():
            out.line(out.style("  (no output)" if not tool.is_error else "  ✗ (error, no output)", *colour))
            return
        for i, line in enumerate(shown):
            prefix = "  ✗ " if tool.is_error and i == 0 else "  "
            out.line(out.style(prefix + clip_line(line, w - len(prefix)), *colour))
        if len(lines) > len(shown):
            out.line(out.style(f"  … {len(lines) - len(shown)} more lines", "dim"))


def final_line(out: Out, doc: dict[str, Any]) -> str:
    status = doc.get("status") or "unknown"
    mark = STATUS_MARK.get(status, "•")
    line = out.style(f"{mark} ", *STATUS_STYLE.get(status, ())) + result_line(doc)
    if doc.get("error"):
        line += "\n" + out.style(f"  {doc['error']}", "red")
    return line


# -- commands --------------------------------------------------------------------------

def _dump(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _status_exit(status: str | None) -> int:
    return EXIT_OK if status == COMPLETED else EXIT_TASK_FAILED


def _ask_stop(out: Out, client: ScoutClient, task_id: str) -> None:
    """Ctrl-C while following: ask (on a TTY) whether to stop the task; stop it, or carry on."""
    out.newline()
    if _isatty(sys.stdin):
        sys.stderr.write("Stop the task? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline()  # a second Ctrl-C here detaches (see follow_task)
        if not answer:  # EOF
            raise Detach()
        if answer.strip().lower() not in ("y", "yes"):
            out.line(out.style("continuing (Ctrl-C again to ask again)", "dim"))
            return
    out.line(out.style(f"stopping task {task_id} …", "yellow"))
    res = client.stop(task_id)
    if not res.get("stopped") and res.get("message"):
        out.line(out.style(res["message"], "dim"))


def _ask_approval(out: Out, client: ScoutClient, task_id: str, request: dict[str, Any]) -> None:
    """An approval request seen live on a terminal: ask it here (`Allow Bash: env? [y/N]`) and
    send the answer. Enter, n or end of input deny. The question is dropped if the task stops
    waiting meanwhile (answered in the UI or with `scout approve`, timed out, stopped)."""
    from .client import ScoutAPIError
    name = str(request.get("tool") or "tool")
    summary = tool_summary(name, request.get("input"), width=max(20, out.width - len(name) - 20))
    sys.stderr.write(f"Allow {name}{': ' + summary if summary else ''}? [y/N] ")
    sys.stderr.flush()
    answer = _read_line_while(lambda: client.status(task_id, events=False).get("status") == "waiting")
    if answer is None:
        sys.stderr.write("\n")
        out.line(out.style("  (no longer waiting: answered elsewhere, timed out or stopped)", "dim"))
        return
    decision = "allow" if answer.strip().lower() in ("y", "yes") else "deny"
    try:
        client.approve(task_id, decision, tool_use_id=request.get("tool_use_id"))
    except ScoutAPIError as exc:  # answered elsewhere first, or the task ended: say so, follow on
        out.line(out.style(f"  {exc.message}", "dim"))


def _read_line_while(still_open: Callable[[], bool], poll: float = 1.0) -> str | None:
    """A line from the terminal ("" at end of input), or None once still_open() is false."""
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], poll)
        if ready:
            return sys.stdin.readline()
        if not still_open():
            return None


def follow_task(client: ScoutClient, task_id: str, out: Out, *, render: bool = True, after: int = 0,
                on_interrupt: Callable[[], None] | None = None, spinner_label: str = "waiting",
                on_approval: Callable[[dict[str, Any]], None] | None = None) -> str:
    """Follow a task's stream until its end; returns the final status from the `end` event.
    on_approval(payload) is called for each approval request as it arrives (to ask it inline)."""
    spinner = Spinner(out, spinner_label).start() if render else None
    # Asked inline, an approval needs no "answer with: scout approve" hint.
    renderer = EventRenderer(out, task_id, spinner, live=on_approval is None)
    renderer.last_seq = after
    try:
        while True:
            events = follow(client, task_id, after=renderer.last_seq)
            try:
                for ev in events:
                    if ev.is_end:
                        return str(ev.data.get("status") or "unknown")
                    if render:
                        renderer.handle(ev.data)
                    elif ev.seq is not None:
                        renderer.last_seq = ev.seq
                    if on_approval and ev.data.get("type") == "approval_request":
                        if spinner:
                            spinner.paused = True
                            out.clear_spinner()
                        on_approval(ev.data.get("payload") or {})
                        if spinner:
                            spinner.paused = False
                raise CliError(f"the event stream of task {task_id} ended without an end event")
            except KeyboardInterrupt:
                if on_interrupt is None:
                    raise
                try:
                    events.close()
                    if spinner:
                        spinner.paused = True
                        out.clear_spinner()
                    on_interrupt()
                except KeyboardInterrupt:
                    # Ctrl-C again, at any point of the question (not only while it waits for
                    # the answer, which would leave a race with the signal): leave the task be.
                    raise Detach() from None
                if spinner:
                    spinner.paused = False
    finally:
        if spinner:
            spinner.stop()
        out.newline()


def cmd_ask(client: ScoutClient, args: argparse.Namespace) -> int:
    message = args.message
    if message in (None, "-"):
        if message is None and _isatty(sys.stdin):
            raise CliError("give the message to send, e.g. scout ask \"what does this repo do?\" "
                           "(or - to read it from stdin)")
        message = sys.stdin.read()
    if not message.strip():
        raise CliError("the message is empty")
    started = client.post_chat(
        message,
        session_id=resolve_session(client, args.session) if args.session else None,
        mode=args.mode or None,
        cwd=os.path.abspath(os.path.expanduser(args.cwd)) if args.cwd else None,
        append_system_prompt=args.append_system_prompt or None,
        on_busy=args.on_busy or None,
        model=args.model or None,
        max_turns=args.max_turns,
        workspace=args.workspace or None,
        base=args.base or None,
    )
    task_id = started["task_id"]
    if args.no_follow:
        if args.json:
            _dump(started)
        else:
            print(f"{task_id}  (session {started.get('session_id')}; follow it with: scout tail {task_id[:8]})")
        return EXIT_OK

    out = Out()
    if not args.json:
        out.line(out.style(f"▶ task {task_id} · session {started.get('session_id')}", "dim"))
    try:
        # On a terminal, approvals are asked right here; elsewhere (a pipe, a script) the task
        # waits for `scout approve`, the UI or the API, as the printed hint says.
        inline = not args.json and out.tty and _isatty(sys.stdin)
        status = follow_task(client, task_id, out, render=not args.json,
                             on_interrupt=lambda: _ask_stop(out, client, task_id),
                             spinner_label="queued" if started.get("status") == PENDING else "waiting",
                             on_approval=(lambda req: _ask_approval(out, client, task_id, req)) if inline else None)
    except Detach:
        out.newline()
        sys.stderr.write(f"scout: detached; task {task_id} keeps running "
                         f"(scout tail {task_id[:8]} / scout stop {task_id[:8]})\n")
        return EXIT_INTERRUPTED
    if status == "deleted":
        raise CliError(f"task {task_id} was deleted while it ran")
    doc = client.status(task_id, events=args.json)
    if args.json:
        _dump(doc)
    else:
        out.line()
        out.line(final_line(out, doc))
        if doc.get("session_id") and _can_continue(client, doc["session_id"]):
            out.line(out.style(f"  continue this conversation: scout ask --session {doc['session_id']} \"…\"",
                               "dim"))
    return _status_exit(doc.get("status"))


def _can_continue(client: ScoutClient, session_id: str) -> bool:
    """Can the session take another message (is its conversation's history still there)?"""
    from .client import ScoutAPIError

    try:
        return client.session(session_id).get("can_continue", True) is not False
    except ScoutAPIError:
        return True  # not known: offer it, as before


def cmd_tail(client: ScoutClient, args: argparse.Namespace) -> int:
    task_id = resolve_task(client, args.task)
    out = Out()
    if args.json:
        # One JSON object a line, the `end` event last.
        status = "unknown"
        for ev in follow(client, task_id, after=args.from_seq):
            sys.stdout.write(json.dumps({"event": ev.type, "id": ev.id, "data": ev.data},
                                        ensure_ascii=False) + "\n")
            sys.stdout.flush()
            if ev.is_end:
                status = str(ev.data.get("status"))
        return _status_exit(status)
    status = follow_task(client, task_id, out, after=args.from_seq)
    if status == "deleted":
        raise CliError(f"task {task_id} was deleted")
    doc = client.status(task_id, events=False)
    out.line()
    out.line(final_line(out, doc))
    return _status_exit(doc.get("status"))


def cmd_show(client: ScoutClient, args: argparse.Namespace) -> int:
    task_id = resolve_task(client, args.task)
    doc = client.status(task_id)
    if args.json:
        _dump(doc)
        return EXIT_OK
    if args.markdown:
        sys.stdout.write(task_markdown(doc))
        return EXIT_OK
    out = Out()
    status = doc.get("status") or "unknown"
    out.line(out.style("Task ", "bold") + out.style(doc["task_id"], "bold") + "  "
             + out.style(status, *STATUS_STYLE.get(status, ())))
    rows = [("session", doc.get("session_id")), ("mode", doc.get("mode")), ("cwd", doc.get("cwd")),
            ("created", f"{fmt_time(doc.get('created_at'))} ({age(doc.get('created_at'))} ago)"),
            ("finished", fmt_time(doc["finished_at"]) if doc.get("finished_at") else None)]
    result = doc.get("result") or {}
    if result or status in TERMINAL:
        rows.append(("duration", fmt_duration(task_duration(doc))))
    if result.get("total_cost_usd") is not None:
        rows.append(("cost", f"{fmt_cost(result['total_cost_usd'])} · {result.get('num_turns')} turns"))
    for key, value in rows:
        if value:
            out.line(out.style(f"  {key:<9}", "dim") + str(value))
    out.line()
    for i, line in enumerate(str(doc.get("message") or "").splitlines() or [""]):
        out.line(out.style("> " if i == 0 else "  ", "bold", "blue") + line)
    out.line()
    renderer = EventRenderer(out, doc["task_id"], live=False)
    for event in doc.get("events") or []:
        renderer.handle(event)
    out.newline()
    out.line()
    out.line(final_line(out, doc))
    return EXIT_OK


def cmd_tasks(client: ScoutClient, args: argparse.Namespace) -> int:
    session = resolve_session(client, args.session) if args.session else None
    page = client.tasks(status=args.status, session_id=session, limit=args.limit)
    if args.json:
        _dump(page)
        return EXIT_OK
    out = Out()
    tasks = page.get("tasks") or []
    if not tasks:
        out.line("no tasks" + (f" with status {args.status}" if args.status else ""))
        return EXIT_OK
    now = time.time()
    rows = [(t["task_id"][:8], t.get("status") or "", age(t.get("created_at"), now), t.get("mode") or "",
             t.get("message") or "") for t in tasks]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(("ID", "STATUS", "AGE", "MODE"))]
    head = "  ".join(h.ljust(w) for h, w in zip(("ID", "STATUS", "AGE", "MODE"), widths, strict=True)) + "  MESSAGE"
    out.line(out.style(head, "bold"))
    room = max(20, out.width - sum(widths) - 8 - 1)
    for r in rows:
        status = out.style(r[1].ljust(widths[1]), *STATUS_STYLE.get(r[1], ()))
        out.line("  ".join([r[0].ljust(widths[0]), status, r[2].rjust(widths[2]), r[3].ljust(widths[3])])
                 + "  " + short(r[4], room))
    if page.get("next_cursor"):
        out.line(out.style(f"… more tasks; show more with --limit {args.limit * 2}", "dim"))
    return EXIT_OK


def cmd_stop(client: ScoutClient, args: argparse.Namespace) -> int:
    task_id = resolve_task(client, args.task)
    res = client.stop(task_id)
    if args.json:
        _dump(res)
    elif res.get("stopped"):
        print(f"stopped task {task_id} ({res.get('status')})")
    else:
        print(res.get("message") or f"task {task_id} is {res.get('status')}; nothing was stopped")
    return EXIT_OK


def cmd_approve(client: ScoutClient, args: argparse.Namespace) -> int:
    task_id = resolve_task(client, args.task)
    res = client.approve(task_id, "deny" if args.deny else "allow", reason=args.reason or None,
                         tool_use_id=args.tool_use_id or None)
    if args.json:
        _dump(res)
    else:
        print(f"{'denied' if args.deny else 'allowed'} {res.get('tool_use_id')} for task {task_id}")
    return EXIT_OK


def cmd_prune(client: ScoutClient, args: argparse.Namespace) -> int:
    days: float | int = int(args.older_than) if float(args.older_than).is_integer() else args.older_than
    from .client import ScoutAPIError

    try:
        res = client.prune(days)
    except ScoutAPIError as exc:
        if exc.status in (404, 405) and exc.code in ("not_found", "method_not_allowed"):
            raise CliError(f"the server at {client.base_url} has no POST /admin/prune "
                           "(it is older than this CLI)") from None
        raise
    if args.json:
        _dump(res)
    else:
        sessions = f", {res['deleted_sessions']} sessions" if res.get("deleted_sessions") is not None else ""
        print(f"deleted {res.get('deleted_tasks', 0)} tasks{sessions} and {res.get('deleted_events', 0)} events "
              f"finished more than {days:g} days ago")
    if res.get("database_full"):
        none = "" if res.get("deleted_tasks") else f"nothing finished more than {days:g} days ago was left to delete; "
        sys.stderr.write(f"scout: the database is still full: {none}delete younger tasks with "
                         f"`scout prune --older-than N` with a smaller N (0: every finished task), "
                         f"or raise SCOUT_DB_MAX_MB\n")
        return EXIT_ERROR
    return EXIT_OK


def cmd_sessions(client: ScoutClient, args: argparse.Namespace) -> int:
    res = client.sessions(limit=args.limit)
    if args.json:
        _dump(res)
        return EXIT_OK
    out = Out()
    sessions = res.get("sessions") or []
    if not sessions:
        out.line("no sessions")
        return EXIT_OK
    now = time.time()
    out.line(out.style(f"{'ID':<8}  {'TASKS':>5}  {'ACTIVE':>6}  {'LAST':<9}  {'COST':>8}  TITLE", "bold"))
    for s in sessions:
        out.line(f"{s['session_id'][:8]}  {s.get('task_count', 0):>5}  {age(s.get('last_activity'), now):>6}  "
                 f"{str(s.get('last_status') or ''):<9}  {fmt_cost(s.get('total_cost_usd')):>8}  "
                 + short(s.get("first_message") or s.get("last_message") or "", max(20, out.width - 52)))
    return EXIT_OK


def cmd_session(client: ScoutClient, args: argparse.Namespace) -> int:
    session_id = resolve_session(client, args.session)
    doc = client.session(session_id)
    if args.json:
        _dump(doc)
        return EXIT_OK
    if args.markdown:
        docs = [client.status(t["task_id"]) for t in doc.get("tasks") or []]
        sys.stdout.write(session_markdown(doc, docs))
        return EXIT_OK
    out = Out()
    out.line(out.style(f"Session {doc['session_id']}", "bold"))
    out.line(out.style("  cwd      ", "dim") + str(doc.get("cwd")))
    out.line(out.style("  started  ", "dim") + fmt_time(doc.get("created_at")))
    if doc.get("can_continue") is False:
        out.line(out.style("  ended    ", "dim") + out.style(str(doc.get("history_lost")), "red"))
    out.line()
    for t in doc.get("tasks") or []:
        status = t.get("status") or ""
        out.line(out.style(f"{t['task_id'][:8]}  {status:<9}", *STATUS_STYLE.get(status, ()))
                 + "  > " + short(t.get("message") or "", out.width - 24))
        answer = t.get("result_text") or t.get("error")
        if answer:
            out.line("                     " + short(answer, out.width - 24))
    return EXIT_OK


def cmd_changes(client: ScoutClient, args: argparse.Namespace) -> int:
    session_id = resolve_session(client, args.session)
    if args.patch:
        sys.stdout.write(client.patch(session_id))
        return EXIT_OK
    res = client.changes(session_id)
    if args.json:
        _dump(res)
        return EXIT_OK
    out = Out()
    ws = res.get("workspace") or {}
    out.line(out.style(f"{ws.get('branch')} in {ws.get('path')}", "dim"))
    width = max((len(f["path"]) for f in res.get("files") or []), default=0)
    marks = {"added": "A", "modified": "M", "deleted": "D", "type_changed": "T"}
    for f in res.get("files") or []:
        counts = "binary" if f.get("binary") else (out.style(f"+{f['additions']}", "green") + " "
                                                   + out.style(f"−{f['deletions']}", "red"))
        out.line(f"{marks.get(f['status'], '?')}  {f['path']:<{width}}  {counts}")
    out.line(changes_line(res) + f" since {str(ws.get('base_commit'))[:12]}")
    return EXIT_OK


def cmd_merge(client: ScoutClient, args: argparse.Namespace) -> int:
    from .client import ScoutAPIError

    session_id = resolve_session(client, args.session)
    try:
        res = client.merge(session_id, message=args.message, squash=args.squash)
    except ScoutAPIError as exc:
        paths = ((exc.body or {}).get("error") or {}).get("paths") if isinstance(exc.body, dict) else None
        if exc.code == "merge_conflict" and paths and not args.json:
            raise CliError(exc.message + "\n  conflicting: " + "\n  conflicting: ".join(paths)
                           + "\n  nothing was changed; see the changes with: "
                           + f"scout changes {session_id} --patch") from None
        raise
    if args.json:
        _dump(res)
    else:
        print(f"merged into {res.get('target_branch')}: {str(res.get('commit'))[:12]} ({changes_line(res)})")
    return EXIT_OK


def cmd_discard(client: ScoutClient, args: argparse.Namespace) -> int:
    session_id = resolve_session(client, args.session)
    if not args.yes and _isatty(sys.stdin):
        sys.stderr.write(f"Discard the worktree of session {session_id} and everything changed in it? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise CliError("not discarded")
    res = client.discard(session_id)
    if args.json:
        _dump(res)
    else:
        gone = "" if res.get("removed") else " (nothing was there)"
        print(f"discarded the worktree of session {session_id}{gone}")
    return EXIT_OK


def cmd_modes(client: ScoutClient, args: argparse.Namespace) -> int:
    res = client.modes()
    if args.json:
        _dump(res)
        return EXIT_OK
    out = Out()
    modes = res.get("modes") or []
    width = max((len(m["name"]) for m in modes), default=4) + 2
    for m in modes:
        name = m["name"] + (" *" if m["name"] == res.get("default") else "")
        out.line(out.style(name.ljust(width + 2), "bold") + short(m.get("description") or "", out.width - width - 4))
    out.line(out.style("* the default mode", "dim"))
    return EXIT_OK


def cmd_health(client: ScoutClient, args: argparse.Namespace) -> int:
    res = client.health()  # a degraded server (503) still answers with its report
    if args.json:
        _dump(res)
    else:
        out = Out()
        ok = res.get("status") == "ok"
        out.line(out.style(f"{res.get('status')}", "green" if ok else "red")
                 + f"  Scout {res.get('version')} at {client.base_url}")
        tasks, workers, claude, db = (res.get(k) or {} for k in ("tasks", "workers", "claude", "database"))
        out.line(f"  tasks    running {tasks.get('running', 0)} · waiting {tasks.get('waiting', 0)} · "
                 f"pending {tasks.get('pending', 0)}")
        out.line(f"  workers  {workers.get('active', 0)}/{workers.get('max', '?')} active")
        out.line(f"  claude   {claude.get('version') or 'missing: ' + str(claude.get('error', '?'))}")
        out.line(f"  database {db.get('path')}" + ("" if db.get("ok", True) else f" — {db.get('error')}"))
    return EXIT_OK if res.get("status") == "ok" else EXIT_TASK_FAILED


def cmd_mcp(client: ScoutClient, args: argparse.Namespace) -> int:
    from .mcp_server import serve  # here: only this command needs the mcp package

    return serve(client)


COMMANDS: dict[str, Callable[[ScoutClient, argparse.Namespace], int]] = {
    "ask": cmd_ask, "tasks": cmd_tasks, "show": cmd_show, "tail": cmd_tail, "stop": cmd_stop,
    "approve": cmd_approve, "prune": cmd_prune, "sessions": cmd_sessions, "session": cmd_session,
    "modes": cmd_modes, "health": cmd_health, "mcp": cmd_mcp, "changes": cmd_changes, "merge": cmd_merge,
    "discard": cmd_discard,
}


# -- argument parsing ------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if value < 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a number of days, 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection and output")
    g.add_argument("--url", default=argparse.SUPPRESS,
                   help="the Scout API (default: $SCOUT_URL or $SCOUT_API_URL, else http://$SCOUT_HOST:$SCOUT_PORT, "
                        "i.e. http://127.0.0.1:8000)")
    g.add_argument("--token", default=argparse.SUPPRESS, help="bearer token (default: $SCOUT_API_TOKEN)")
    g.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print the API's JSON instead of text")

    doc = (__doc__ or "").split("\n\n")
    parser = argparse.ArgumentParser(
        prog="scout", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run Claude Code tasks in the background on a Scout server and follow them.",
        epilog="\n\n".join(doc[1:4]))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                              parents=[common], **kw)

    for name, (module, text) in PASSTHROUGH.items():
        sub.add_parser(name, help=text + f"; arguments go to {module} (scout {name} --help)",
                       add_help=False)

    p = add("ask", "start a task and follow it live until it finishes",
            epilog="In a mode with approvals, a terminal is asked each request inline "
                   "(Allow Bash: ls? [y/N]); without one (a pipe, a script) the task waits for "
                   "`scout approve ID` (or the web UI, or the API).")
    p.add_argument("message", nargs="?", help="what to ask (- reads it from stdin)")
    p.add_argument("--session", metavar="ID", help="continue this session (conversation)")
    p.add_argument("--mode", metavar="M", help="mode to run in (see `scout modes`)")
    p.add_argument("--cwd", metavar="DIR",
                   help="working directory on the server's machine (relative paths are made absolute "
                        "here; default: the session's, else the server's first allowed root)")
    p.add_argument("--append-system-prompt", metavar="TEXT", help="extra system prompt for this task")
    p.add_argument("--model", help="model to use instead of the mode's")
    p.add_argument("--max-turns", type=_positive_int, metavar="N", help="stop after N turns")
    p.add_argument("--on-busy", choices=("queue", "reject", "interrupt"),
                   help="if the session is busy: wait (default), refuse, or stop the running task")
    p.add_argument("--no-follow", action="store_true", help="print the task id and return at once")
    p.add_argument("--workspace", choices=("shared", "worktree", "auto"),
                   help="a new session's workspace: its cwd itself, a git worktree of its own, or a "
                        "worktree when cwd is in git (default: the mode's; Code is auto)")
    p.add_argument("--base", metavar="REV", help="the commit-ish a new worktree starts from (default HEAD)")

    p = add("tasks", "list tasks, newest first")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--session", metavar="ID", help="only this session's tasks")
    p.add_argument("--limit", type=_positive_int, default=20, metavar="N", help="at most N (default 20)")

    p = add("show", "show a task: its message, what it did, its result")
    p.add_argument("task", metavar="ID", help="task id (or a unique prefix)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown transcript")

    p = add("tail", "follow a task's events live (from the start, or --from-seq)")
    p.add_argument("task", metavar="ID", help="task id (or a unique prefix)")
    p.add_argument("--from-seq", type=int, default=0, metavar="N", help="start after event N (default: all)")

    p = add("stop", "stop a running task")
    p.add_argument("task", metavar="ID", help="task id (or a unique prefix)")

    p = add("approve", "answer a task's pending tool approval (allow, or --deny)")
    p.add_argument("task", metavar="ID", help="task id (or a unique prefix)")
    p.add_argument("--deny", action="store_true", help="deny instead of allow")
    p.add_argument("--reason", help="why (shown to Claude)")
    p.add_argument("--tool-use-id", help="which request, if several are pending")

    p = add("prune", "delete finished tasks (and their events) older than some days")
    p.add_argument("--older-than", type=_days, default=30.0, metavar="DAYS", help="default 30")

    p = add("sessions", "list sessions (conversations), most recently active first")
    p.add_argument("--limit", type=_positive_int, default=20, metavar="N")

    p = add("session", "show a session's tasks")
    p.add_argument("session", metavar="ID", help="session id (or a unique prefix)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown transcript of the conversation")

    p = add("changes", "show what a session changed in its worktree")
    p.add_argument("session", metavar="ID", help="session id (or a unique prefix)")
    p.add_argument("--patch", action="store_true", help="print the unified diff")

    p = add("merge", "merge a session's worktree into the branch of the checkout it came from")
    p.add_argument("session", metavar="ID", help="session id (or a unique prefix)")
    p.add_argument("--message", "-m", help="the commit message")
    p.add_argument("--squash", action="store_true", help="one commit instead of a merge commit")

    p = add("discard", "remove a session's worktree and its branch")
    p.add_argument("session", metavar="ID", help="session id (or a unique prefix)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask first")

    add("modes", "list the modes tasks can run in")
    add("health", "show the server's health")
    add("mcp", "serve Scout's tools (start_task, get_task, ...) to an MCP client over stdio, "
               "e.g. `claude mcp add scout -- scout mcp`")
    return parser


def _passthrough(argv: list[str]) -> tuple[str, list[str]] | None:
    """`scout up|serve|ui ARGS...`: everything after the command goes to that program."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--url", "--token"):
            i += 2
        elif arg.startswith(("--url=", "--token=")) or arg == "--json":
            i += 1
        else:
            return (arg, argv[i + 1:]) if arg in PASSTHROUGH else None
    return None


def run_passthrough(command: str, rest: list[str]) -> int:
    module_name = PASSTHROUGH[command][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"`scout {command}` needs {module_name}, which cannot be imported here: {exc}") from None
    entry = getattr(module, "main", None)
    if entry is None:
        raise CliError(f"{module_name} has no main()")
    rc = entry(rest)
    return rc if isinstance(rc, int) else EXIT_OK


def run_command(args: argparse.Namespace) -> int:
    """Run one API command with a ScoutClient; its errors become `scout: ...` lines with hints."""
    from .client import ScoutAPIError, ScoutClient, ScoutUnreachable  # here: `--help` must not import requests

    url = normalize_url(getattr(args, "url", None) or default_url())
    token = getattr(args, "token", None) or os.environ.get("SCOUT_API_TOKEN") or None
    with ScoutClient(url, token) as client:
        try:
            return COMMANDS[args.command](client, args)
        except ScoutUnreachable as exc:
            if exc.code == "timeout":
                raise CliError(f"the Scout API at {url} did not answer in time ({exc.reason})") from None
            raise Unreachable(f"cannot reach the Scout API at {url} ({exc.reason}).\n"
                              "  Is `scout serve` (or `scout up`) running there? "
                              "Point the CLI elsewhere with --url or SCOUT_URL.") from None
        except ScoutAPIError as exc:
            hint = " (pass --token or set SCOUT_API_TOKEN)" if exc.status == 401 and not token else ""
            raise CliError(exc.message + hint) from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        pass
    try:
        passthrough = _passthrough(argv)
        if passthrough:
            return run_passthrough(*passthrough)
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help(sys.stderr)
            return EXIT_ERROR
        args.json = getattr(args, "json", False)
        return run_command(args)
    except CliError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"scout: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`scout tasks | head`): not an error worth a traceback.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
