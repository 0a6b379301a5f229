"""Structured output: constrained decoding makes even the random-weight tiny model answer in the
requested format (JSON Schema, any JSON object, regex, grammar), alone and inside a batch."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest

from capmesh.services.llm.constraints import Grammars
from capmesh.services.llm.domain import ChatMessage, ChatRequest, ChatResult, ResponseFormat
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import InvalidArgument
from tests.llm.test_engine import collect, run

# The docgen outline's shape: a title and at least two sections, each with a title and a summary.
# Strings and arrays are bounded: nothing else makes a random model close them (see constraints.py).
OUTLINE_SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 24},
        "sections": {
            "type": "array",
            "minItems": 2,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 16},
                    "summary": {"type": "string", "maxLength": 24},
                },
                "required": ["title", "summary"],
            },
        },
    },
    "required": ["title", "sections"],
}
RECORD_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "kind": {"enum": ["a", "b"]},
    },
    "required": ["name", "age", "ok", "tags", "kind"],
}
PROMPTS = ["Write an outline about rivers", "hello", "Grüße 🙂 日本", "A JSON answer please"]
# Enough for every bounded schema above to close even when each character is several byte tokens.
MAX_TOKENS = 900


def constrained(prompt: str, fmt: ResponseFormat, max_tokens: int = MAX_TOKENS, **kwargs) -> ChatRequest:
    kwargs.setdefault("temperature", 0.0)
    return ChatRequest([ChatMessage("user", prompt)], max_tokens=max_tokens, response_format=fmt, **kwargs)


def schema(value: dict) -> ResponseFormat:
    return ResponseFormat("json_schema", json.dumps(value))


@pytest.mark.parametrize("value", [OUTLINE_SCHEMA, RECORD_SCHEMA], ids=["outline", "record"])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_answers_are_json_valid_against_the_schema(engine, value, prompt):
    deltas, result = run(engine, constrained(prompt, schema(value)))
    assert result.finish_reason == "stop"
    assert "".join(deltas) == result.text
    jsonschema.validate(json.loads(result.text), value)


def test_sampled_answers_are_valid_too(engine):
    for seed in range(3):
        _, result = run(engine, constrained("tell me", schema(OUTLINE_SCHEMA), temperature=1.2, top_p=0.95, seed=seed))
        assert result.finish_reason == "stop"
        jsonschema.validate(json.loads(result.text), OUTLINE_SCHEMA)


def test_json_object_answers_are_json_objects(engine):
    # Any object may hold strings of any length, which a random model need not close: an answer that
    # ended on its own is a JSON object, and one cut by max_tokens is the start of one.
    results = [run(engine, constrained(p, ResponseFormat("json_object"), 200))[1] for p in ["hi", *PROMPTS]]
    finished = [r for r in results if r.finish_reason == "stop"]
    assert finished, [r.text[:40] for r in results]
    assert all(isinstance(json.loads(r.text), dict) for r in finished)
    assert all(r.text.startswith("{") for r in results)


def test_regex_answers_match_the_whole_pattern(engine):
    pattern = r"[A-Z][a-z]{2,8}-[0-9]{3}( [a-z]{1,5}){0,2}"
    for prompt in PROMPTS:
        _, result = run(engine, constrained(prompt, ResponseFormat("regex", pattern), 64))
        assert result.finish_reason == "stop"
        assert re.fullmatch(pattern, result.text), result.text


def test_grammar_answers_are_derived_from_the_grammar(engine):
    ebnf = 'root ::= answer (", " answer)*\nanswer ::= "yes" | "no" | "maybe"'
    for prompt in PROMPTS:
        _, result = run(engine, constrained(prompt, ResponseFormat("grammar", ebnf), 64))
        parts = result.text.split(", ")
        # `(", " answer)*` never has to end: a cut answer is a prefix of the grammar's language.
        assert all(p in {"yes", "no", "maybe"} for p in parts[:-1])
        if result.finish_reason == "stop":
            assert parts[-1] in {"yes", "no", "maybe"}


def test_max_tokens_cuts_a_constrained_answer_with_length(engine):
    _, result = run(engine, constrained("hello", schema(OUTLINE_SCHEMA), 8))
    assert (result.finish_reason, result.completion_tokens) == ("length", 8)
    assert result.text.startswith("{")
    with pytest.raises(json.JSONDecodeError):  # incomplete JSON, as documented
        json.loads(result.text)


async def test_constrained_and_free_rows_share_a_batch_and_free_rows_stay_as_alone(engine):
    def request(i: int) -> ChatRequest:
        prompt = f"request {i}: " + "word " * (i * 2)
        if i % 2:
            return constrained(prompt, schema(OUTLINE_SCHEMA if i % 4 == 1 else RECORD_SCHEMA))
        return ChatRequest([ChatMessage("user", prompt)], temperature=0.0, max_tokens=20 + 7 * i)

    solo = [run(engine, request(i))[1] for i in range(8)]

    async def staggered(i: int) -> tuple[list[str], ChatResult]:
        await asyncio.sleep(0.002 * i)  # rows join while others decode
        return await collect(engine, request(i))

    before = engine.stats().steps
    together = await asyncio.gather(*(staggered(i) for i in range(8)))
    for i, ((deltas, result), alone) in enumerate(zip(together, solo)):
        assert result == alone
        assert "".join(deltas) == result.text
        if i % 2:
            jsonschema.validate(json.loads(result.text), OUTLINE_SCHEMA if i % 4 == 1 else RECORD_SCHEMA)
    assert engine.stats().steps - before < sum(r.completion_tokens for r in solo)  # they shared steps


@pytest.mark.parametrize(
    ("fmt", "field", "says"),
    [
        (ResponseFormat("json_schema", '{"type": "nonsense"}'), "response_format.json_schema", "nonsense"),
        (ResponseFormat("json_schema", '{"$ref": "#/nope"}'), "response_format.json_schema", "nope"),
        (ResponseFormat("json_schema", "{not json"), "response_format.json_schema", "JSON"),
        (ResponseFormat("json_schema", "[1, 2]"), "response_format.json_schema", "object"),
        (ResponseFormat("json_schema", " "), "response_format.json_schema", "empty"),
        (ResponseFormat("regex", "[a-"), "response_format.regex", "Unclosed"),
        (ResponseFormat("grammar", "root ::= missing"), "response_format.grammar", "missing"),
    ],
)
def test_a_format_the_engine_cannot_compile_is_invalid_argument_at_submit(engine, fmt, field, says):
    with pytest.raises(InvalidArgument) as caught:
        engine.submit(constrained("hi", fmt), CancelToken.never(), sink=None)  # fails before any use of the sink
    [violation] = caught.value.violations
    assert violation.field == field
    assert says in violation.description
    assert ".cc:" not in violation.description  # xgrammar's message, without its C++ source location


def test_compiled_grammars_are_cached_per_format(tiny_llm_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_path)
    grammars = Grammars(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    first = grammars.compile(schema(OUTLINE_SCHEMA))
    assert grammars.compile(schema(OUTLINE_SCHEMA)) is first
    assert grammars.compile(schema(RECORD_SCHEMA)) is not first
