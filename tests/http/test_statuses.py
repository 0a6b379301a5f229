"""HTTP statuses decided before the first byte, on real processes (`capmesh up -f` on small limits).

The rules (issue 13): a streaming route answers 400 for invalid input and 429 with Retry-After when
over capacity, never `200 text/event-stream` followed by an error event; every capability validates
its request before its first message (so a fresh backend that must load a model first still
answers 400); a body too large is 413; a file TTL that is not a lifetime is 400 on HTTP and
INVALID_ARGUMENT on gRPC; an upload with no content is 400; a method a path does not serve is 405
with an Allow header.

The first test needs a TTS backend that has not loaded its model yet: it runs first in this module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import pytest

from capmesh.gateway.server.http.bindings import load_bindings
from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc, registry_service_pb2_grpc
from capmesh.gateway.v1 import registry_service_pb2 as registry_pb
from capmesh.services.runtime.status import read_details, status_of
from tests.http.support import sse_events
from tests.support.processes import capmesh_up

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
MAX_BODY_BYTES = 8 * MiB  # above the 5 MiB gRPC message limit, so both limits can be passed
ROUTE_WAIT_S = 1.5  # longer than the old first-message wait (1 s), so a queued call outlived it

MESH = f"""
offline: true
gateway:
  max_body_bytes: {MAX_BODY_BYTES}
  route_wait_s: {ROUTE_WAIT_S}
capabilities:
  tts:
    engine: espeak
    max_text_chars: 400
  llm:
    engine: transformers
    model: tiny
  videogen:
    engine: diffusers
    model: tiny
    max_width: 64
    max_height: 64
    max_frames: 8
    max_steps: 2
  imagegen:
    engine: diffusers
    model: tiny
    max_width: 64
    max_height: 64
    max_steps: 4
    max_images: 2
    max_concurrency: 1
    max_queue: 0
  talkinghead:
    engine: portrait
    max_frames: 16
    max_steps: 2
  docgen:
    max_sections: 4
    default_max_sections: 4
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory) -> Iterator[dict[str, str]]:
    folder = tmp_path_factory.mktemp("statuses")
    mesh_file = Path(folder) / "mesh.yaml"
    mesh_file.write_text(MESH)
    with capmesh_up(["-f", str(mesh_file)], folder / "logs") as addresses:
        yield addresses


@pytest.fixture
def http(mesh) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mesh["gateway (HTTP)"], timeout=120) as session:
        yield session


def loaded_models(grpc_address: str, capability: str) -> list[str]:
    with grpc.insecure_channel(grpc_address) as channel:
        view = registry_service_pb2_grpc.RegistryServiceStub(channel).ListCapabilities(
            registry_pb.ListCapabilitiesRequest(), timeout=10
        )
    return [
        m for c in view.capabilities if c.capability == capability for b in c.backends for m in b.backend.loaded_models
    ]


def field_violations(response: httpx.Response) -> list[str]:
    return [v["field"] for d in response.json()["details"] for v in d.get("fieldViolations", [])]


# --------------------------------------------------------------------- validation before the stream


def test_an_invalid_speech_request_on_a_fresh_tts_backend_is_400_not_an_empty_200(mesh, http):
    assert loaded_models(mesh["gateway (gRPC)"], "tts") == [], "this test needs a TTS backend with nothing loaded"
    speech = http.post("/v1/audio/speech", json={"model": "tts-1", "input": "a" * 1000, "response_format": "wav"})
    assert speech.status_code == 400, speech.content[:200]
    assert speech.json()["error"]["param"] == "text"
    again = http.post("/v1/tts:synthesize", json={"text": "a" * 1000})
    assert again.status_code == 400 and again.headers["content-type"] == "application/json"
    assert field_violations(again) == ["text"]


CAPABILITY_STREAMS = sorted(
    {b.template.template for b in load_bindings() if b.capability and b.server_streaming and b.http_method == "POST"}
)


@pytest.mark.parametrize("path", CAPABILITY_STREAMS)
def test_every_capability_stream_refuses_an_empty_request_with_400_before_the_first_byte(http, path):
    refused = http.post(path, json={})
    assert refused.status_code == 400, refused.text[:300]
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["status"] == "INVALID_ARGUMENT" and field_violations(refused)


def test_talkinghead_generate_with_an_empty_body_is_400(http):
    refused = http.post("/v1/talkinghead:generate", content=b"{}")
    assert refused.status_code == 400, refused.text[:300]


# --------------------------------------------------------------------------------- over capacity


