"""The worker-process state machine (supervisor.ProcessState), warm sessions' IDLE included.
Part of the fast layer (`make test-fast`): no process is started."""
from __future__ import annotations

import pytest

from scout.supervisor import EXITED, IDLE, PROC_RUNNING, PROCESS_TRANSITIONS, STARTING, STOPPING, WorkerProc


def test_a_warm_process_goes_idle_and_back_to_running_only_from_running() -> None:
    proc = WorkerProc("t1")
    assert proc.run_id == "t1"  # its tree is its first task's
    assert not proc.change_state(IDLE) and proc.state == STARTING  # no task done yet
    assert proc.change_state(PROC_RUNNING) and proc.change_state(IDLE)
    assert proc.change_state(PROC_RUNNING)  # handed the session's next task
    assert proc.change_state(IDLE) and proc.change_state(STOPPING)  # evicted
    assert not proc.change_state(IDLE) and not proc.change_state(PROC_RUNNING)  # never revived
    assert proc.change_state(EXITED) and not any(proc.change_state(s) for s in PROCESS_TRANSITIONS)


@pytest.mark.parametrize("state", list(PROCESS_TRANSITIONS))
def test_the_table_is_the_rule(state) -> None:
    for to in PROCESS_TRANSITIONS:
        proc = WorkerProc("t", state=state)
        assert proc.change_state(to) == (to in PROCESS_TRANSITIONS[state])
        assert proc.state == (to if to in PROCESS_TRANSITIONS[state] else state)


def test_exited_is_final_and_stopping_only_ends() -> None:
    assert PROCESS_TRANSITIONS[EXITED] == frozenset()
    assert PROCESS_TRANSITIONS[STOPPING] == frozenset({EXITED})
    assert {s for s, tos in PROCESS_TRANSITIONS.items() if IDLE in tos} == {PROC_RUNNING}
