"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright.

The servers are the real ones, started by `python run_servers.py`, with Claude Code
talking to the scripted model server (tests/model_server.py). Each test leaves a
screenshot in artifacts/ (ui-<test>.png, and a few mid-test ones).

Needs /usr/bin/chromium and the playwright package: scripts/install-browser.sh.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from conftest import free_port
from scout.client import ScoutAPIError, ScoutClient
from stack import ROOT, Stack, kill_tagged, launch, stack_env

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps",
]
# A mode whose Bash calls wait for a person's answer (allowed over HTTP, from the UI).
MODES_TOML = """
[modes.Careful]
description = "Asks before running commands"
prompt = "Ask before you change anything."
allowed_tools = ["Read"]
approval_tools = ["Bash"]
"""
TOKEN = "ui-test-token"
INSTALL_HINT = "run scripts/install-browser.sh (installs Debian's chromium and the playwright package)"

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
    # Generous: CI machines are small, and Claude Code takes a moment to start each task.
    expect.set_options(timeout=30_000)
except ImportError:  # reported by the `browser` fixture, so every test fails saying what to do
    sync_playwright = None  # type: ignore[assignment]


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    if sync_playwright is None:
        pytest.fail(f"the playwright package is not installed: {INSTALL_HINT}", pytrace=False)
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} not found: {INSTALL_HINT}", pytrace=False)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui")


@pytest.fixture(scope="module")
def stack(model, base: Path) -> Iterator[Stack]:
    """run_servers.py for the whole module (starting Gradio takes a few seconds)."""
    modes = base / "modes.toml"
    modes.write_text(MODES_TOML)
    # With a token: the UI must send it on every call it makes.
    # Keep-alives every second: a quiet stream the UI has let go of closes within a second.
    env = stack_env(model, base, SCOUT_MODES_FILE=str(modes), SCOUT_API_TOKEN=TOKEN, SCOUT_SSE_KEEPALIVE="1")
    running = launch(env, base, free_port(), free_port())
    yield running
    code = running.stop(signal.SIGINT)
    kill_tagged(base)
    assert code == 0, running.output()


@pytest.fixture(scope="module")
def api(stack: Stack) -> ScoutClient:
    return ScoutClient(stack.api_url, token=TOKEN)


@pytest.fixture
def project(base: Path) -> Path:
    """A working directory inside the allowed root, holding one file with a unique name."""
    path = base / f"proj-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    (path / f"known-{path.name}.txt").write_text("hello\n")
    return path


@pytest.fixture
def page(browser: "Browser", stack: Stack, request: pytest.FixtureRequest) -> Iterator["Page"]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # With SCOUT_API_TOKEN set the UI asks for a login (the token as the password).
    login = context.request.post(stack.ui_url + "/login", form={"username": "me", "password": TOKEN})
    assert login.ok, login.text()
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    outside: list[str] = []
    pg.on("request", lambda r: outside.append(r.url)
          if not re.match(r"^(https?://(127\.0\.0\.1|localhost)[:/]|data:|blob:|about:)", r.url) else None)
    pg.outside_requests = outside  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            pg.screenshot(path=str(ARTIFACTS / f"ui-{request.node.name}.png"))
        except Exception:  # a screenshot must not hide the test's own outcome
            pass
        context.close()


# -- helpers ------------------------------------------------------------------------------


def shot(page: "Page", name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"ui-{name}.png"))


def open_ui(page: "Page", stack: Stack, query: str = "") -> None:
    page.goto(stack.ui_url + "/" + query)
    expect(page.locator("#scout-input textarea")).to_be_editable()
    # The modes list comes from the API on load: once it has, the page is wired up.
    expect(page.locator("#scout-mode")).to_contain_text("Investigates")


def send(page: "Page", text: str) -> None:
    box = page.locator("#scout-input textarea")
    box.fill(text)
    box.press("Enter")


def chat(page: "Page"):
    return page.locator("#scout-chat")


def set_cwd(page: "Page", path: str) -> None:
    page.locator("#scout-cwd input, #scout-cwd textarea").first.fill(path)


