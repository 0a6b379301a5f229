"""What a servicer needs from the server around it: one `Runtime` per service, made before the servicer.

A blocking engine method has the shape `work(*args, cancel: CancelToken, emit: Callable[[object], None])
-> result`. `Runtime.events(context, work, *args)` runs it in the service's thread pool once a
concurrency slot is free, yields every emitted item as it arrives and then the returned result, and
trips the cancel token when the caller cancels, disconnects or runs out of deadline, so that the
engine stops at its next step. The slot is held until the engine has really stopped. While the call
waits for a slot it yields a `queued` ProgressUpdate with its `queue_position` at each change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import grpc

from capmesh.common.v1 import artifact_pb2
from capmesh.services.runtime import metrics
from capmesh.services.runtime.admission import Admission, Ticket, queued_update
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.gateway_files import GatewayFiles
from capmesh.services.runtime.protoconv import ArtifactResolver
from capmesh.services.runtime.settings import ServerSettings

R = TypeVar("R")
Emit = Callable[[Any], None]

_ITEM, _DONE, _FAILED = "item", "done", "failed"


def token_for(context: grpc.aio.ServicerContext | None) -> CancelToken:
    """A cancel token that trips itself when the call's deadline passes."""
    remaining = context.time_remaining() if context is not None else None
    return CancelToken.with_timeout(remaining)


class Runtime:
    """Admission (bounded concurrency and queue), the worker threads that run blocking engine work,
    and reading the artifacts a request references, for one capability's servicers."""

    def __init__(self, capability: str, settings: ServerSettings) -> None:
        self.capability = capability
        self.settings = settings
        self.admission = Admission(
            settings.max_concurrency,
            settings.max_queue,
            on_wait=metrics.queue_wait_seconds.labels(capability).observe if settings.metrics_port >= 0 else None,
        )
        self.executor = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix=f"capmesh-{capability}")
        # File ids are read from the gateway's file service; without a gateway only inline data works.
        self._files = GatewayFiles(settings) if settings.gateway else None
        self._artifacts = ArtifactResolver(self._files.fetch if self._files else None)

    def slot(self) -> AbstractAsyncContextManager[int]:
        """An admission slot, for calls whose engine runs its own threads (no worker thread needed)."""
        return self.admission.slot()

    def ticket(self) -> AbstractAsyncContextManager[Ticket]:
        """A place in the admission line, for servicers that report `queued` themselves and then do
        more than one engine call under the slot (`events(..., admitted=True)`)."""
        return self.admission.ticket()

    async def read_artifact(self, artifact: artifact_pb2.Artifact, field: str) -> bytes:
        """The artifact's bytes (inline, or a file id read from the gateway); InvalidArgument names `field`."""
        return await self._artifacts.read(artifact, field)

    async def events(
        self, context: grpc.aio.ServicerContext | None, work: Callable[..., Any], *args: Any, admitted: bool = False
    ) -> AsyncGenerator[Any, None]:
        """Yields what `work(*args, cancel, emit)` emits, then its result; raises what it raises.

        Waiting for a slot first yields `queued` updates; `admitted=True` means the caller already
        holds one (`ticket`)."""
        # aclosing: when the caller stops reading (a cancel closes this generator at a `yield`), the
        # engine's token trips and its slot is freed now, not when the inner generator is collected.
        if admitted:
            async with contextlib.aclosing(self._run(context, work, *args)) as items:
                async for item in items:
                    yield item
            return
        async with self.admission.ticket() as ticket:
            async for position in ticket.positions():
                yield queued_update(position)
            async with contextlib.aclosing(self._run(context, work, *args)) as items:
                async for item in items:
                    yield item

    async def _run(
        self, context: grpc.aio.ServicerContext | None, work: Callable[..., Any], *args: Any
    ) -> AsyncGenerator[Any, None]:
        """Runs `work` in a worker thread (under a slot the caller holds), yielding its events."""
        token = token_for(context)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def post(kind: str, value: Any) -> None:
            # RuntimeError: the loop closed while the engine still ran, so nobody listens.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def run() -> None:
            try:
                post(_DONE, work(*args, token, lambda item: post(_ITEM, item)))
            except BaseException as exc:  # delivered to the handler, which maps it to a status
                post(_FAILED, exc)

        finished = False
        worker = loop.run_in_executor(self.executor, run)
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

    async def result(self, context: grpc.aio.ServicerContext | None, work: Callable[..., R], *args: Any) -> R:
        """Runs `work(*args, cancel, emit)` like `events` and returns only its result (for unary RPCs)."""
        result = None
        async for item in self.events(context, work, *args):
            result = item
        return result  # type: ignore[return-value]  # the last item is the result

    async def close(self) -> None:
        """Takes no more engine work (without waiting for threads still running) and closes the gateway channel."""
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self._files is not None:
            await self._files.close()
