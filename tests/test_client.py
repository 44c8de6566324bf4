"""scout.client against a real server, and the UI's rendering of event logs (no browser)."""
from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port
from scout.client import ScoutAPIError, ScoutClient, ScoutUnreachable, parse_sse
from scout.ui import Conversation, TaskView, fence, tool_title


def test_parse_sse_handles_ids_comments_multiline_and_end():
    lines = ["retry: 1000", "", ": keep-alive", "", "id: 3", "event: text_delta",
             'data: {"seq": 3, "type": "text_delta",', 'data: "payload": {"text": "hi"}}', "",
             "event: end", 'data: {"task_id": "t", "status": "completed"}', ""]
    events = list(parse_sse(iter(lines)))
    assert [(e.type, e.id) for e in events] == [("text_delta", 3), ("end", None)]
    assert events[0].payload == {"text": "hi"} and events[1].is_end
    assert events[1].data["status"] == "completed"


def test_client_round_trip_and_errors(server, tmp_path: Path):
    client = ScoutClient(server.url)
    assert client.health()["status"] in ("ok", "degraded")
    assert client.modes()["default"] == "Scout"
    project = tmp_path / "p"
    project.mkdir()
    started = client.post_chat("hello", cwd=str(project))
    assert started["status"] == "pending"
    events = list(client.stream(started["task_id"]))
    assert events[-1].is_end and events[-1].data["status"] == "completed"
    assert "".join(e.payload["text"] for e in events if e.type == "text_delta") == "ECHO: hello"
    # Resuming after the last event replays nothing but the end.
    last = max(e.id for e in events if e.id is not None)
    assert [e.type for e in client.stream(started["task_id"], last)] == ["end"]
    doc = client.status(started["task_id"], events=False)
    assert doc["status"] == "completed" and "events" not in doc
    follow = client.post_chat("again", session_id=started["session_id"])
    assert follow["session_id"] == started["session_id"]
    assert client.session(started["session_id"])["tasks"][0]["task_id"] == started["task_id"]
    assert client.tasks(session_id=started["session_id"])["tasks"][0]["task_id"] == follow["task_id"]
    assert client.sessions()["sessions"][0]["session_id"] == started["session_id"]
    assert client.stop(started["task_id"])["stopped"] is False

    with pytest.raises(ScoutAPIError) as err:
        client.post_chat("x", cwd=str(tmp_path / "missing"))
    assert (err.value.status, err.value.code) == (400, "invalid_cwd")
    assert "does not exist" in err.value.message
    with pytest.raises(ScoutAPIError) as err:
        client.post_chat("x", mode="Nope")
    assert err.value.code == "unknown_mode" and "Scout" in err.value.message
    with pytest.raises(ScoutAPIError) as err:
        client.status("00000000-0000-0000-0000-000000000000")
    assert err.value.status == 404


def test_token_and_unreachable(make_server):
    server = make_server(SCOUT_API_TOKEN="tok")
    with pytest.raises(ScoutAPIError) as err:
        ScoutClient(server.url).tasks()
    assert err.value.status == 401 and err.value.code == "unauthorized"
    assert ScoutClient(server.url, token="tok").tasks()["tasks"] == []
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ScoutUnreachable) as err:
        ScoutClient(dead).sessions()
    assert err.value.code == "unreachable" and dead in err.value.message
    assert "connection refused" in err.value.message
    with pytest.raises(ScoutUnreachable):
        list(ScoutClient(dead).stream("00000000-0000-0000-0000-000000000000", reconnect=1,
                                      reconnect_delay=0.01))


def test_stream_until_lets_go_of_a_quiet_task(make_server, tmp_path: Path):
    """`until` is asked on keep-alives too, so a reader can leave a task that says nothing."""
    server = make_server(SCOUT_SSE_KEEPALIVE="0.3")
    client = ScoutClient(server.url)
    project = tmp_path / "p"
    project.mkdir()
    started = client.post_chat("BASH: python3 -c 'import time; time.sleep(20)'", cwd=str(project))
    seen: list[str] = []
    leave_at: list[float] = []

    def until() -> bool:
        if "tool_use" in seen and not leave_at:
            leave_at.append(time.monotonic())  # the command now runs quietly for 20 s
        return bool(leave_at) and time.monotonic() - leave_at[0] > 0.5

    for event in client.stream(started["task_id"], until=until):
        seen.append(event.type)
    left = time.monotonic()
    assert "end" not in seen and "tool_use" in seen, seen
    assert left - leave_at[0] < 3  # within a keep-alive or two, not when the command ends
    assert client.status(started["task_id"], events=False)["status"] == "running"
    assert list(client.stream(started["task_id"], until=lambda: True)) == []
    client.stop(started["task_id"])


