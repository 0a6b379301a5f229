"""The LLM engine interface, its two calling styles, and the factory that picks an engine.

An engine accepts a request with `submit(request, cancel, sink)`: the call validates and queues the
request at once (raising InvalidArgument, NotFound or ResourceExhausted right there) and the engine
then delivers `TextDelta`s, then one `ChatResult` per choice (`request.n` of them; or an exception)
to the sink from its own thread, maybe preceded by `Queued` while the request waits for a slot.
This lets the transformers engine run every request in one scheduler thread (continuous batching)
instead of one worker thread per call. On top of `submit` every engine offers:

- `generate(request, cancel, emit) -> ChatResult`: the runtime's callback style, blocking (the
  result of the last choice to finish; every delta goes to `emit`);
- `stream(request, cancel)`: an async iterator for the gRPC servicer.

Leaving either early (an exception in `emit`, a closed async iterator) abandons the request, which
leaves the batch at the next decoding step.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable

import structlog

from capmesh.services.llm.config import LlmSettings
from capmesh.services.llm.domain import ChatEvent, ChatRequest, ChatResult, TextDelta, ToolCallDelta
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.lifecycle import ModelManager

Delivery = ChatEvent | BaseException

log = structlog.get_logger("capmesh.llm")


class Sink(abc.ABC):
    """Where an engine thread delivers a request's events; must be cheap and never block."""

    @abc.abstractmethod
    def deliver(self, item: Delivery) -> None: ...


class QueueSink(Sink):
    """For a blocking consumer thread."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Delivery] = queue.SimpleQueue()

    def deliver(self, item: Delivery) -> None:
        self.queue.put(item)


class AsyncSink(Sink):
    """For a consumer on an asyncio event loop; hands items over thread-safely."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()

    def deliver(self, item: Delivery) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class Outbox:
    """Collects one engine step's deliveries; flushed once the step's bookkeeping is done.

    Consumers thus see the engine's state (running rows, counters) as of the end of the step, and
    each event loop is woken once per step.

    Waking a loop costs a system call and a GIL hand-over; with many streams on one loop, one
    wake-up per step instead of one per stream keeps the scheduler thread decoding.
    """

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Delivery]]] = {}
        self._other: list[tuple[Sink, Delivery]] = []

    def deliver(self, sink: Sink, item: Delivery) -> None:
        if isinstance(sink, AsyncSink):
            self._by_loop.setdefault(sink.loop, []).append((sink.queue, item))
        else:
            self._other.append((sink, item))

    def flush(self) -> None:
        batches, self._by_loop = self._by_loop, {}
        others, self._other = self._other, []
        for sink, item in others:
            sink.deliver(item)
        for loop, items in batches.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening any more
                loop.call_soon_threadsafe(_put_all, items)


def _put_all(items: list[tuple[asyncio.Queue, Delivery]]) -> None:
    for target, item in items:
        target.put_nowait(item)


class Submission:
    """A queued request; `abandon()` tells the engine that nobody waits for it any more."""

    def __init__(self) -> None:
        self._abandoned = threading.Event()
        self.on_abandon: Callable[[], None] | None = None

    @property
    def abandoned(self) -> bool:
        return self._abandoned.is_set()

    def abandon(self) -> None:
        if not self._abandoned.is_set():
            self._abandoned.set()
            if self.on_abandon is not None:
                self.on_abandon()


class LlmEngine(abc.ABC):
    """A chat engine; see the module docstring for the calling styles."""

    name: str
    models: ModelManager
    settings: LlmSettings

    @abc.abstractmethod
    def submit(self, request: ChatRequest, cancel: CancelToken, sink: Sink) -> Submission:
        """Validates and queues the request; events then go to `sink` from an engine thread."""

    def close(self) -> None:
        self.models.close()

    def log_finished(self, result: ChatResult, started: float) -> None:
        """The one log line of a finished choice, alike for every engine; `started` is time.monotonic()."""
        log.info(
            "llm.request_finished",
            engine=self.name,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            seconds=round(time.monotonic() - started, 4),
        )

    def generate(self, request: ChatRequest, cancel: CancelToken, emit: Callable[[object], None]) -> ChatResult:
        """Blocks until every choice is done, passing each TextDelta to `emit` as it arrives."""
        sink = QueueSink()
        submission = self.submit(request, cancel, sink)
        finished = False
        results = 0
        try:
            while True:
                item = sink.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if isinstance(item, ChatResult):
                    results += 1
                    if results == request.n:
                        finished = True
                        return item
                elif isinstance(item, TextDelta):
                    emit(item)
        finally:
            if not finished:
                submission.abandon()

    async def stream(self, request: ChatRequest, cancel: CancelToken) -> AsyncIterator[ChatEvent]:
        """Yields `Queued` while waiting, TextDeltas, then one ChatResult per choice.

        The first delta goes out at once; after that, deltas that arrive within
        `stream_interval_ms` of the previous one are joined into one (per choice). Each streamed
        message costs the server far more than a token of a small, fast model, so joining them
        keeps the stream from slowing the batch; tokens slower than the interval go out one by one.
        """
        interval = self.settings.stream_interval_ms / 1000
        loop = asyncio.get_running_loop()
        sink = AsyncSink(loop)
        submission = self.submit(request, cancel, sink)
        results = 0
        next_send = 0.0
        try:
            while results < request.n:
                items = [await sink.queue.get()]
                if isinstance(items[0], TextDelta):
                    wait = next_send - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    while not sink.queue.empty():
                        items.append(sink.queue.get_nowait())
                    next_send = loop.time() + interval
                for item in _joined(items):
                    if isinstance(item, BaseException):
                        results = request.n
                        raise item
                    if isinstance(item, ChatResult):
                        results += 1
                    yield item
        finally:
            if results < request.n:
                submission.abandon()


def _joined(items: list[Delivery]) -> list[Delivery]:
    """Joins runs of TextDeltas of the same choice into one delta; keeps everything else in order."""
    out: list[Delivery] = []
    for item in items:
        last = out[-1] if out else None
        if isinstance(item, TextDelta) and isinstance(last, TextDelta) and last.index == item.index:
            out[-1] = TextDelta(
                last.text + item.text,
                item.completion_tokens,
                item.index,
                last.logprobs + item.logprobs,
                _joined_calls(last.tool_calls + item.tool_calls),
            )
        else:
            out.append(item)
    return out


def _joined_calls(calls: tuple[ToolCallDelta, ...]) -> tuple[ToolCallDelta, ...]:
    """Merges consecutive pieces of the same tool call (its id and name stay in its first piece)."""
    out: list[ToolCallDelta] = []
    for call in calls:
        if out and out[-1].index == call.index and not call.id:
            last = out[-1]
            out[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + call.arguments)
        else:
            out.append(call)
    return tuple(out)


def make_engine(settings: LlmSettings) -> LlmEngine:
    """The engine the settings select."""
    if settings.engine == "openai":
        from capmesh.services.llm.openai_engine import OpenAIChatEngine

        return OpenAIChatEngine(settings)
    from capmesh.services.llm.batching import TransformersChatEngine

    return TransformersChatEngine(settings)
