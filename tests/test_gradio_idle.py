"""scout/gradio_idle.py on a real Gradio queue: Gradio's pace while there is work, a slow one
once idle (the idle CPU figure itself is measured by bench/idle.py, not asserted here)."""
from __future__ import annotations

import gradio as gr
import pytest

from scout import gradio_idle
from scout.gradio_idle import IDLE_POLL, IDLE_PROGRESS_POLL, STAY_BUSY, quiet_when_idle


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(gradio_idle.time, "monotonic", lambda: now[0])
    return now


def test_a_gradio_queue_polls_slowly_only_when_idle(clock: list[float]) -> None:
    with gr.Blocks() as demo:
        gr.Markdown("x")
    demo.queue()
    queue = demo._queue
    gradio_pace, gradio_progress = queue.sleep_when_free, queue.progress_update_sleep_when_free
    assert gradio_pace < IDLE_POLL and gradio_progress < IDLE_PROGRESS_POLL  # what this is about
    queue.active_jobs = [None] * 4  # as Queue.start() leaves them
    quiet_when_idle(queue)
    quiet_when_idle(queue)  # twice is once
    assert type(queue).__name__ == "QuietQueue" and len(queue) == 0
    assert queue.sleep_when_free == gradio_pace  # just started: Gradio's pace for a while
    clock[0] += STAY_BUSY + 0.1
    assert queue.sleep_when_free == IDLE_POLL and queue.progress_update_sleep_when_free == IDLE_PROGRESS_POLL
    queue.active_jobs[0] = ["an event"]  # work: Gradio's pace at once
    assert queue.sleep_when_free == gradio_pace and queue.progress_update_sleep_when_free == gradio_progress
    queue.active_jobs[0] = None
    clock[0] += STAY_BUSY - 0.5  # and for a while after the work ended
    assert queue.sleep_when_free == gradio_pace
    clock[0] += 1.0
    assert queue.sleep_when_free == IDLE_POLL
