"""The annotated routes against one capability server (the runtime's stepper) behind a gateway:
annotation-derived routes, SSE and NDJSON, error mapping, limits, keep-alives, disconnects."""

from __future__ import annotations

import json

import httpx
import pytest

from capmesh.gateway.server.app import start_gateway
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.http.bindings import PathTemplate, find_binding
from capmesh.gateway.server.http.files import parse_range
from capmesh.services.runtime.server import create_server
from capmesh.services.runtime.settings import ServerSettings
from tests.http.support import client, sse_events, wait_available
from tests.runtime.stepper import build_stepper_service

SYNTHESIZE = "/v1/tts:synthesize"


@pytest.fixture(scope="module")
def stepper_bridge(background_loop, tmp_path_factory):
    folder = tmp_path_factory.mktemp("transcoding")

    async def start():
        service, engine = build_stepper_service(
            ServerSettings(max_concurrency=1, max_queue=0, grace_period_s=0), step_s=0.05
        )
        backend = await create_server(service)
        # No max_concurrency in the record: the backend itself refuses what it cannot take.
        backends = folder / "backends.json"
        backends.write_text(json.dumps({"backends": [{"address": f"127.0.0.1:{backend.port}", "capability": "tts"}]}))
        settings = GatewaySettings(
            port=0,
            http_port=0,
            host="127.0.0.1",
            sse_keepalive_s=0.02,
            max_body_bytes=1024,
            backends_file=str(backends),
            files_dir=str(folder / "files"),
            grace_period_s=0,
            log_level="warning",
        )
        gateway = await start_gateway(settings)
        await wait_available(gateway.grpc_address, {"tts"})
        return backend, engine, gateway

    backend, engine, gateway = background_loop.run(start())
    yield gateway.http_url, engine
    background_loop.run(gateway.stop(grace_s=0))
    background_loop.run(backend.shutdown(grace_s=0))


def test_path_templates_match_variables_verbs_and_wildcards():
    assert PathTemplate("/v1/files/{file_id}:download").match("/v1/files/abc:download") == {"file_id": "abc"}
    assert PathTemplate("/v1/files/{file_id}").match("/v1/files/abc:download") is None
    operations = PathTemplate("/v1/{name=operations/**}")
    assert operations.match("/v1/operations/j1") == {"name": "operations/j1"}
    assert operations.openapi_path() == "/v1/operations/{name}"
    assert PathTemplate("/v1/{name=operations}").fixed_values() == {"name": "operations"}
    binding, variables, _ = find_binding("POST", "/v1/operations/j1:cancel")
    assert binding.full_name == "google.longrunning.Operations.CancelOperation"
    assert variables == {"name": "operations/j1"}


def test_ranges_parse_like_rfc_9110():
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=50-500", 100) == (50, 99)
    assert parse_range("bytes=100-", 100) is None
    assert parse_range("bytes=9-3", 100) is None
    assert parse_range("items=0-1", 100) is None


def test_server_streaming_answers_sse_with_an_id_per_event(stepper_bridge):
    url, _ = stepper_bridge
    with client(url) as http:
        response = http.post(SYNTHESIZE, json={"text": "steps:3"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [e["id"] for e in events] == [str(i) for i in range(1, 8)]
    kinds = [next(iter(json.loads(e["data"]))) for e in events]
    assert kinds == ["progress", "chunk"] * 3 + ["result"]
    assert json.loads(events[-1]["data"])["result"]["sentenceCount"] == 3  # proto3 JSON: lowerCamelCase


def test_ndjson_on_request(stepper_bridge):
    url, _ = stepper_bridge
    with client(url) as http:
        response = http.post(SYNTHESIZE, json={"text": "steps:2"}, headers={"Accept": "application/x-ndjson"})
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    assert [next(iter(line)) for line in lines] == ["progress", "chunk", "progress", "chunk", "result"]


def test_keepalive_comments_flow_while_the_upstream_is_quiet(stepper_bridge):
    url, _ = stepper_bridge
    with client(url) as http:
        response = http.post(SYNTHESIZE, json={"text": "steps:4"})  # 0.05 s per step, keep-alive every 0.02 s
    assert ": keep-alive\n\n" in response.text
    assert len(sse_events(response.text)) == 9


def test_invalid_argument_is_400_with_field_violations(stepper_bridge):
    url, _ = stepper_bridge
    with client(url) as http:
        response = http.post(SYNTHESIZE, json={"text": ""})
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["status"]) == (3, "INVALID_ARGUMENT")
    bad_request = next(d for d in body["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    assert bad_request["fieldViolations"] == [{"field": "text", "description": "must not be empty"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"text": ', "body"),
        ('{"text": 5}', "text"),
        ('{"speed": "fast"}', "speed"),
        ('{"sampleRate": 1.5}', "sample_rate"),
        ('{"format": "AUDIO_FORMAT_NOPE"}', "format"),
        ('{"nope": 1}', "nope"),
        ("[1, 2]", "body"),
    ],
)
def test_malformed_json_or_wrong_types_are_400_naming_the_field(stepper_bridge, body, field):
    url, _ = stepper_bridge
    with client(url) as http:
        response = http.post(SYNTHESIZE, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    violations = next(d for d in response.json()["details"] if d["@type"].endswith("BadRequest"))["fieldViolations"]
    assert violations[0]["field"] == field


def test_refusals_and_crashes_map_to_their_http_statuses(stepper_bridge):
    url, _ = stepper_bridge
    with client(url) as http:
        refused = http.post(SYNTHESIZE, json={"text": "refuse"})
        crashed = http.post(SYNTHESIZE, json={"text": "crash"})
    assert refused.status_code == 400 and refused.json()["status"] == "FAILED_PRECONDITION"
    info = next(d for d in refused.json()["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["reason"] == "REFUSED_FOR_TEST"
    assert crashed.status_code == 500 and crashed.json()["status"] == "INTERNAL"


def test_body_over_the_limit_is_413(stepper_bridge):
    url, _ = stepper_bridge
    with client(url) as http:
        response = http.post(SYNTHESIZE, json={"text": "x" * 4096})
    assert response.status_code == 413
    assert response.json()["status"] == "RESOURCE_EXHAUSTED"


def test_unknown_routes_and_methods(stepper_bridge):
    url, _ = stepper_bridge
    with client(url) as http:
        assert http.get("/v1/nothing-here").status_code == 404
        assert http.get(SYNTHESIZE).status_code == 405


def test_resource_exhausted_is_429_with_retry_after(stepper_bridge):
    url, engine = stepper_bridge
    with client(url) as http, http.stream("POST", SYNTHESIZE, json={"text": "steps:40"}) as busy:
        assert busy.status_code == 200
        refused = http.post(SYNTHESIZE, json={"text": "steps:1"})  # one slot, no queue
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert any(d["@type"].endswith("RetryInfo") for d in refused.json()["details"])
    assert engine.stopped.wait(5)


def test_client_disconnect_cancels_the_upstream_call(stepper_bridge):
    url, engine = stepper_bridge
    engine.stopped.wait(5)
    with (
        httpx.Client(base_url=url, timeout=30) as http,
        http.stream("POST", SYNTHESIZE, json={"text": "steps:200"}) as response,
    ):
        lines = response.iter_lines()
        while not next(lines).startswith("data:"):
            pass
        started = engine.steps_run
    # closing the response drops the connection
    assert engine.stopped.wait(5), "the engine never stopped"
    assert engine.steps_run < 200
    assert engine.steps_run >= started
