"""Bounded concurrency with a bounded waiting queue: a full queue answers RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from capmesh.services.runtime.errors import ResourceExhausted


class Admission:
    def __init__(self, max_concurrency: int, max_queue: int, *, retry_after_s: float = 1.0) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.queued = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._idle: asyncio.Event | None = None

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or self.queued > 0

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
    async def slot(self) -> AsyncIterator[int]:
        """Waits for a free slot; yields the queue position the call had on arrival (0: none)."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        position = 0
        if self._semaphore.locked():
            if self.queued >= self.max_queue:
                raise ResourceExhausted(
                    f"the server is busy: {self.in_flight} calls running and {self.queued} waiting "
                    f"(limit {self.max_queue}); retry after {self.retry_after_s:g}s",
                    retry_after_s=self.retry_after_s,
                )
            position = self.queued + 1
        self.queued += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.queued -= 1
            if self._idle is not None and not self.busy:
                self._idle.set()
        self.in_flight += 1
        try:
            yield position
        finally:
            self.in_flight -= 1
            self._semaphore.release()
            if self._idle is not None and not self.busy:
                self._idle.set()
