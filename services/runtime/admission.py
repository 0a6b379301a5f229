"""Bounded concurrency with a bounded, first-come-first-served waiting queue.

A call that finds every slot taken waits in line and can watch its place (`Ticket.positions`):
servicers turn each change into a progress message with stage `queued` and `queue_position`, so a
caller sees it is waiting rather than stuck. Only a full line answers RESOURCE_EXHAUSTED (with a
retry delay). A freed slot is handed to the first in line directly, so no later arrival can
overtake a waiting call.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from capmesh.services.runtime.errors import ResourceExhausted
from capmesh.services.runtime.progress import ProgressUpdate

STAGE_QUEUED = "queued"


def queued_update(position: int) -> ProgressUpdate:
    """The progress report of a call waiting at `position` (1: next to run)."""
    ahead = "1 call" if position == 1 else f"{position} calls"
    return ProgressUpdate(STAGE_QUEUED, 0.0, f"waiting for a free slot; {ahead} to go", queue_position=position)


class Ticket:
    """One call's place: waiting in line until `admitted`, then holding a slot until released."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.admitted = asyncio.Event()
        self.arrived = time.monotonic()

    @property
    def position(self) -> int:
        """1-based place in line; 0 once admitted."""
        return 0 if self.admitted.is_set() else self._admission.position_of(self)

    async def positions(self) -> AsyncIterator[int]:
        """Yields the place in line each time it changes, ending when the call is admitted."""
        last = 0
        while not self.admitted.is_set():
            # Taken before the place is read: a change while the caller handles a place (sends it
            # to the client) sets this event, so the wait below returns at once and nothing is
            # missed, not even the slot being handed over.
            changed = self._admission.line_changed
            position = self.position
            if position != last:
                last = position
                yield position
            await changed.wait()

    async def wait(self) -> None:
        await self.admitted.wait()


class Admission:
    def __init__(
        self,
        max_concurrency: int,
        max_queue: int,
        *,
        retry_after_s: float = 1.0,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        """`on_wait(seconds)` hears how long each admitted call waited in line (0 for none: metrics)."""
        self._on_wait = on_wait
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self._line: deque[Ticket] = deque()
        self._line_changed: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None

    @property
    def queued(self) -> int:
        return len(self._line)

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or self.queued > 0

    @property
    def line_changed(self) -> asyncio.Event:
        """Set (and replaced) whenever someone leaves the line, so waiters re-read their place."""
        if self._line_changed is None:
            self._line_changed = asyncio.Event()
        return self._line_changed

    def position_of(self, ticket: Ticket) -> int:
        return self._line.index(ticket) + 1

    async def wait_idle(self, timeout_s: float) -> bool:
        """Waits until no call runs or waits (graceful shutdown); False if `timeout_s` passed first."""
        if not self.busy:
            return True
        self._idle = self._idle or asyncio.Event()
        self._idle.clear()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    @asynccontextmanager
    async def ticket(self) -> AsyncIterator[Ticket]:
        """A place for one call: admitted at once when a slot is free, else in line (ResourceExhausted
        when the line is full). The body waits with `ticket.wait()` or `ticket.positions()` before
        working; leaving the block frees the slot or the place in line."""
        ticket = Ticket(self)
        if self.in_flight < self.max_concurrency and not self._line:
            self.in_flight += 1
            ticket.admitted.set()
            if self._on_wait is not None:
                self._on_wait(0.0)
        elif len(self._line) >= self.max_queue:
            raise ResourceExhausted(
                f"the server is busy: {self.in_flight} calls running and {len(self._line)} waiting "
                f"(limit {self.max_queue}); retry after {self.retry_after_s:g}s",
                retry_after_s=self.retry_after_s,
            )
        else:
            self._line.append(ticket)
        try:
            yield ticket
        finally:
            if ticket.admitted.is_set():
                self._release()
            else:
                self._line.remove(ticket)
                self._changed()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        """Waits for a free slot; yields the queue position the call had on arrival (0: none)."""
        async with self.ticket() as ticket:
            position = ticket.position
            await ticket.wait()
            yield position

    def _release(self) -> None:
        """Hands the slot to the first in line, or frees it."""
        if self._line:
            first = self._line.popleft()
            first.admitted.set()
            if self._on_wait is not None:
                self._on_wait(time.monotonic() - first.arrived)
            self._changed()
        else:
            self.in_flight -= 1
            if self._idle is not None and not self.busy:
                self._idle.set()

    def _changed(self) -> None:
        if self._line_changed is not None:
            self._line_changed.set()
            self._line_changed = None
        if self._idle is not None and not self.busy:
            self._idle.set()