def test_conversation_follows_one_task_and_queues_the_rest():
    conv = copy.deepcopy(Conversation())  # what Gradio does for each tab: a fresh one, lock included
    epoch = conv.switch("s1")
    assert conv.claim(epoch)
    order: list[str] = []

    def queued_send(text: str) -> None:
        conv.enqueue(text)
        if conv.claim(epoch, waiting=text):
            order.append(text)
            conv.release(epoch)

    waiter = threading.Thread(target=queued_send, args=("next",))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive() and conv.queued == ["next"]
    assert "next" in conv.pending()[0]["content"] and "queued" in conv.pending()[0]["content"]
    conv.release(epoch)
    waiter.join(5)
    assert order == ["next"] and conv.queued == [] and not conv.busy

    # Several queued messages go out in the order they were sent.
    assert conv.claim(epoch)
    waiters = []
    for text in ("one", "two", "three"):
        waiters.append(threading.Thread(target=queued_send, args=(text,)))
        waiters[-1].start()
        time.sleep(0.05)
    assert conv.queued == ["one", "two", "three"]
    conv.release(epoch)
    for w in waiters:
        w.join(5)
    assert order == ["next", "one", "two", "three"] and conv.queued == []

    # Switching conversation drops what waited, and frees the waiter at once.
    assert conv.claim(epoch)
    dropped = threading.Thread(target=queued_send, args=("dropped",))
    dropped.start()
    time.sleep(0.2)
    new_epoch = conv.switch()
    dropped.join(5)
    assert not dropped.is_alive() and "dropped" not in order and conv.queued == []
    assert not conv.busy and conv.claim(new_epoch)
    conv.release(epoch)  # a stale handler's release changes nothing
    assert conv.busy


def test_conversation_waits_for_the_pages_earlier_switches():
    """A send that overtook the page's New chat waits for it, then sees the new conversation."""
    conv = Conversation()
    conv.switch("old-session")
    seen: list[tuple[int, str]] = []
    send = threading.Thread(target=lambda: (conv.wait_for_view(1), seen.append((conv.view, conv.session_id))))
    send.start()
    time.sleep(0.2)
    assert send.is_alive() and seen == []
    conv.switch(view=1)  # New chat, the page's first switch, arrives
    send.join(5)
    assert seen == [(1, "")]
    conv.saw_view(2)  # a switch that changed nothing still counts
    started = time.monotonic()
    conv.wait_for_view(2)
    assert time.monotonic() - started < 0.1 and conv.epoch == 2
    conv.wait_for_view(5, timeout=0.3)  # a switch that never arrives holds a send only so long
    assert 0.25 < time.monotonic() - started < 2

def test_task_view_folds_events_into_messages():
    view = TaskView(task_id="t", message="BASH: ls")
    log = [
        ("status", {"status": "running"}, 10.0),
        ("tool_use", {"id": "u1", "name": "Bash", "input": {"command": "ls"}}, 10.5),
        ("tool_result", {"tool_use_id": "u1", "content": "a.txt", "is_error": False}, 11.0),
        ("text_delta", {"text": "TOOL "}, 11.1),
        ("text_delta", {"text": "RESULT"}, 11.2),
        ("assistant", {"text": "TOOL RESULT: a.txt"}, 11.3),
        ("result", {"text": "TOOL RESULT: a.txt", "duration_ms": 1500, "total_cost_usd": 0.0123,
                    "num_turns": 2, "is_error": False}, 11.4),
        ("status", {"status": "completed"}, 11.5),
    ]
    for seq, (kind, payload, when) in enumerate(log, 1):
        view.apply(kind, payload, seq, when)
    messages = view.messages()
    assert messages[0] == {"role": "user", "content": "BASH: ls"}
    tool = messages[1]
    assert tool["metadata"]["title"] == "🔧 Bash · ls" and tool["metadata"]["status"] == "done"
    assert tool["metadata"]["duration"] == 0.5 and "a.txt" in tool["content"]
    texts = [m["content"] for m in messages if m["role"] == "assistant" and "metadata" not in m]
    assert texts[0] == "TOOL RESULT: a.txt"  # the deltas, replaced by the whole block, not doubled
    assert "✅ Done" in texts[-1] and "1.5 s" in texts[-1] and "$0.0123" in texts[-1] and "2 turns" in texts[-1]
    assert view.last_seq == len(log)


def test_task_view_cancelled_and_failed():
    view = TaskView(task_id="t", message="SLOW")
    view.apply("text_delta", {"text": "word0 "}, 1, 1.0)
    view.apply("tool_use", {"id": "u", "name": "Read", "input": {"file_path": "/x"}}, 2, 1.1)
    view.apply("status", {"status": "cancelled"}, 3, 2.0)
    messages = view.messages()
    assert messages[2]["metadata"]["status"] == "done"  # nothing left spinning
    assert "cancelled" in messages[-1]["content"]
    failed = TaskView.from_status({"task_id": "t", "message": "m", "status": "failed", "error": "API error 401",
                                   "events": []})
    assert "Task failed: API error 401" in failed.messages()[-1]["content"]


def test_helpers():
    assert fence("a ``` b").startswith("````")
    assert tool_title("Grep", {"pattern": "def main"}) == "🔧 Grep · def main"
    assert tool_title("Odd", {}) == "🔧 Odd"
