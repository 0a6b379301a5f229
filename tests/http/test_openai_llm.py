"""The OpenAI surface of the LLM through the real gateway, driven with the official `openai` SDK:
tool calling, logprobs, n, penalties and logit_bias, legacy completions, embeddings' 404."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "days", "unit"],
}
CLOCK = {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 6}}, "required": ["zone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "The forecast.", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "The time.", "parameters": CLOCK}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": CLOCK}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def sdk(mesh):
    with openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        yield client


def assert_valid_call(name: str, arguments: str) -> None:
    assert name in SCHEMAS
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


@pytest.mark.parametrize("parallel", [True, False])
def test_required_tool_choice_returns_calls_whose_arguments_validate(sdk, parallel):
    completion = sdk.chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=parallel,
        max_tokens=600, temperature=0.8, seed=11,
    )  # fmt: skip
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and (parallel or len(calls) == 1)
    assert len({c.id for c in calls}) == len(calls)
    for call in calls:
        assert call.type == "function"
        assert_valid_call(call.function.name, call.function.arguments)


def test_required_tool_choice_streams_openai_shaped_tool_call_deltas(sdk):
    chunks = list(
        sdk.chat.completions.create(
            model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=600, temperature=0,
            parallel_tool_calls=False, stream=True, stream_options={"include_usage": True},
        )
    )  # fmt: skip
    calls: dict[int, dict] = {}
    finishes = []
    for chunk in chunks:
        for choice in chunk.choices:
            assert not choice.delta.content
            for piece in choice.delta.tool_calls or []:
                if piece.id:  # a call's first piece: id, type and name
                    assert piece.index not in calls and piece.type == "function"
                    calls[piece.index] = {"name": piece.function.name, "arguments": ""}
                calls[piece.index]["arguments"] += piece.function.arguments or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert finishes == ["tool_calls"]
    assert calls and sorted(calls) == list(range(len(calls)))
    for call in calls.values():
        assert_valid_call(call["name"], call["arguments"])
    whole = sdk.chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=600, temperature=0,
        parallel_tool_calls=False,
    )  # fmt: skip
    # Greedy: the stream's calls are the whole answer's calls (ids aside).
    assert [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls] == [
        (c["name"], c["arguments"]) for c in calls.values()
    ]


def test_a_named_tool_is_the_one_called(sdk):
    completion = sdk.chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, max_tokens=100, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )  # fmt: skip
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_time"
    assert_valid_call("get_time", call.function.arguments)


def test_a_conversation_carries_tool_calls_and_tool_results(sdk):
    first = sdk.chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=600, temperature=0
    )
    calls = first.choices[0].message.tool_calls
    history = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},
        *({"role": "tool", "tool_call_id": c.id, "content": '{"forecast": "sunny"}'} for c in calls),
    ]
    answer = sdk.chat.completions.create(model="tiny", messages=history, tools=TOOLS, max_tokens=8, temperature=0)
    assert answer.choices[0].finish_reason in {"stop", "length", "tool_calls"}
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens  # the calls and results reached the prompt


def test_tool_choice_errors_name_the_field(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="tiny", messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    assert caught.value.body["param"] == "tool_choice.function"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="tiny", messages=ASK, tool_choice="required")
    assert caught.value.body["param"] == "tool_choice"
    bad = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "minProperties": "x"}}}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="tiny", messages=ASK, tools=bad, tool_choice="required")
    assert caught.value.body["param"] == "tools[0].parameters"


def test_logprobs_give_one_entry_per_token_with_alternatives(sdk):
    completion = sdk.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3
    )
    content = completion.choices[0].logprobs.content
    assert len(content) == completion.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-5)
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
    chunks = list(
        sdk.chat.completions.create(
            model="tiny", messages=ASK, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3, stream=True
        )
    )
    streamed = [e for c in chunks for ch in c.choices if ch.logprobs for e in ch.logprobs.content]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]


def test_n_returns_that_many_choices_sharing_one_prompt(sdk):
    completion = sdk.chat.completions.create(model="tiny", messages=ASK, max_tokens=6, n=2, temperature=1.0, seed=5)
    assert [c.index for c in completion.choices] == [0, 1]
    assert 2 <= completion.usage.completion_tokens <= 12  # both choices' tokens, the prompt once
    chunks = list(
        sdk.chat.completions.create(
            model="tiny", messages=ASK, max_tokens=6, n=2, temperature=1.0, seed=5, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    finished = sorted(ch.index for c in chunks for ch in c.choices if ch.finish_reason)
    assert finished == [0, 1]
    texts = ["".join(ch.delta.content or "" for c in chunks for ch in c.choices if ch.index == i) for i in (0, 1)]
    assert texts == [c.message.content for c in completion.choices]  # the same seed, the same two answers
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


def test_penalties_and_logit_bias_change_the_answer_for_a_fixed_seed(sdk):
    def answer(**options) -> str:
        return (
            sdk.chat.completions.create(model="tiny", messages=ASK, max_tokens=40, temperature=0, seed=3, **options)
            .choices[0]
            .message.content
        )

    plain = answer()
    assert answer() == plain
    assert answer(frequency_penalty=2.0) != plain
    assert answer(presence_penalty=2.0) != plain
    assert answer(extra_body={"repetition_penalty": 3.0}) != plain
    biased = sdk.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=5, temperature=0, logit_bias={"65": 100}, logprobs=True
    )
    tokens = {e.token for e in biased.choices[0].logprobs.content}
    assert len(tokens) == 1  # every step chose the biased token


def test_legacy_completions_answer_with_echo_and_logprobs(sdk, mesh):
    completion = sdk.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=2, echo=True
    )
    assert completion.object == "text_completion"
    choice = completion.choices[0]
    assert choice.text.startswith("Once upon a time")
    assert len(choice.logprobs.tokens) == completion.usage.completion_tokens
    assert all(len(alternatives) <= 2 for alternatives in choice.logprobs.top_logprobs)
    streamed = list(
        sdk.completions.create(model="tiny", prompt="Once upon a time", max_tokens=6, temperature=0, stream=True)
    )
    plain = sdk.completions.create(model="tiny", prompt="Once upon a time", max_tokens=6, temperature=0)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="tiny", prompt="x", suffix="tail")
    assert caught.value.body["param"] == "suffix"


def test_embeddings_say_that_no_embedding_capability_exists(mesh):
    response = httpx.post(f"{mesh.http_url}/v1/embeddings", json={"model": "x", "input": "hello"}, timeout=30)
    assert response.status_code == 404
    assert "no embedding capability" in response.json()["error"]["message"]
