"""The vocabulary's rules, spelt out: a change to the transition table must change this test too.

Part of the fast layer (`make test-fast`).
"""
from __future__ import annotations

import subprocess
import sys

from scout.vocab import (ACTIVE, EVENT_TYPES, STATUSES, TERMINAL, TRANSITIONS, UNFINISHED, EventType, TaskStatus,
                         can_transition, sources)

# Every legal status change, and why it exists.
LEGAL = {
    ("pending", "running"),      # the dispatcher starts it
    ("pending", "failed"),       # it could not be started
    ("pending", "cancelled"),    # stopped while queued
    ("running", "waiting"),      # Claude Code asks a person
    ("running", "completed"),    # the worker's happy ending
    ("running", "failed"),       # Claude Code's error, a limit, a lost worker
    ("running", "cancelled"),    # stopped
    ("running", "pending"),      # requeued at start-up: it never really started
    ("waiting", "running"),      # the person answered
    ("waiting", "completed"),
    ("waiting", "failed"),
    ("waiting", "cancelled"),
    ("waiting", "pending"),
}


def test_the_transition_table_is_exactly_the_legal_set() -> None:
    table = {(str(a), str(b)) for a, tos in TRANSITIONS.items() for b in tos}
    assert table == LEGAL
    for a in STATUSES:
        for b in STATUSES:
            assert can_transition(a, b) == ((a, b) in LEGAL)


def test_unknown_words_are_never_legal() -> None:
    assert not can_transition("pending", "deleted")
    assert not can_transition("nope", "running")


def test_sources() -> None:
    assert sources("pending") == (TaskStatus.RUNNING, TaskStatus.WAITING)
    assert sources("waiting") == (TaskStatus.RUNNING,)
    assert set(sources("cancelled")) == set(UNFINISHED)


def test_groups_and_words() -> None:
    assert [str(s) for s in STATUSES] == ["pending", "running", "waiting", "completed", "failed", "cancelled"]
    assert set(ACTIVE) | {TaskStatus.PENDING} == set(UNFINISHED)
    assert set(UNFINISHED) | set(TERMINAL) == set(STATUSES) and not set(UNFINISHED) & set(TERMINAL)
    assert TaskStatus.RUNNING == "running" and f"{TaskStatus.RUNNING}" == "running"
    assert EventType.TEXT_DELTA == "text_delta" and len(set(EVENT_TYPES)) == 13


def test_the_vocabulary_imports_nothing_of_scout() -> None:
    """Client-side code imports it: it must stay free of the server's dependencies."""
    code = ("import sys; import scout.vocab; "
            "print(sorted(m for m in sys.modules if m.startswith('scout.') and m != 'scout.vocab'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
