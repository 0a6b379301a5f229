"""ReadAhead: every message in order, a failure after the messages before it, a bounded buffer,
timeouts that lose nothing, and closing that cancels the read in progress (no gRPC needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from capmesh.gateway.server.routing.readahead import ReadAhead


class Source:
    """An async generator of `count` messages that records how far it read and whether it was closed."""

    def __init__(self, count: int, fail: bool = False, gate: asyncio.Event | None = None) -> None:
        self.count, self.fail, self.gate = count, fail, gate
        self.read = 0
        self.closed = False

    async def messages(self) -> AsyncIterator[int]:
        try:
            for n in range(self.count):
                if self.gate is not None:
                    await self.gate.wait()
                self.read += 1
                yield n
            if self.fail:
                raise RuntimeError("the source failed")
        finally:
            self.closed = True


async def test_every_message_in_order_then_the_end_with_a_bounded_buffer():
    source = Source(50)
    ahead = ReadAhead(source.messages(), limit=4)
    seen = []
    async for message in ahead:
        assert source.read - len(seen) <= 4 + 1  # the buffer, and the one being taken
        seen.append(message)
    assert seen == list(range(50))
    await ahead.aclose()
    assert source.closed


async def test_a_failure_comes_after_the_messages_read_before_it():
    ahead = ReadAhead(Source(3, fail=True).messages())
    seen = []
    with pytest.raises(RuntimeError, match="the source failed"):
        async for message in ahead:
            seen.append(message)
    assert seen == [0, 1, 2]
    await ahead.aclose()


async def test_a_timeout_loses_nothing_and_drain_takes_all_that_is_there():
    gate = asyncio.Event()
    ahead = ReadAhead(Source(3, gate=gate).messages())
    assert await ahead.wait(0.01) is False  # nothing yet: idle, the read goes on
    gate.set()
    assert await ahead.wait(None) is True
    while ahead.ready() < 3:  # the reader runs on its own
        await asyncio.sleep(0)
    assert ahead.drain() == [0, 1, 2]
    assert await ahead.wait(0) is True  # only the end is left
    with pytest.raises(StopAsyncIteration):
        ahead.take()
    await ahead.aclose()


async def test_closing_cancels_the_read_in_progress_and_closes_the_source():
    gate = asyncio.Event()  # never set: the read waits forever
    source = Source(3, gate=gate)
    ahead = ReadAhead(source.messages())
    assert await ahead.wait(0.01) is False
    await ahead.aclose()
    assert source.closed and source.read == 0


async def test_one_dropped_without_closing_stops_its_reader_and_the_source():
    gate = asyncio.Event()  # never set: the read waits forever
    source = Source(3, gate=gate)
    ahead = ReadAhead(source.messages())
    assert await ahead.wait(0.01) is False
    reader = ahead._reader
    del ahead  # e.g. an HTTP body that never started
    assert reader is not None
    await asyncio.wait({reader})
    assert reader.cancelled() and source.closed
