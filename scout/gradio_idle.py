"""Keep an idle Gradio app idle: its event queue polls at 1 ms, even with no browser open.

Gradio 6's queue (gradio.queueing.Queue) starts two loops when the app launches:
``start_processing`` sleeps ``sleep_when_free`` (1 ms) between looks for a new event, and
``start_progress_updates`` sleeps ``progress_update_sleep_when_free`` (10 ms) between looks for
progress to send. Together about 1,100 wake-ups a second: ~5 % of a core for a UI nobody uses
(issue 16 measured 6 %, strace ~1,600 epoll_wait calls a second).

Gradio has no setting for either, and its loops re-read both attributes on every turn, so this
module turns them into properties of the live queue: Gradio's own values while the queue has
work (events waiting or running) and for a short while after (so a chain of events, and the next
message of a conversation, start as fast as before), a slower pace once it has been idle. The
cost is that the first event after an idle spell may wait up to IDLE_POLL before it starts.
Run in the UI's process only.
"""
from __future__ import annotations

import time
from typing import Any

IDLE_POLL = 0.05          # seconds between looks for work once idle (Gradio: 0.001)
IDLE_PROGRESS_POLL = 0.25  # seconds between looks for progress once idle (Gradio: 0.01)
STAY_BUSY = 3.0           # seconds the queue keeps Gradio's pace after its last work


class _QuietWhenIdle:
    """Mixed in front of the live queue's class (see quiet_when_idle)."""

    _busy_pace: float
    _busy_progress_pace: float
    _last_work: float

    def _busy(self) -> bool:
        now = time.monotonic()
        if len(self) or any(job is not None for job in getattr(self, "active_jobs", ())):  # type: ignore[arg-type]
            self._last_work = now
        return now - self._last_work < STAY_BUSY

    @property
    def sleep_when_free(self) -> float:
        return self._busy_pace if self._busy() else IDLE_POLL

    @sleep_when_free.setter
    def sleep_when_free(self, value: float) -> None:
        self._busy_pace = value

    @property
    def progress_update_sleep_when_free(self) -> float:
        return self._busy_progress_pace if self._busy() else IDLE_PROGRESS_POLL

    @progress_update_sleep_when_free.setter
    def progress_update_sleep_when_free(self, value: float) -> None:
        self._busy_progress_pace = value


def quiet_when_idle(queue: Any) -> None:
    """Make a launched Gradio queue poll slowly while it is idle (see the module docstring)."""
    if isinstance(queue, _QuietWhenIdle):
        return
    busy_pace = vars(queue).pop("sleep_when_free", 0.001)
    busy_progress_pace = vars(queue).pop("progress_update_sleep_when_free", 0.01)
    queue.__class__ = type("Quiet" + type(queue).__name__, (_QuietWhenIdle, type(queue)), {})
    queue.sleep_when_free = busy_pace
    queue.progress_update_sleep_when_free = busy_progress_pace
    queue._last_work = time.monotonic()
