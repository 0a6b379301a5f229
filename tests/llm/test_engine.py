"""The transformers engine on the tiny checkpoint: batching, streaming, cancellation, validation."""

from __future__ import annotations

import asyncio
import threading

import pytest

from capmesh.services.llm.batching import TransformersChatEngine
from capmesh.services.llm.domain import ChatMessage, ChatRequest, ChatResult, TextDelta
from capmesh.services.llm.engine import Sink
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import PROMPT_TOO_LONG, InvalidArgument, NotFound, ResourceExhausted


def greedy(prompt: str, max_tokens: int = 24, **kwargs) -> ChatRequest:
    return ChatRequest([ChatMessage("user", prompt)], temperature=0.0, max_tokens=max_tokens, **kwargs)


def run(engine, request: ChatRequest) -> tuple[list[str], ChatResult]:
    deltas: list[str] = []
    result = engine.generate(request, CancelToken.never(), lambda d: deltas.append(d.text))
    return deltas, result


async def collect(engine, request: ChatRequest, cancel: CancelToken | None = None) -> tuple[list[str], ChatResult]:
    deltas: list[str] = []
    async for event in engine.stream(request, cancel or CancelToken.never()):
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        elif isinstance(event, ChatResult):
            return deltas, event
    raise AssertionError("the stream ended without a result")


def test_greedy_answers_are_deterministic_and_deltas_join_to_the_text(engine):
    first_deltas, first = run(engine, greedy("Hello there", 30))
    second_deltas, second = run(engine, greedy("Hello there", 30))
    assert first == second
    assert "".join(first_deltas) == first.text == "".join(second_deltas)
    assert first.finish_reason == "length" and first.completion_tokens == 30
    assert first.prompt_tokens > 0


def test_streamed_deltas_match_the_tokenizer_decode_of_the_answer(engine, tiny_llm_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_path)
    request = greedy("Grüße 🙂 日本", 40)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Grüße 🙂 日本"}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    reference = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None)[0, ids.shape[1] :]
    deltas, result = run(engine, request)
    assert result.text == tokenizer.decode(reference, skip_special_tokens=True)
    assert "".join(deltas) == result.text
    assert all(not d.endswith("\ufffd") or d == deltas[-1] for d in deltas)


async def test_eight_concurrent_greedy_streams_each_equal_their_solo_answer(engine):
    prompts = [f"request {i}: " + "word " * (i * 3) for i in range(8)]
    lengths = [12 + 5 * i for i in range(8)]  # rows leave the batch at different steps
    solo = [run(engine, greedy(p, n))[1] for p, n in zip(prompts, lengths)]

    async def staggered(i: int):
        await asyncio.sleep(0.002 * i)  # rows also join while others are decoding
        return await collect(engine, greedy(prompts[i], lengths[i]))

    before = engine.stats().steps
    together = await asyncio.gather(*(staggered(i) for i in range(8)))
    for (deltas, result), alone in zip(together, solo):
        assert result == alone
        assert "".join(deltas) == alone.text
    assert engine.stats().steps - before < sum(lengths)  # the requests really shared steps


def test_seeded_sampling_repeats_and_respects_top_p(engine):
    request = ChatRequest([ChatMessage("user", "tell me")], temperature=1.3, top_p=0.9, max_tokens=20, seed=42)
    assert run(engine, request)[1] == run(engine, request)[1]
    other = ChatRequest([ChatMessage("user", "tell me")], temperature=1.3, top_p=0.9, max_tokens=20, seed=43)
    assert run(engine, other)[1].text != run(engine, request)[1].text


def test_stop_sequence_cuts_the_answer(engine):
    _, full = run(engine, greedy("stop test", 40))
    stop = full.text[10:13]
    cut_at = full.text.find(stop)
    deltas, result = run(engine, greedy("stop test", 40, stop=[stop]))
    assert result.finish_reason == "stop"
    assert result.text == full.text[:cut_at]
    assert "".join(deltas) == result.text


class CancelAfter(Sink):
    """Cancels the request from inside the engine once `count` deltas came out, and records state."""

    def __init__(self, engine: TransformersChatEngine, cancel: CancelToken, count: int) -> None:
        self.engine, self.cancel, self.count = engine, cancel, count
        self.tokens_at_cancel: int | None = None
        self.events: list[object] = []
        self.done = threading.Event()

    def deliver(self, item) -> None:
        self.events.append(item)
        if isinstance(item, TextDelta) and len(self.events) == self.count:
            self.tokens_at_cancel = self.engine.stats().tokens_generated
            self.cancel.cancel()
        if not isinstance(item, TextDelta):
            self.done.set()


