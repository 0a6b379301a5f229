"""The OpenAI LLM surface against `capmesh up` itself (real processes, the offline default), driven
with the official `openai` SDK: a required tool call (whole and streamed), logprobs, n=2 and the
legacy completions route. The parameter-by-parameter checks run on the shared mesh in tests/http."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.support.processes import capmesh_up

pytestmark = pytest.mark.e2e

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"],
}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def test_the_openai_sdk_against_capmesh_up(tmp_path):
    with capmesh_up(["--only", "llm"], tmp_path / "logs") as mesh:
        base_url = f"{mesh['gateway (HTTP)']}/v1"
        with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as sdk:
            called = sdk.chat.completions.create(
                model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, seed=3
            )
            assert called.choices[0].finish_reason == "tool_calls"
            for call in called.choices[0].message.tool_calls or []:
                jsonschema.validate(json.loads(call.function.arguments), WEATHER)

            chunks = list(
                sdk.chat.completions.create(
                    model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, seed=3,
                    parallel_tool_calls=False,
                    stream=True,
                )
            )  # fmt: skip
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
            arguments = "".join(
                call.function.arguments or ""
                for chunk in chunks
                for call in chunk.choices[0].delta.tool_calls or []
                if call.function is not None
            )
            jsonschema.validate(json.loads(arguments), WEATHER)

            scored = sdk.chat.completions.create(
                model="tiny", messages=ASK, max_tokens=8, logprobs=True, top_logprobs=3, n=2, seed=5
            )
            assert len(scored.choices) == 2
            for choice in scored.choices:
                assert choice.logprobs is not None and choice.logprobs.content
                assert all(len(entry.top_logprobs) == 3 for entry in choice.logprobs.content)

            completion = sdk.completions.create(model="tiny", prompt="Once upon a time", max_tokens=8, seed=1)
            assert completion.choices[0].text is not None
