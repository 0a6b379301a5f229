"""Cancellation that reaches the model: a token that engines check between steps.

The servicer trips the token when the caller cancels or disconnects, and the token trips itself
when the caller's deadline passes. Engines call `token.raise_if_cancelled()` between tokens,
sentences, denoising steps or frames; it raises `Cancelled` or `DeadlineExceeded`, which end the RPC
with the matching status.
"""

from __future__ import annotations

import threading
import time

from capmesh.services.runtime.errors import Cancelled, DeadlineExceeded


class CancelToken:
    """Thread-safe: set from the event loop, read from the engine's worker thread."""

    def __init__(self, deadline_monotonic: float | None = None) -> None:
        self._event = threading.Event()
        self._deadline = deadline_monotonic
        self._why = "cancelled"

    @classmethod
    def with_timeout(cls, seconds: float | None) -> CancelToken:
        return cls(None if seconds is None else time.monotonic() + seconds)

    @classmethod
    def never(cls) -> CancelToken:
        return cls(None)

    def cancel(self, why: str = "cancelled") -> None:
        self._why = why
        self._event.set()

    @property
    def deadline_passed(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    @property
    def cancelled(self) -> bool:
        return self._event.is_set() or self.deadline_passed

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled(f"the call was {self._why}; stopped at the next step")
        if self.deadline_passed:
            raise DeadlineExceeded("the deadline passed; stopped at the next step")

    def wait(self, seconds: float) -> bool:
        """Sleeps up to `seconds` unless cancelled first; returns True when cancelled."""
        if self._deadline is not None:
            seconds = min(seconds, max(0.0, self._deadline - time.monotonic()))
        return self._event.wait(seconds) or self.cancelled