def test_cancel_mid_stream_stops_generation_at_the_next_step(engine):
    cancel = CancelToken()
    sink = CancelAfter(engine, cancel, count=3)
    tokens_before = engine.stats().tokens_generated
    engine.submit(greedy("a long answer please", 400), cancel, sink)
    assert sink.done.wait(30)
    result = sink.events[-1]
    assert isinstance(result, ChatResult) and result.finish_reason == "cancelled"
    # Not one token was generated for the request after the cancel.
    assert engine.stats().tokens_generated == sink.tokens_at_cancel
    assert result.completion_tokens == sink.tokens_at_cancel - tokens_before < 400
    assert result.text == "".join(e.text for e in sink.events[:-1])
    assert engine.stats().running == 0


async def test_a_closed_stream_leaves_the_batch_and_frees_its_slot(engine):
    stream = engine.stream(greedy("never finished", 400), CancelToken.never())
    assert isinstance(await stream.__anext__(), TextDelta)
    await stream.aclose()
    _, other = await collect(engine, greedy("next one", 8))
    assert other.finish_reason == "length"
    stats = engine.stats()
    assert stats.running == 0 and stats.waiting == 0


async def test_a_full_queue_answers_resource_exhausted_with_a_retry_delay(llm_settings):
    from dataclasses import replace

    engine = TransformersChatEngine(replace(llm_settings, max_batch_size=1, max_waiting=1))
    try:
        first = engine.stream(greedy("one", 400), CancelToken.never())
        assert isinstance(await first.__anext__(), TextDelta)  # running
        second_result = asyncio.ensure_future(collect(engine, greedy("two", 4)))
        await asyncio.sleep(0)  # lets the second request reach the queue
        with pytest.raises(ResourceExhausted) as refused:
            await collect(engine, greedy("three", 4))
        assert refused.value.retry_after_s > 0
        await first.aclose()
        assert (await second_result)[1].finish_reason == "length"
    finally:
        engine.close()


def test_answer_stops_at_the_context_window(llm_settings):
    from dataclasses import replace

    engine = TransformersChatEngine(replace(llm_settings, max_context=48))
    try:
        _, result = run(engine, greedy("fill the window", 40))
        assert result.finish_reason == "length"
        assert result.prompt_tokens + result.completion_tokens == 48
        with pytest.raises(InvalidArgument) as too_long:
            run(engine, greedy("word " * 60, 4))
        assert [v.field for v in too_long.value.violations] == ["messages"]
        assert too_long.value.reason == PROMPT_TOO_LONG  # what DocGen reads to shorten its prompts
        with pytest.raises(InvalidArgument) as too_many:
            run(engine, greedy("hi", 48))
        assert [v.field for v in too_many.value.violations] == ["max_tokens"]
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (ChatRequest([]), ["messages"]),
        (ChatRequest([ChatMessage("user", "hi"), ChatMessage("robot", "x")]), ["messages[1].role"]),
        (ChatRequest([ChatMessage("system", "ok"), ChatMessage("user", "  ")]), ["messages[1].content"]),
        (ChatRequest([ChatMessage("user", "hi")], temperature=2.5), ["temperature"]),
        (ChatRequest([ChatMessage("user", "hi")], temperature=float("nan")), ["temperature"]),
        (ChatRequest([ChatMessage("user", "hi")], top_p=0.0), ["top_p"]),
        (ChatRequest([ChatMessage("user", "hi")], top_p=1.5), ["top_p"]),
        (ChatRequest([ChatMessage("user", "hi")], max_tokens=0), ["max_tokens"]),
        (ChatRequest([ChatMessage("user", "hi")], max_tokens=10_000), ["max_tokens"]),
        (ChatRequest([ChatMessage("user", "hi")], stop=["a", "b", "c", "d", "e"]), ["stop"]),
        (ChatRequest([ChatMessage("user", "hi")], stop=["a", ""]), ["stop[1]"]),
        (
            ChatRequest([ChatMessage("user", "")], temperature=-1, top_p=2),
            ["messages[0].content", "temperature", "top_p"],
        ),
    ],
)
def test_invalid_requests_name_every_bad_field(engine, request_, fields):
    with pytest.raises(InvalidArgument) as error:
        run(engine, request_)
    assert [v.field for v in error.value.violations] == fields


def test_unknown_model_is_not_found_and_lists_the_served_models(engine):
    with pytest.raises(NotFound) as error:
        run(engine, ChatRequest([ChatMessage("user", "hi")], model="gpt-5"))
    assert engine.model_name in str(error.value)


def test_model_status_reports_random_weights(engine):
    [status] = engine.models.status()
    assert status.name == "tiny" and status.random_weights and status.state.value == "loaded"
    assert status.details["context_window"] == "2048"