def newest_task(api: ScoutClient) -> dict[str, Any]:
    return api.tasks(limit=1)["tasks"][0]


def wait_status(api: ScoutClient, task_id: str, statuses: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    deadline = time.time() + timeout
    doc = api.status(task_id, events=False)
    while doc["status"] not in statuses and time.time() < deadline:
        time.sleep(0.1)
        doc = api.status(task_id, events=False)
    assert doc["status"] in statuses, doc
    return doc


def stack_streams(stack: Stack) -> int:
    """Open SSE streams on the API server, from its /metrics."""
    text = requests.get(stack.api_url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    match = re.search(r"^scout_sse_streams (\S+)$", text, re.M)
    assert match, text
    return int(float(match.group(1)))


def session_in_url(page: "Page") -> str:
    match = re.search(r"[?&]session=([^&#]+)", page.url)
    assert match, page.url
    return match.group(1)


# -- tests --------------------------------------------------------------------------------


def test_answer_streams_with_a_live_tool_step_and_cost(page: "Page", stack: Stack, api: ScoutClient,
                                                       project: Path, base: Path):
    open_ui(page, stack)
    # The working directory box says where a task runs by default, and where it may run.
    cwd_input = page.locator("#scout-cwd input, #scout-cwd textarea").first
    expect(cwd_input).to_have_attribute("placeholder", f"default: {base.resolve()}")
    expect(page.locator("#scout-cwd")).to_contain_text(f"Must be inside {base.resolve()}")
    set_cwd(page, str(project))
    # The command sleeps a little, so the step is seen while the tool still runs.
    send(page, "BASH: sleep 4 && ls")
    step = chat(page).get_by_text("Bash · sleep 4 && ls")
    expect(step).to_be_visible()
    task = newest_task(api)
    assert task["status"] in ("running", "pending"), task  # the step showed while it happened
    shot(page, "tool-step-running")

    known = f"known-{project.name}.txt"
    expect(chat(page)).to_contain_text(f"TOOL RESULT: {known}", timeout=60_000)
    footer = chat(page).locator(".scout-done")
    expect(footer).to_contain_text("Done")
    expect(footer).to_contain_text(re.compile(r"\d+(\.\d+)? s"))  # duration
    expect(footer).to_contain_text(re.compile(r"\$\d+\.\d{2,4}"))  # cost
    # The finished step folds up; opened, it shows the input and the real output of `ls`.
    expect(page.locator("#scout-send")).to_be_visible()
    step.click()
    expect(chat(page).locator("code", has_text="sleep 4 && ls")).to_be_visible()
    expect(chat(page).locator("pre", has_text=known).first).to_be_visible()
    expect(chat(page)).to_contain_text("Output")
    page.wait_for_timeout(400)  # let the step finish opening before the picture
    shot(page, "tool-step-open")

    doc = api.status(task["task_id"])
    assert doc["status"] == "completed" and doc["cwd"] == str(project.resolve())
    cost = doc["result"]["total_cost_usd"]
    expect(footer).to_contain_text(f"${cost:.4f}")
    assert page.outside_requests == []  # the page loads nothing from the internet  # type: ignore[attr-defined]


def test_text_streams_in_and_stop_cancels_at_once(page: "Page", stack: Stack, api: ScoutClient):
    open_ui(page, stack)
    send(page, "SLOW: 40 0.25")
    expect(chat(page)).to_contain_text("word2")
    task = newest_task(api)
    assert task["status"] == "running"
    assert "word39" not in chat(page).inner_text()  # the answer arrives as it is written
    shot(page, "streaming")
    stop = page.locator("#scout-stop")
    expect(stop).to_be_visible()
    pressed = time.monotonic()
    stop.click()
    expect(chat(page).locator(".scout-stopped")).to_contain_text("cancelled")
    assert time.monotonic() - pressed < 15
    assert api.status(task["task_id"], events=False)["status"] == "cancelled"
    assert "word39" not in chat(page).inner_text()
    expect(page.locator("#scout-send")).to_be_visible()
    expect(page.locator("#scout-status")).to_contain_text("cancelled")


def test_reload_reattaches_to_the_running_task(page: "Page", stack: Stack, api: ScoutClient):
    open_ui(page, stack)
    send(page, "SLOW: 60 0.25")
    expect(chat(page)).to_contain_text("word2")
    session_id = session_in_url(page)
    task = newest_task(api)
    assert task["session_id"] == session_id and task["status"] == "running"

    page.reload()
    expect(chat(page)).to_contain_text("SLOW: 60 0.25")  # the conversation is back
    assert wait_status(api, task["task_id"], ("running", "completed"))["status"] == "running"
    shot(page, "reattached")
    expect(page.locator("#scout-stop")).to_be_visible()
    # A message sent while it runs waits its turn, shown as queued, then goes out as a follow-up.
    send(page, "ECHO-HISTORY after the reload")
    expect(chat(page).locator(".scout-queued")).to_be_visible()
    shown = chat(page).inner_text()  # the same paint that showed the queued message
    assert "SLOW: 60 0.25" in shown and "word0" in shown, shown  # the answer in progress stays
    expect(page.locator("#scout-input textarea")).to_have_value("")
    shot(page, "queued")
    assert newest_task(api)["task_id"] == task["task_id"]  # not sent over the running task
    expect(chat(page)).to_contain_text("word59", timeout=30_000)
    expect(chat(page)).to_contain_text("SLOW: 60 0.25 | ECHO-HISTORY after the reload", timeout=60_000)
    expect(chat(page).locator(".scout-done")).to_have_count(2)
    expect(chat(page).locator(".scout-queued")).to_have_count(0)
    text = chat(page).inner_text()
    assert text.count("word0 ") == 1 and text.count("word59") == 1, text  # resumed, not replayed twice
    assert session_in_url(page) == session_id
    assert api.status(task["task_id"], events=False)["status"] == "completed"
    follow_up = newest_task(api)
    assert follow_up["message"] == "ECHO-HISTORY after the reload" and follow_up["session_id"] == session_id


def test_a_message_queued_after_a_reload_keeps_the_quiet_task_in_view(page: "Page", stack: Stack,
                                                                      api: ScoutClient, project: Path):
    """After a reload, a message queued behind the re-attached task must not blank its answer,
    also while the task is quiet (a long tool step sends nothing to repaint it)."""
    open_ui(page, stack)
    set_cwd(page, str(project))
    send(page, "BASH: python3 -c 'import time; time.sleep(300)'")
    step = chat(page).get_by_text("Bash · python3 -c")
    expect(step).to_be_visible(timeout=60_000)
    task = newest_task(api)
    page.reload()
    expect(step).to_be_visible(timeout=30_000)
    expect(page.locator("#scout-stop")).to_be_visible()
    send(page, "after the quiet step")
    expect(chat(page).locator(".scout-queued")).to_be_visible()
    shown = chat(page).inner_text()  # the same paint that showed the queued message
    assert "Bash · python3 -c" in shown and "BASH: python3 -c" in shown, shown
    shot(page, "queued-behind-quiet-step")
    api.stop(task["task_id"])  # then the queued message goes out, in the same session
    expect(chat(page)).to_contain_text("ECHO: after the quiet step", timeout=60_000)
    expect(chat(page).locator(".scout-queued")).to_have_count(0)
    assert newest_task(api)["session_id"] == task["session_id"]


def test_new_chat_mid_task_starts_afresh_and_lets_go(page: "Page", stack: Stack, api: ScoutClient,
                                                    project: Path):
    """New chat while a task runs: the next message goes out at once, in a new session; the
    old task runs on, and the page lets go of its (quiet) stream."""
    requests_seen: list[str] = []
    page.on("request", lambda r: requests_seen.append(r.url))
    open_ui(page, stack)
    set_cwd(page, str(project))
    send(page, "BASH: python3 -c 'import time; time.sleep(300)'")  # quiet: only keep-alives come
    expect(chat(page).get_by_text("Bash · python3 -c")).to_be_visible(timeout=60_000)
    old = newest_task(api)
    # Hold New chat's request back until the next message has been sent: the server gets them
    # out of order, as it can under load. The message must still start the new chat.
    held: list[Any] = []
    sent: list[Any] = []

    def hold_new_chat(route: Any) -> None:
        if "fresh start" in (route.request.post_data or ""):
            sent.append(route)
            route.continue_()
        elif not held:
            held.append(route)
        else:
            route.continue_()

    page.route(re.compile(r".*/queue/join.*"), hold_new_chat)
    page.locator("#scout-new-chat").click()
    send(page, "fresh start")  # at once, without waiting for anything
    deadline = time.time() + 15
    while not (held and sent) and time.time() < deadline:
        page.wait_for_timeout(100)
    assert len(held) == 1 and len(sent) == 1  # the send overtook New chat
    page.wait_for_timeout(300)  # let the send reach the server first
    held[0].continue_()
    expect(chat(page)).to_contain_text("ECHO: fresh start", timeout=60_000)
    expect(chat(page).locator(".scout-done")).to_have_count(1)
    new = newest_task(api)
    assert new["message"] == "fresh start" and new["session_id"] != old["session_id"]
    assert api.status(old["task_id"], events=False)["status"] == "running"  # it runs on
    # No stream is held for the old task: the page's streams all closed, while it still runs.
    deadline = time.time() + 10
    while stack_streams(stack) and time.time() < deadline:
        time.sleep(0.2)
    assert stack_streams(stack) == 0
    assert api.status(old["task_id"], events=False)["status"] == "running"
    assert "time.sleep(300)" not in chat(page).inner_text()
    # Gradio's cancel-by-function is not used: it could kill the next send (seen in CI once).
    assert not [u for u in requests_seen if u.endswith("/cancel")], requests_seen
    api.stop(old["task_id"])
    wait_status(api, old["task_id"], ("cancelled",))


def test_follow_up_continues_the_session_new_chat_does_not(page: "Page", stack: Stack, api: ScoutClient):
    open_ui(page, stack)
    send(page, "first question")
    expect(chat(page)).to_contain_text("ECHO: first question")
    expect(chat(page).locator(".scout-done")).to_have_count(1)
    send(page, "ECHO-HISTORY")
    # The model saw the earlier turn: Claude Code resumed the same conversation.
    expect(chat(page)).to_contain_text("first question | ECHO-HISTORY")
    expect(chat(page).locator(".scout-done")).to_have_count(2)
    first, second = reversed(api.tasks(limit=2)["tasks"])
    assert first["message"] == "first question" and second["message"] == "ECHO-HISTORY"
    assert first["session_id"] == second["session_id"] == session_in_url(page)

    page.locator("#scout-new-chat").click()
    expect(chat(page)).not_to_contain_text("first question")
    expect(page).not_to_have_url(re.compile(r"session="))
    send(page, "another topic")
    expect(chat(page)).to_contain_text("ECHO: another topic")
    third = newest_task(api)
    assert third["message"] == "another topic" and third["session_id"] != first["session_id"]

    # History lists sessions newest first with their status; opening one shows all of it.
    entries = page.locator("#scout-history label")
    expect(entries.first).to_contain_text("another topic")
    expect(entries.first).to_contain_text("✅")
    older = entries.filter(has_text="first question")  # a session is named by how it began
    expect(older).to_contain_text("2 tasks")
    older.click()
    expect(chat(page)).to_contain_text("ECHO: first question")
    expect(chat(page)).to_contain_text("first question | ECHO-HISTORY")
    expect(chat(page)).not_to_contain_text("another topic")
    expect(page).to_have_url(re.compile("session=" + first["session_id"]))
    shot(page, "history")


def test_delete_a_conversation_after_confirming(page: "Page", stack: Stack, api: ScoutClient):
    open_ui(page, stack)
    send(page, "please forget this")
    expect(chat(page).locator(".scout-done")).to_have_count(1)
    session_id = session_in_url(page)
    page.once("dialog", lambda dialog: dialog.dismiss())  # changed their mind: nothing happens
    page.locator("#scout-delete").click()
    page.wait_for_timeout(500)
    assert api.session(session_id)["session_id"] == session_id
    expect(chat(page)).to_contain_text("ECHO: please forget this")

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#scout-delete").click()
    expect(chat(page)).not_to_contain_text("please forget this")
    expect(page).not_to_have_url(re.compile(r"session="))
    expect(page.locator("#scout-history")).not_to_contain_text("please forget this")
    with pytest.raises(ScoutAPIError) as err:
        api.session(session_id)
    assert err.value.status == 404
    send(page, "a new start")  # the page goes on as after New chat
    expect(chat(page)).to_contain_text("ECHO: a new start")
    assert newest_task(api)["session_id"] != session_id


def test_mode_switch_and_readable_errors(page: "Page", stack: Stack, api: ScoutClient, base: Path):
    open_ui(page, stack)
    page.locator("#scout-mode input").click()
    page.get_by_role("option", name="Plan").click()
    expect(page.locator("#scout-mode")).to_contain_text("Plans only")
    send(page, "which mode am I in")
    expect(chat(page).locator(".scout-done")).to_have_count(1)
    assert newest_task(api)["mode"] == "Plan"

    page.locator("#scout-new-chat").click()  # then send at once: no waiting for anything
    before = newest_task(api)["task_id"]
    set_cwd(page, str(base / "does-not-exist"))
    send(page, "hello there")
    expect(chat(page).locator(".scout-error")).to_contain_text("cwd does not exist")
    expect(page.locator("#scout-input textarea")).to_have_value("hello there")  # kept, to send again
    set_cwd(page, "/")
    send(page, "hello again")
    expect(chat(page).locator(".scout-error").last).to_contain_text("outside the allowed roots")
    assert newest_task(api)["task_id"] == before  # nothing was started

    # A task that fails says why, in words.
    set_cwd(page, "")
    send(page, "ERROR: 401")
    expect(chat(page).locator(".scout-error").last).to_contain_text("Task failed", timeout=60_000)
    assert newest_task(api)["status"] == "failed"
    assert "Traceback" not in chat(page).inner_text()
    shot(page, "errors")


def test_server_down_is_a_readable_message(page: "Page", base: Path):
    """A UI whose API is not there says so, on load and on send, without a traceback."""
    dead_api = f"http://127.0.0.1:{free_port()}"
    port = free_port()
    log_path = base / f"ui-alone-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCOUT_", "GRADIO_"))}
    proc = subprocess.Popen([sys.executable, "-m", "scout.ui", "--port", str(port), "--api-url", dead_api],
                            env={**env, "PYTHONPATH": str(ROOT)}, cwd=str(base), stdin=subprocess.DEVNULL,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while "Scout UI on" not in log_path.read_text():
            assert proc.poll() is None and time.time() < deadline, log_path.read_text()
            time.sleep(0.1)
        page.goto(f"http://127.0.0.1:{port}/")
        expect(chat(page).locator(".scout-error")).to_contain_text("Could not load Scout")
        expect(chat(page).locator(".scout-error")).to_contain_text("unreachable")
        send(page, "anyone there?")
        expect(chat(page).locator(".scout-error").last).to_contain_text("unreachable")
        expect(chat(page).locator(".scout-error").last).to_contain_text(dead_api)
        assert "Traceback" not in chat(page).inner_text()
        shot(page, "server-down")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()


def choose_mode(page: "Page", name: str) -> None:
    page.locator("#scout-mode input").click()
    page.get_by_role("option", name=name).click()


def box_of(locator: Any) -> dict[str, float]:
    box = locator.bounding_box()
    assert box, locator
    return box


def test_one_approval_card_asks_for_a_read_only_command_too(page: "Page", stack: Stack, api: ScoutClient,
                                                            project: Path):
    """Issue 16: `ls` is asked like any command; the request is shown once, as a card that
    holds its own Allow / Deny buttons; Allow lets the task finish."""
    open_ui(page, stack)
    choose_mode(page, "Careful")
    set_cwd(page, str(project))
    send(page, "BASH: ls")
    card = chat(page).locator(".scout-ask")
    expect(card).to_contain_text("ls", timeout=60_000)
    task = newest_task(api)
    assert task["status"] == "waiting"
    # One mention of the request: no separate approval step, no spinning tool step beside the card.
    expect(chat(page).get_by_text("Approval needed")).to_have_count(0)
    expect(chat(page).get_by_text("Bash · ls")).to_have_count(0)
    expect(card).to_have_count(1)
    allow = chat(page).get_by_role("button", name="Allow")
    deny = chat(page).get_by_role("button", name="Deny")
    expect(allow).to_be_visible()
    expect(deny).to_be_visible()
    # The buttons are on the card: inside the bubble that holds it, not apart under the chat.
    bubble = box_of(chat(page).locator(".message-row", has=page.locator(".scout-ask")).locator(".bot").last)
    for button in (allow, deny):
        b = box_of(button)
        assert bubble["y"] <= b["y"] and b["y"] + b["height"] <= bubble["y"] + bubble["height"] + 1, (bubble, b)
        assert bubble["x"] <= b["x"] < bubble["x"] + bubble["width"], (bubble, b)
    shot(page, "approval-card")
    allow.click()
    expect(chat(page).locator(".scout-done")).to_contain_text("Done", timeout=60_000)
    expect(chat(page)).to_contain_text(f"TOOL RESULT: known-{project.name}.txt")
    expect(card).to_have_count(0)
    expect(chat(page).locator(".options button")).to_have_count(0)  # the buttons went with the card
    doc = wait_status(api, task["task_id"], ("completed",))
    events = api.status(task["task_id"])["events"]
    assert [e["payload"]["decision"] for e in events if e["type"] == "approval"] == ["allow"], doc


def test_after_a_reload_the_status_line_shows_the_last_task(page: "Page", stack: Stack, api: ScoutClient):
    open_ui(page, stack)
    send(page, "status after reload")
    expect(chat(page).locator(".scout-done")).to_have_count(1, timeout=90_000)
    task = newest_task(api)
    expect(page.locator("#scout-status")).to_contain_text("completed")
    page.reload()
    expect(chat(page)).to_contain_text("ECHO: status after reload")
    status = page.locator("#scout-status")
    expect(status).to_contain_text(task["task_id"][:8])
    expect(status).to_contain_text("completed")


def test_nothing_hides_under_the_chats_floating_icons(page: "Page", stack: Stack):
    open_ui(page, stack)
    send(page, "a message long enough to reach the right edge where the icons float " * 3)
    expect(chat(page).locator(".scout-done")).to_have_count(1, timeout=90_000)
    # Not over the first message, nor anywhere over the scrolling messages (a long conversation
    # scrolls under whatever floats there).
    first = box_of(chat(page).locator(".message-row.user-row").first)
    messages = box_of(chat(page).locator(".bubble-wrap"))
    icons = chat(page).locator(".top-panel button")
    expect(icons.first).to_be_visible()
    for i in range(icons.count()):
        icon = box_of(icons.nth(i))
        for other in (first, messages):
            apart = (icon["y"] + icon["height"] <= other["y"] or other["y"] + other["height"] <= icon["y"]
                     or icon["x"] + icon["width"] <= other["x"] or other["x"] + other["width"] <= icon["x"])
            assert apart, (icon, other)
    expect(chat(page)).to_contain_text("ECHO: a message long enough")


def test_approval_buttons_answer_a_tool_request(page: "Page", stack: Stack, api: ScoutClient, project: Path):
    open_ui(page, stack)
    page.locator("#scout-mode input").click()
    page.get_by_role("option", name="Careful").click()
    set_cwd(page, str(project))
    send(page, "BASH: touch made-here.txt && ls")
    expect(chat(page).locator(".scout-ask")).to_contain_text("touch made-here.txt && ls", timeout=60_000)
    task = newest_task(api)
    assert task["status"] == "waiting" and task["mode"] == "Careful"
    shot(page, "approval")
    assert not (project / "made-here.txt").exists()
    chat(page).get_by_role("button", name="Allow").click()
    expect(chat(page)).to_contain_text("made-here.txt", timeout=60_000)
    expect(chat(page).locator(".scout-done")).to_contain_text("Done")
    expect(chat(page)).to_contain_text("allowed")
    assert (project / "made-here.txt").exists()
    assert wait_status(api, task["task_id"], ("completed",))["status"] == "completed"


def test_a_conversation_whose_history_is_gone_is_not_offered_again(page: "Page", stack: Stack, api: ScoutClient,
                                                                    base: Path):
    import sqlite3
    open_ui(page, stack)
    send(page, "remember the number 7")
    expect(chat(page).locator(".scout-done")).to_have_count(1)
    session_id = session_in_url(page)
    claude_id = api.session(session_id)["claude_session_id"]
    # Both copies of the conversation go: Claude Code's file, and Scout's.
    for path in (base / "home" / ".claude" / "projects").glob(f"*/{claude_id}.jsonl"):
        path.unlink()
    conn = sqlite3.connect(base / "data" / "scout.db", timeout=30)
    with conn:
        conn.execute("DELETE FROM transcripts WHERE session_id = ?", (session_id,))
    conn.close()
    send(page, "ECHO-HISTORY what was it?")
    expect(chat(page)).to_contain_text("cannot be continued")
    box = page.locator("#scout-input textarea")
    expect(box).to_be_disabled()
    expect(box).to_have_attribute("placeholder", re.compile("New chat"))
    page.reload()  # opened again (its link), it still says so
    expect(chat(page)).to_contain_text("cannot be continued")
    expect(page.locator("#scout-input textarea")).to_be_disabled()
    page.locator("#scout-new-chat").click()
    expect(box).to_be_editable()
    send(page, "a fresh one")
    expect(chat(page)).to_contain_text("ECHO: a fresh one")
    assert newest_task(api)["session_id"] != session_id


def test_worktree_changes_view_and_merge(page: "Page", stack: Stack, api: ScoutClient, project: Path):
    """A Code session in a git repository works in a worktree; the page shows its changes
    (files, +/−, the highlighted diff) and merges them into the checkout after a confirm."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    git("init", "-q", "-b", "main")
    git("config", "user.name", "Tester")
    git("config", "user.email", "t@example.com")
    (project / "a.txt").write_text("one\ntwo\n")
    git("add", ".")
    git("commit", "-q", "-m", "init")
    open_ui(page, stack)
    page.locator("#scout-mode input").click()
    page.get_by_role("option", name="Code").click()
    set_cwd(page, str(project))
    send(page, "BASH: printf 'one\\nfrom the UI\\n' > a.txt && echo hi > new.txt")
    expect(chat(page).locator(".scout-changes")).to_contain_text("2 files changed, +2 −1", timeout=90_000)
    panel = page.locator("#scout-changes")
    expect(panel).to_be_visible()
    expect(page.locator("#scout-changes-files")).to_contain_text("a.txt")
    expect(page.locator("#scout-changes-files")).to_contain_text("new.txt")
    expect(page.locator("#scout-diff .scout-d-add").first).to_contain_text("+from the UI")
    expect(page.locator("#scout-diff .scout-d-del").first).to_contain_text("-two")
    assert (project / "a.txt").read_text() == "one\ntwo\n"  # the checkout is untouched so far
    shot(page, "worktree-changes")

    page.once("dialog", lambda dialog: dialog.dismiss())  # not confirmed: nothing happens
    page.locator("#scout-merge").click()
    page.wait_for_timeout(500)
    assert (project / "a.txt").read_text() == "one\ntwo\n"
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#scout-merge").click()
    expect(chat(page)).to_contain_text("Merged into main")
    assert (project / "a.txt").read_text() == "one\nfrom the UI\n" and (project / "new.txt").exists()
    assert git("status", "--porcelain") == ""
    expect(page.locator("#scout-changes-files")).to_contain_text("no files changed")
    shot(page, "worktree-merged")
