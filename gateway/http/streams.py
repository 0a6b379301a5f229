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

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import grpc

from capmesh.gateway.server.http.errors import HttpError, from_rpc_error
from capmesh.gateway.server.routing.readahead import ReadAhead

SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
# How long the gateway's own streams may take to send a first message before the status is 200.
OWN_STREAM_FIRST_MESSAGE_WAIT_S = 1.0

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def wants_ndjson(accept: str) -> bool:
    return NDJSON in (accept or "") or "application/jsonl" in (accept or "")


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
    `first_message_wait_s` bounds the wait (None: until the first message or the failure).

    The call is read ahead in one task of its own (`ReadAhead`), so no task is made and nothing
    is awaited per message but the message itself; the messages that came while the last chunk
    was being sent go out together as one chunk, and only a quiet call waits for the keep-alive."""
    messages = ReadAhead(call)
    try:
        quiet = not await messages.wait(first_message_wait_s)
        if not quiet and not messages.ready():
            messages.take()  # no message came first: the end or a failure did, raised here
    except grpc.aio.AioRpcError as exc:
        await messages.aclose()
        raise from_rpc_error(exc) from None
    except StopAsyncIteration:
        pass  # an empty stream: the body sends just the end
    except BaseException:
        await messages.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        index = 0
        try:
            if quiet:  # the status is decided: say so at once, before the first message
                yield keepalive
            while True:
                if not await messages.wait(keepalive_s):
                    yield keepalive
                    continue
                batch = messages.drain()
                if batch:
                    yield b"".join(encode_message(message, index + n) for n, message in enumerate(batch, 1))
                    index += len(batch)
                    continue
                try:
                    messages.take()  # only the end is left: raised here
                except StopAsyncIteration:
                    if end:
                        yield end
                    return
                except grpc.aio.AioRpcError as exc:
                    yield encode_error(from_rpc_error(exc))
                    return
        finally:
            await messages.aclose()

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
