"""The rule: every OpenAI parameter is honoured or answered with a 400 that names it, never dropped.

The field lists come from the `openai` package's own typed request params, so a new SDK release
with a new parameter fails here until the gateway either honours or refuses it.
"""

from __future__ import annotations

import typing

import httpx
import pytest
from openai.types import completion_create_params, image_generate_params
from openai.types.audio import speech_create_params
from openai.types.chat import completion_create_params as chat_create_params

from capmesh.gateway.server.http import openai_compat

# A value of the wrong kind for nearly any parameter: the refusal must come from the name alone.
PROBE = {"probe": True}


def typed_fields(params) -> set[str]:
    """Every key of a TypedDict, or of each TypedDict of a Union (streaming and not)."""
    kinds = typing.get_args(params) or (params,)
    return {key for kind in kinds for klass in kind.__mro__ for key in getattr(klass, "__annotations__", {})}


ENDPOINTS = {
    "/v1/chat/completions": (
        typed_fields(chat_create_params.CompletionCreateParams),
        openai_compat.CHAT_PARAMETERS,
        {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ),
    "/v1/completions": (
        typed_fields(completion_create_params.CompletionCreateParams),
        openai_compat.COMPLETION_PARAMETERS,
        {"model": "tiny", "prompt": "hi", "max_tokens": 2},
    ),
    "/v1/images/generations": (
        typed_fields(image_generate_params.ImageGenerateParams),
        openai_compat.IMAGE_PARAMETERS,
        {"prompt": "a square", "size": "16x16", "steps": 1},
    ),
    "/v1/audio/speech": (
        typed_fields(speech_create_params.SpeechCreateParams),
        openai_compat.SPEECH_PARAMETERS,
        {"input": "hi", "voice": "alloy", "model": "tts-1", "response_format": "pcm"},
    ),
}
CASES = [(path, name) for path, (fields, _, _) in ENDPOINTS.items() for name in sorted(fields)]


def test_the_sdk_schemas_were_read():
    for path, (fields, _, _) in ENDPOINTS.items():
        assert len(fields) >= 6, path
    assert {"tools", "logprobs", "n", "reasoning_effort"} <= ENDPOINTS["/v1/chat/completions"][0]


@pytest.mark.parametrize(("path", "name"), CASES)
def test_every_parameter_is_honoured_or_refused_by_name(mesh, path, name):
    _, rules, base = ENDPOINTS[path]
    if name in rules.honoured or name in rules.informational:
        return  # honoured: the endpoint's own tests exercise these
    # Refused, or accepted only with certain values: any other value is a 400 naming the field.
    response = httpx.post(f"{mesh.http_url}{path}", json={**base, name: PROBE}, timeout=60)
    assert response.status_code == 400, (name, response.text[:300])
    assert response.json()["error"]["param"] == name
    for allowed in rules.only.get(name, ()):
        accepted = httpx.post(f"{mesh.http_url}{path}", json={**base, name: allowed}, timeout=120)
        assert accepted.status_code == 200, (name, allowed, accepted.text[:300])


@pytest.mark.parametrize("path", list(ENDPOINTS))
def test_parameters_no_sdk_knows_are_refused_too(mesh, path):
    _, _, base = ENDPOINTS[path]
    response = httpx.post(f"{mesh.http_url}{path}", json={**base, "temperatur": 0.5}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperatur"


def test_honoured_parameters_are_real_sdk_parameters_or_documented_extras():
    """A typo in the tables would honour a name nobody sends and refuse the real one."""
    extras = {
        "/v1/chat/completions": {"repetition_penalty", "min_p", "top_k"},
        "/v1/completions": {"repetition_penalty", "min_p", "top_k"},
        "/v1/images/generations": {"negative_prompt", "steps", "seed", "guidance_scale"},
        "/v1/audio/speech": {"sample_rate"},
    }
    for path, (fields, rules, _) in ENDPOINTS.items():
        unknown = (rules.honoured | rules.informational | set(rules.only)) - fields - extras[path] - {"stream"}
        assert not unknown, (path, unknown)
