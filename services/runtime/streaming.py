"""Runs blocking engine work in a worker thread and streams what it emits to an async handler.

An engine method has the shape `work(cancel: CancelToken, emit: Callable[[object], None]) -> result`.
`engine_events` runs it in the service's thread pool once a concurrency slot is free, yields every
emitted item as it arrives and then the returned result, and trips the cancel token when the caller
cancels, disconnects or runs out of deadline, so that the engine stops at its next step. The slot is
held until the engine has really stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc

from capmesh.services.runtime.admission import Admission
from capmesh.services.runtime.cancellation import CancelToken

R = TypeVar("R")
Emit = Callable[[Any], None]
EngineWork = Callable[[CancelToken, Emit], R]

_ITEM, _DONE, _FAILED = "item", "done", "failed"


def token_for(context: grpc.aio.ServicerContext | None) -> CancelToken:
    """A cancel token that trips itself when the call's deadline passes."""
    remaining = context.time_remaining() if context is not None else None
    return CancelToken.with_timeout(remaining)


async def engine_events(
    work: EngineWork,
    *,
    context: grpc.aio.ServicerContext | None,
    admission: Admission,
    executor: Executor | None,
    token: CancelToken | None = None,
) -> AsyncIterator[Any]:
    """Yields what `work` emits, then its result; raises what it raises."""
    token = token or token_for(context)
    async with admission.slot():
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def post(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop closed while the engine still ran: nobody listens
                pass

        def run() -> None:
            try:
                post(_DONE, work(token, lambda item: post(_ITEM, item)))
            except BaseException as exc:  # delivered to the handler, which maps it to a status
                post(_FAILED, exc)

        finished = False
        worker = loop.run_in_executor(executor, run)
        try:
            while True:
                kind, value = await queue.get()
                if kind == _ITEM:
                    yield value
                    continue
                finished = True
                if kind == _FAILED:
                    raise value
                yield value
                return
        finally:
            if not finished:
                token.cancel("cancelled by the caller")
            await asyncio.shield(worker)


async def engine_result(work: EngineWork[R], **kwargs: Any) -> R:
    """Runs `work` like engine_events and returns only its result (for unary RPCs)."""
    result = None
    async for item in engine_events(work, **kwargs):
        result = item
    return result
