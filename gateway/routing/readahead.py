"""Reading a stream ahead of whoever relays it: one task per stream, none per message.

Relaying one stream message costs the gateway two operations: reading it from one side (a gRPC read
from the backend) and writing it to the other (a gRPC write to the caller, an HTTP chunk). Each
is a round trip through gRPC's poller thread or the event loop, so done one after the other, a
stream's rate is bounded by the sum of both. `ReadAhead` runs the reading side in one task of its
own, started at the first read: the next read is under way while the last message is written,
and messages that arrive meanwhile wait in a small buffer, which the writer may take all at once
(SSE joins them into one chunk). The buffer is bounded, so a slow caller slows the reader rather
than filling the gateway's memory. While messages keep coming, taking one is a deque pop: the
only waits are for a message not read yet, and for room in a full buffer.

The owner should `aclose()` it (cancels the read in progress, which cancels the call, then closes
the source); a failure of the source is raised to the consumer after the messages read before it.
The reading task holds no reference to the `ReadAhead` itself, so one dropped without closing (an
HTTP response whose body never started) cancels its reader when it is freed, rather than leaving
a call, and the backend slot it holds, waiting forever for room in its buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterable
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_LIMIT = 16  # messages read ahead at most: deep enough to keep both sides busy


class _Buffer(Generic[T]):
    """What the reader and the consumer share."""

    __slots__ = ("end", "limit", "messages", "room", "waiter")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.messages: deque[T] = deque()
        self.end: BaseException | None = None  # StopAsyncIteration, or the source's failure
        self.waiter: asyncio.Future[None] | None = None  # the consumer's, while nothing is there
        self.room: asyncio.Future[None] | None = None  # the reader's, while the buffer is full

    def wake_consumer(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def make_room(self) -> None:
        room = self.room
        if room is not None:
            self.room = None
            room.set_result(None)


async def _fill(source: AsyncIterable[T], buffer: _Buffer[T]) -> None:
    """The reader: the source's messages into the buffer, waiting while it is full."""
    try:
        async for message in source:
            buffer.messages.append(message)
            buffer.wake_consumer()
            if len(buffer.messages) >= buffer.limit:
                buffer.room = asyncio.get_running_loop().create_future()
                await buffer.room
        buffer.end = StopAsyncIteration()
    except Exception as exc:  # the consumer's to see, after the messages before it
        buffer.end = exc
    buffer.wake_consumer()


class ReadAhead(Generic[T]):
    """An async iterator over `source` whose reading runs in a task of its own (see the module)."""

    def __init__(self, source: AsyncIterable[T], limit: int = DEFAULT_LIMIT) -> None:
        self._source = source
        self._buffer: _Buffer[T] = _Buffer(limit)
        self._reader: asyncio.Task[None] | None = None

    def __aiter__(self) -> ReadAhead[T]:
        return self

    async def __anext__(self) -> T:
        buffer = self._buffer
        if not buffer.messages and buffer.end is None:
            await self.wait(None)
        return self.take()

    def take(self) -> T:
        """The next message read; raises the end (StopAsyncIteration, or the source's failure) once
        every message before it was taken. Only after `wait` said one is there."""
        buffer = self._buffer
        if not buffer.messages:
            assert buffer.end is not None, "take() before wait() said a message is there"
            raise buffer.end
        message = buffer.messages.popleft()
        buffer.make_room()
        return message

    def drain(self) -> list[T]:
        """Every message read and not taken yet (none: only the end is left, or nothing is there)."""
        buffer = self._buffer
        messages = list(buffer.messages)
        buffer.messages.clear()
        buffer.make_room()
        return messages

    def ready(self) -> int:
        """How many messages can be taken now without waiting."""
        return len(self._buffer.messages)

    async def wait(self, timeout: float | None) -> bool:
        """True once a message or the end is there (at once if one is); False when `timeout`
        seconds passed first (None: no limit). Nothing is lost to a timeout: the read goes on."""
        buffer = self._buffer
        if buffer.messages or buffer.end is not None:
            return True
        loop = asyncio.get_running_loop()
        if self._reader is None:
            self._reader = loop.create_task(_fill(self._source, buffer))
        waiter = buffer.waiter = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            return False
        finally:
            buffer.waiter = None
        return True

    async def aclose(self) -> None:
        """Stops reading: a read in progress is cancelled (which ends a call), then the source is closed."""
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait({reader})
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()

    def __del__(self) -> None:
        # Dropped without aclose(): stop the reader, whose cancellation ends the call it reads.
        reader = self._reader
        if reader is not None and not reader.done():
            with contextlib.suppress(RuntimeError):  # the event loop is already closed
                reader.cancel()
