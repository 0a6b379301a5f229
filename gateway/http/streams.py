"""Server-streaming calls as Server-Sent Events or newline-delimited JSON.

The response status is chosen only once the first message (or the error) is known, so that a
refused request gets its proper HTTP error (400 for invalid input, 429 with Retry-After when every
backend is busy and the route queue gives up) instead of `200` followed by an `event: error`. That
holds because every capability validates its request before it sends its first message (a call
then waiting in the service's own queue reports `queued`: it was accepted, so 200 is right). A
capability call is therefore awaited until its first message, however long the gateway's route
queue or a model load takes; the gateway's own streams (a job's events) may stay
quiet for a long time after a valid start, so for them the status is decided after a short wait.
Once the status is sent, an error travels as an `event: error`, and keep-alive comments flow while
the call is quiet. Closing the HTTP response (client gone) cancels the call, which cancels the
engine at its next step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import grpc

from capmesh.gateway.server.http.errors import HttpError, from_rpc_error

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
# How long the gateway's own streams may take to send a first message before the status is 200.
OWN_STREAM_FIRST_MESSAGE_WAIT_S = 1.0

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def wants_ndjson(accept: str) -> bool:
    return NDJSON in (accept or "") or "application/jsonl" in (accept or "")


class _Pump:
    """Pulls messages from a call one at a time, so a wait can time out without losing one."""

    def __init__(self, messages: AsyncGenerator[bytes, None]) -> None:
        self._messages = messages
        self._pending: asyncio.Future | None = None

    async def next(self, timeout: float | None):
        """("message", m) | ("end", None) | ("error", HttpError) | ("idle", None) after `timeout`."""
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._messages.__anext__())
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return "idle", None
        pending, self._pending = self._pending, None
        try:
            return "message", pending.result()
        except StopAsyncIteration:
            return "end", None
        except grpc.aio.AioRpcError as exc:
            return "error", from_rpc_error(exc)

    async def close(self) -> None:
        """Ends the call: a read in progress is cancelled (which ends the call), then the call is closed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
            await asyncio.wait({pending})
            if not pending.cancelled():
                pending.exception()  # retrieved: the stream is being dropped, its outcome no longer matters
        await self._messages.aclose()


async def start_stream(
    call: AsyncGenerator[bytes, None],
    encode_message: Callable[[bytes, int], bytes],
    encode_error: Callable[[HttpError], bytes],
    keepalive: bytes,
    keepalive_s: float,
    end: bytes = b"",
    first_message_wait_s: float | None = None,
) -> AsyncIterator[bytes]:
    """Waits for the first message, so that the HTTP status is decided before the first byte:
    raises the call's HttpError if it failed first, else returns a body that streams it.

    `encode_message(message, index)` renders one message (index counts from 1).
    `first_message_wait_s` bounds the wait (None: until the first message or the failure)."""
    pump = _Pump(call)
    kind, value = await pump.next(first_message_wait_s)
    if kind == "error":
        await pump.close()
        raise value

    async def body() -> AsyncIterator[bytes]:
        nonlocal kind, value
        index = 0
        try:
            while True:
                if kind == "message":
                    index += 1
                    yield encode_message(value, index)
                elif kind == "idle":
                    yield keepalive
                elif kind == "error":
                    yield encode_error(value)
                    return
                else:
                    if end:
                        yield end
                    return
                kind, value = await pump.next(keepalive_s)
        finally:
            await pump.close()

    return body()


def sse_event(data: object, *, event_id: str | int | None = None, event: str | None = None) -> bytes:
    lines = []
    if event_id is not None and event_id != "":
        lines.append(f"id: {event_id}")
    if event:
        lines.append(f"event: {event}")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


SSE_KEEPALIVE = b": keep-alive\n\n"
NDJSON_KEEPALIVE = b"\n"


def ndjson_line(data: object) -> bytes:
    return (json.dumps(data, separators=(",", ":")) + "\n").encode()
