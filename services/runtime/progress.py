"""What engines report while they work; the runtime converts it to `capmesh.common.v1.Progress`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# What an engine calls with each event of a streamed call (a ProgressUpdate, a chunk, the result);
# the runtime turns each into a response message.
Emit = Callable[[object], None]


@dataclass(frozen=True)
class ProgressUpdate:
    """One progress report: a stage name, percent 0-100 and, for stepped work, step / total_steps."""

    stage: str
    percent: float
    message: str = ""
    step: int = 0
    total_steps: int = 0
    eta_seconds: float | None = None
    queue_position: int = 0


class StepTimer:
    """Measures step durations to estimate the time left (ETA) from the mean step time so far."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps
        self._start = time.monotonic()

    def eta_after(self, steps_done: int) -> float | None:
        if steps_done <= 0:
            return None
        per_step = (time.monotonic() - self._start) / steps_done
        return per_step * max(0, self.total_steps - steps_done)
