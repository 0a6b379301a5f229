"""The LLM engine interface, its two calling styles, and the factory that picks an engine.

An engine accepts a request with `submit(request, cancel, sink)`: the call validates and queues the
request at once (raising InvalidArgument, NotFound or ResourceExhausted right there) and the engine
then delivers `TextDelta`s, then one `ChatResult` (or an exception) to the sink from its own thread.
This lets the transformers engine run every request in one scheduler thread (continuous batching)
instead of one worker thread per call. On top of `submit` every engine offers:

- `generate(request, cancel, emit) -> ChatResult`: the runtime's callback style, blocking;
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
from collections.abc import AsyncIterator, Callable

from capmesh.services.llm.config import LlmSettings
from capmesh.services.llm.domain import ChatEvent, ChatRequest, ChatResult, TextDelta
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.lifecycle import ModelManager

Delivery = ChatEvent | BaseException


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

    def generate(self, request: ChatRequest, cancel: CancelToken, emit: Callable[[object], None]) -> ChatResult:
        """Blocks until the answer is done, passing each TextDelta to `emit` as it arrives."""
        sink = QueueSink()
        submission = self.submit(request, cancel, sink)
        finished = False
        try:
            while True:
                item = sink.queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                if isinstance(item, ChatResult):
                    finished = True
                    return item
                emit(item)
        finally:
            if not finished:
                submission.abandon()

    async def stream(self, request: ChatRequest, cancel: CancelToken) -> AsyncIterator[ChatEvent]:
        """Yields TextDeltas, then the ChatResult.

        The first delta goes out at once; after that, deltas that arrive within
        `stream_interval_ms` of the previous one are joined into one. Each streamed message
        costs the server far more than a token of a small, fast model, so joining them keeps
        the stream from slowing the batch; tokens slower than the interval go out one by one.
        """
        interval = self.settings.stream_interval_ms / 1000
        loop = asyncio.get_running_loop()
        sink = AsyncSink(loop)
        submission = self.submit(request, cancel, sink)
        finished = False
        next_send = 0.0
        try:
            while True:
                item = await sink.queue.get()
                if isinstance(item, TextDelta):
                    wait = next_send - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    parts, tokens = [item.text], item.completion_tokens
                    ending: ChatResult | BaseException | None = None  # what followed the joined deltas
                    while not sink.queue.empty():
                        following = sink.queue.get_nowait()
                        if not isinstance(following, TextDelta):
                            ending = following
                            break
                        parts.append(following.text)
                        tokens = following.completion_tokens
                    yield TextDelta("".join(parts), tokens)
                    next_send = loop.time() + interval
                    if ending is None:
                        continue
                    item = ending
                finished = True
                if isinstance(item, BaseException):
                    raise item
                yield item
                return
        finally:
            if not finished:
                submission.abandon()


def make_engine(settings: LlmSettings) -> LlmEngine:
    """The engine the settings select."""
    if settings.engine == "openai":
        from capmesh.services.llm.openai_engine import OpenAIChatEngine

        return OpenAIChatEngine(settings)
    from capmesh.services.llm.batching import TransformersChatEngine

    return TransformersChatEngine(settings)
