"""When to start a crashed process again: the one policy of `capmesh up` and `capmesh gateway --workers`.

A process that exits on its own is restarted after a backoff that doubles with each recent exit
(0.5 s, 1 s, 2 s, ... at most 30 s), as Kubernetes backs off a crashing container; exits older than
the window are forgotten, so a process that served for a while starts over at 0.5 s. CRASH_LOOP_EXITS
exits within CRASH_LOOP_WINDOW_S is a crash loop: restarting more would only hide the fault, so the
supervisor stops and says why.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

RESTART_BACKOFF_BASE_S = 0.5  # the first restart of a crashed process; doubled for each recent crash
RESTART_BACKOFF_MAX_S = 30.0
CRASH_LOOP_EXITS = 5  # this many exits of one process within the window is a crash loop
CRASH_LOOP_WINDOW_S = 60.0


class CrashHistory:
    """The recent exits of one supervised process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._exits: deque[float] = deque()

    def exited(self) -> float | None:
        """Records an exit now: the seconds to wait before starting the process again, or None when
        it is crash-looping and must not be started again."""
        now = self._clock()
        self._exits.append(now)
        while now - self._exits[0] > CRASH_LOOP_WINDOW_S:
            self._exits.popleft()
        if len(self._exits) >= CRASH_LOOP_EXITS:
            return None
        return min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_BASE_S * 2 ** (len(self._exits) - 1))

    @property
    def recent(self) -> int:
        """Exits within the window, as of the last one."""
        return len(self._exits)

    def crash_loop(self, name: str, code: int | None) -> str:
        """What a supervisor says when `name` crash-loops; `code` is its last exit code."""
        window = f"{CRASH_LOOP_WINDOW_S:.0f}s"
        return f"{name} is crash-looping: it exited {self.recent} times within {window}, last with code {code}"