def test_over_capacity_streams_answer_429_with_retry_after_never_200_then_an_error(http):
    """One ImageGen slot, no service queue: concurrent calls wait in the gateway's route queue
    (ROUTE_WAIT_S) and those still waiting then are refused before their first byte."""
    request = {"prompt": "a red square", "width": 64, "height": 64, "steps": 4, "numImages": 2, "seed": "1"}

    def call(_: int) -> tuple[int, dict[str, str], str]:
        with httpx.Client(base_url=str(http.base_url), timeout=120) as own:
            reply = own.post("/v1/imagegen:generate", json=request)
            return reply.status_code, dict(reply.headers), reply.text

    # How many calls overflow the queue depends on how fast this machine generates an image (a
    # call waits ROUTE_WAIT_S for the slot): more callers each round until some are refused.
    for callers in (12, 24, 48):
        with ThreadPoolExecutor(callers) as pool:
            replies = list(pool.map(call, range(callers)))
        statuses = sorted(status for status, _, _ in replies)
        assert set(statuses) <= {200, 429}, statuses
        if 429 in statuses:
            break
    assert 200 in statuses and 429 in statuses, statuses
    for status, headers, text in replies:
        if status == 429:
            assert int(headers["retry-after"]) >= 1
            assert json.loads(text)["status"] == "RESOURCE_EXHAUSTED"
        else:
            events = sse_events(text)
            assert all(e["event"] != "error" for e in events), text[-300:]
            assert "result" in json.loads(events[-1]["data"])


# ------------------------------------------------------------------------------------ body sizes


def test_a_body_over_the_limits_is_413(http):
    over_body = http.post("/v1/tts:synthesize", content=b"x" * (MAX_BODY_BYTES + 1))
    assert over_body.status_code == 413
    # Under the body limit but over the 5 MiB gRPC message limit (today's 429 "Sent message larger than max").
    text = "a" * (6 * MiB)
    over_message = http.post("/v1/tts:synthesize", json={"text": text})
    assert over_message.status_code == 413, over_message.text[:300]
    assert over_message.json()["details"][0]["reason"] == "MESSAGE_TOO_LARGE"
    over_speech = http.post("/v1/audio/speech", json={"input": text})
    assert over_speech.status_code == 413, over_speech.text[:300]


# ----------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("ttl", ["1e12", "inf", "nan", "-1"])
def test_a_file_ttl_that_is_not_a_lifetime_is_400_on_http_and_invalid_argument_on_grpc(mesh, http, ttl):
    raw = http.post("/v1/files", params={"ttl_seconds": ttl}, content=b"abc")
    assert raw.status_code == 400, raw.text
    assert field_violations(raw) == ["ttl_seconds"]
    form = http.post("/v1/files", files={"file": ("a.txt", b"abc", "text/plain")}, data={"ttl_seconds": ttl})
    assert form.status_code == 400, form.text

    def messages():
        header = file_service_pb2.UploadHeader(name="a.txt", ttl_seconds=float(ttl))
        yield file_service_pb2.UploadFileRequest(header=header)
        yield file_service_pb2.UploadFileRequest(chunk=b"abc")

    with grpc.insecure_channel(mesh["gateway (gRPC)"]) as channel, pytest.raises(grpc.RpcError) as refused:
        file_service_pb2_grpc.FileServiceStub(channel).UploadFile(messages(), timeout=30)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in read_details(status_of(refused.value)).field_violations] == ["header.ttl_seconds"]


def test_a_file_ttl_within_the_range_is_kept(http):
    stored = http.post("/v1/files", params={"ttl_seconds": "3600"}, content=b"abc")
    assert stored.status_code == 201, stored.text


def test_an_upload_without_content_is_400_not_an_empty_file(http):
    raw = http.post("/v1/files")
    assert raw.status_code == 400, raw.text
    assert field_violations(raw) == ["body"]
    form = http.post("/v1/files", files={"file": ("empty.bin", b"", "application/octet-stream")})
    assert form.status_code == 400, form.text
    assert field_violations(form) == ["file"]


# --------------------------------------------------------------------------------------- methods


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/chat/completions", {"POST"}),  # a hand-written route
        ("DELETE", "/v1/capabilities", {"GET", "HEAD"}),  # an annotated route
        ("GET", "/v1/tts:synthesize", {"POST"}),
        ("PUT", "/healthz", {"GET", "HEAD"}),
        ("OPTIONS", "/v1/files", {"GET", "HEAD", "POST"}),  # upload (hand-written) and list (annotated)
    ],
)
def test_a_method_a_path_does_not_serve_is_405_with_allow(http, method, path, allowed):
    refused = http.request(method, path)
    assert refused.status_code == 405, refused.text[:300]
    assert {m.strip() for m in refused.headers["allow"].split(",")} == allowed
    assert refused.json()["details"][0]["reason"] == "METHOD_NOT_ALLOWED"
