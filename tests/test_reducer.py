"""The event fold (scout/reducer.py) that the UI, the CLI and the transcript render from.

Part of the fast layer (`make test-fast`).
"""
from __future__ import annotations

from typing import Any

from scout.reducer import Approval, Denied, Problem, TaskFold, Text, Thinking, Tool, result_content


def fold(*events: tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], float]) -> TaskFold:
    f = TaskFold()
    for seq, event in enumerate(events, 1):
        kind, payload = event[0], event[1]
        f.apply(kind, payload, seq, event[2] if len(event) > 2 else None)  # type: ignore[misc]
    return f


def test_deltas_stream_into_a_block_the_assistant_event_replaces() -> None:
    f = TaskFold()
    block = f.apply("text_delta", {"text": "Hel"})
    assert isinstance(block, Text) and block.text == "Hel" and not block.final
    assert f.apply("text_delta", {"text": "lo"}) is block and block.text == "Hello"
    assert f.apply("assistant", {"text": "Hello there"}) is block
    assert block.final and block.text == "Hello there" and f.parts == [block]
    nxt = f.apply("text_delta", {"text": "More"})
    assert nxt is not block and len(f.parts) == 2  # a new block after the whole one


def test_a_block_without_deltas_and_a_cut_off_stream() -> None:
    f = fold(("assistant", {"text": "whole"}), ("text_delta", {"text": "cut "}),
             ("tool_use", {"id": "u", "name": "Read"}))
    first, cut, tool = f.parts
    assert first == Text("whole", final=True) and cut == Text("cut ", final=False)  # partial: never completed
    assert isinstance(tool, Tool)
    assert fold(("assistant", {"text": ""})).parts == []


def test_sub_agent_text_arrives_whole_and_its_deltas_are_skipped() -> None:
    f = fold(("text_delta", {"text": "x", "parent_tool_use_id": "t1"}),
             ("assistant", {"text": "from the sub-agent", "parent_tool_use_id": "t1"}))
    assert f.parts == [Text("from the sub-agent", final=True, parent="t1")]


def test_a_tool_result_finds_its_call() -> None:
    f = fold(("tool_use", {"id": "u1", "name": "Bash", "input": {"command": "ls"}}, 10.0),
             ("tool_use", {"id": "u2", "name": "Read", "input": {"file_path": "/x"}}, 10.5),
             ("tool_result", {"tool_use_id": "u1", "content": "a.txt", "is_error": False}, 11.25),
             ("tool_result", {"tool_use_id": "u2", "content": [{"type": "text", "text": "no"}],
                              "is_error": True}, 12.0),
             ("tool_result", {"tool_use_id": "lost", "content": "?"}, 13.0))
    bash, read, orphan = f.parts
    assert isinstance(bash, Tool) and bash.done and bash.output == "a.txt" and bash.seconds == 1.25
    assert isinstance(read, Tool) and read.is_error and read.output == "no" and read.seconds == 1.5
    assert isinstance(orphan, Tool) and not orphan.called and orphan.output == "?"


def test_approvals_are_asked_answered_and_closed() -> None:
    f = fold(("status", {"status": "running"}, 1.0),
             ("approval_request", {"tool_use_id": "a1", "tool": "Bash", "input": {"command": "rm"}, "timeout": 30}),
             ("approval_request", {"tool_use_id": "a2", "tool": "Write", "input": {}}))
    assert [a.tool_use_id for a in f.asking] == ["a1", "a2"]
    answered = f.apply("approval", {"tool_use_id": "a1", "decision": "deny", "reason": "no"})
    assert isinstance(answered, Approval)
    assert (answered.decision, answered.reason, answered.timeout) == ("deny", "no", 30.0)
    assert [a.tool_use_id for a in f.asking] == ["a2"]
    f.apply("status", {"status": "cancelled"}, None, 5.0)
    assert f.closed and f.asking == [] and f.finished_at == 5.0 and f.started_at == 1.0


def test_status_result_model_and_the_other_parts() -> None:
    f = fold(("system", {"subtype": "init", "model": "claude-x"}),
             ("status", {"status": "running"}, 2.0),
             ("thinking", {"text": "hmm"}),
             ("permission_denied", {"tool": "Edit", "input": {}, "reason": "not allowed in this mode"}),
             ("error", {"message": "overloaded"}),
             ("result", {"text": "done", "is_error": False}),
             ("status", {"status": "failed", "error": "boom"}, 3.0),
             ("unknown_future_type", {"x": 1}))
    assert f.model == "claude-x" and f.result == {"text": "done", "is_error": False}
    assert (f.status, f.error, f.started_at, f.finished_at, f.last_seq) == ("failed", "boom", 2.0, 3.0, 8)
    assert f.parts == [Thinking("hmm"), Denied("Edit", {}, "not allowed in this mode"), Problem("overloaded")]


def test_of_sorts_by_seq_and_result_content() -> None:
    f = TaskFold.of([{"seq": 2, "type": "assistant", "payload": {"text": "B"}},
                     {"seq": 1, "type": "assistant", "payload": {"text": "A"}}])
    assert [p.text for p in f.parts if isinstance(p, Text)] == ["A", "B"]
    assert result_content(None) == "" and result_content([{"type": "image"}, "x"]) == "[image]\nx"
