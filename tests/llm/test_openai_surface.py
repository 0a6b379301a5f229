"""The engine side of the OpenAI surface, without gRPC: tool calls, logprobs, penalties, n, raw
prompts and the `queued` progress, on the tiny checkpoint (random weights: shapes, determinism and
validity are asserted, never content)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import jsonschema
import pytest
import torch

from capmesh.services.llm.batching import TransformersChatEngine
from capmesh.services.llm.config import LlmSettings
from capmesh.services.llm.domain import ChatMessage, ChatRequest, ChatResult, Queued, TextDelta, Tool, ToolChoice
from capmesh.services.llm.openai_engine import OpenAIChatEngine
from capmesh.services.llm.tools import ConstrainedCalls, TaggedCalls
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import InvalidArgument

ARGS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
}
TOOLS = [Tool("get_weather", "The forecast.", json.dumps(ARGS)), Tool("ping", "No arguments.")]
ASK = [ChatMessage("user", "weather?")]


def solo(engine, request: ChatRequest) -> ChatResult:
    return engine.generate(request, CancelToken.never(), lambda delta: None)


async def events(engine, request: ChatRequest) -> list:
    return [event async for event in engine.stream(request, CancelToken.never())]


def test_required_tools_answer_calls_whose_arguments_validate(engine):
    for parallel in (True, False):
        request = ChatRequest(
            ASK, temperature=0.9, seed=4, max_tokens=400, tools=TOOLS, tool_choice=ToolChoice("required"),
            parallel_tool_calls=parallel,
        )  # fmt: skip
        result = solo(engine, request)
        assert result.finish_reason == "tool_calls" and result.text == ""
        assert result.tool_calls and (parallel or len(result.tool_calls) == 1)
        for call in result.tool_calls:
            assert call.id.startswith("call_")
            jsonschema.validate(json.loads(call.arguments), ARGS if call.name == "get_weather" else {"type": "object"})


async def test_streamed_tool_call_deltas_join_to_the_result(engine):
    request = ChatRequest(
        ASK, temperature=0, max_tokens=200, tools=TOOLS, tool_choice=ToolChoice("function", "get_weather")
    )
    streamed = await events(engine, request)
    result = streamed[-1]
    pieces = [piece for event in streamed if isinstance(event, TextDelta) for piece in event.tool_calls]
    assert pieces[0].id == result.tool_calls[0].id and pieces[0].name == "get_weather"
    assert "".join(p.arguments for p in pieces) == result.tool_calls[0].arguments
    jsonschema.validate(json.loads(result.tool_calls[0].arguments), ARGS)


def test_tool_choice_none_and_auto_answer_text(engine):
    plain = solo(engine, ChatRequest(ASK, temperature=0, max_tokens=6))
    none = solo(engine, ChatRequest(ASK, temperature=0, max_tokens=6, tools=TOOLS, tool_choice=ToolChoice("none")))
    assert none.text == plain.text and none.prompt_tokens == plain.prompt_tokens  # the tools were not shown
    auto = solo(engine, ChatRequest(ASK, temperature=0, max_tokens=6, tools=TOOLS))
    assert auto.prompt_tokens > plain.prompt_tokens  # the template's tool format shows them to the model


def test_constrained_call_parser_gives_the_same_calls_whatever_the_chunking():
    text = '[{"name": "get_weather", "arguments": {"city": "a}\\"b{", "days": 2}}, {"name": "ping", "arguments": {}}]'
    for size in (1, 3, len(text)):
        parser = ConstrainedCalls()
        for start in range(0, len(text), size):
            parser.feed(text[start : start + size])
        calls = parser.result()
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("get_weather", {"city": 'a}"b{', "days": 2}),
            ("ping", {}),
        ]


def test_tagged_call_parser_splits_text_from_calls_and_holds_partial_tags():
    parser = TaggedCalls()
    shown, calls = parser.feed("Sure. <tool_")
    assert shown == "Sure. " and not calls
    shown, calls = parser.feed('call>{"name": "ping", "arguments": {"x": 1}}</tool_call> done <tool_call>oops')
    assert shown == " done " and [(c.name, c.arguments) for c in calls] == [("ping", '{"x": 1}')]
    assert parser.flush() == "<tool_call>oops"  # an unclosed tag is shown as written


def test_logprobs_are_those_of_a_plain_forward(engine, tiny_llm_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = solo(
        engine, ChatRequest([], temperature=0, max_tokens=8, prompt="The quick brown", logprobs=True, top_logprobs=4)
    )
    assert len(result.logprobs) == result.completion_tokens
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_path).eval()
    ids = tokenizer("The quick brown", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        generated = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None)[0]
        logprobs = torch.log_softmax(model(generated.unsqueeze(0)).logits[0].float(), dim=-1)
    for step, entry in enumerate(result.logprobs):
        token = int(generated[len(ids) + step])
        assert entry.logprob == pytest.approx(float(logprobs[len(ids) + step - 1, token]), abs=1e-3)
        assert len(entry.top) == 4 and entry.top[0].logprob == pytest.approx(entry.logprob, abs=1e-5)


def test_logprob_bytes_rebuild_the_answer_even_through_split_characters(engine):
    # Characters outside the tiny vocabulary are split into byte tokens: each entry's bytes are
    # its true bytes, so joined they decode to the answer.
    result = solo(engine, ChatRequest([], temperature=0.8, seed=9, max_tokens=40, prompt="日本 🙂 ✨", logprobs=True))
    joined = b"".join(entry.bytes for entry in result.logprobs)
    if result.finish_reason == "stop":  # the end-of-answer token is a special token with no bytes of the text
        joined = b"".join(entry.bytes for entry in result.logprobs[:-1])
    assert joined.decode("utf-8", errors="replace") == result.text


def test_n_choices_are_the_answers_of_solo_requests_with_consecutive_seeds(engine):
    request = ChatRequest(ASK, temperature=1.2, max_tokens=10, seed=21, n=3)
    streamed = asyncio.run(events(engine, request))
    results = sorted((e for e in streamed if isinstance(e, ChatResult)), key=lambda r: r.index)
    assert [r.index for r in results] == [0, 1, 2]
    for result in results:
        alone = solo(engine, replace(request, n=1, seed=21 + result.index))
        assert result.text == alone.text
        joined = "".join(e.text for e in streamed if isinstance(e, TextDelta) and e.index == result.index)
        assert joined == result.text


async def test_penalties_in_a_batch_equal_penalties_alone(engine):
    penalised = ChatRequest(ASK, temperature=0, max_tokens=24, frequency_penalty=1.5, presence_penalty=0.5)
    repeated = ChatRequest(ASK, temperature=0, max_tokens=24, repetition_penalty=2.0, logit_bias={7: 5.0})
    alone = [solo(engine, penalised), solo(engine, repeated)]
    batched = await asyncio.gather(
        *(events(engine, r) for r in (penalised, repeated, ChatRequest(ASK, temperature=0, max_tokens=24)))
    )
    assert [b[-1].text for b in batched[:2]] == [a.text for a in alone]
    assert alone[0].text != batched[2][-1].text  # and they did change the answer


async def test_a_request_waiting_for_a_slot_hears_its_queue_position(llm_settings):
    engine = TransformersChatEngine(replace(llm_settings, max_batch_size=1, max_waiting=4))
    try:
        first = engine.stream(ChatRequest(ASK, temperature=0, max_tokens=300), CancelToken.never())
        assert isinstance(await first.__anext__(), TextDelta)  # running: the batch is full
        second = engine.stream(ChatRequest(ASK, temperature=0, max_tokens=2), CancelToken.never())
        third = engine.stream(ChatRequest(ASK, temperature=0, max_tokens=2), CancelToken.never())
        assert await second.__anext__() == Queued(0)
        assert await third.__anext__() == Queued(1)
        await first.aclose()  # the second takes the slot: the third moves up
        assert await third.__anext__() == Queued(0)
        rest = [event async for event in third]
        assert isinstance(rest[-1], ChatResult)
        assert isinstance([event async for event in second][-1], ChatResult)
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": float("nan")}, "frequency_penalty"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"logit_bias": {5: 101.0}}, "logit_bias[5]"),
        ({"min_p": 1.5}, "min_p"),
        ({"top_k": -1}, "top_k"),
        ({"n": 0}, "n"),
        ({"tool_choice": ToolChoice("required")}, "tool_choice"),
        ({"tools": [Tool("bad name")]}, "tools[0].name"),
        ({"tools": [Tool("f", parameters="[1]")]}, "tools[0].parameters"),
        ({"tools": TOOLS, "tool_choice": ToolChoice("function", "nope")}, "tool_choice.function"),
        ({"prompt": "raw"}, "messages"),
    ],
)
def test_bad_values_name_their_field(engine, changes, field):
    with pytest.raises(InvalidArgument) as refused:
        solo(engine, replace(ChatRequest(ASK, max_tokens=2), **changes))
    assert field in [v.field for v in refused.value.violations]


def test_a_logit_bias_outside_the_vocabulary_names_the_token(engine):
    with pytest.raises(InvalidArgument) as refused:
        solo(engine, ChatRequest(ASK, max_tokens=2, logit_bias={10**6: 1.0}))
    assert refused.value.violations[0].field == f"logit_bias[{10**6}]"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tools": TOOLS}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"n": 2}, "n"),
        ({"top_k": 5}, "top_k"),
        ({"messages": [ChatMessage("tool", "42", tool_call_id="c1")]}, "messages"),
    ],
)
def test_the_openai_engine_refuses_what_it_cannot_carry(changes, field):
    engine = OpenAIChatEngine(LlmSettings(engine="openai", openai_api_key="k", log_json=False))
    try:
        with pytest.raises(InvalidArgument) as refused:
            engine.submit(replace(ChatRequest(ASK), **changes), CancelToken.never(), None)  # type: ignore[arg-type]
        assert [v.field for v in refused.value.violations] == [field]
    finally:
        engine.close()
