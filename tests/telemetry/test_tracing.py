"""Traces across real processes: a gateway and a TTS service export to a small OTLP/gRPC collector.

A call carrying a W3C `traceparent` (gRPC metadata or HTTP header) yields spans of that very trace
from both processes, each under its parent: the caller's span -> the gateway's server span -> its
routing attempt (backend, attempt, queue wait) -> the service's server span -> one span per engine
stage; a talking head made from text holds its own TTS call through the gateway under its span.
A job's submission and its attempts share one trace, even when a restarted gateway runs the
second attempt.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2

from capmesh.common.v1 import artifact_pb2
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb2
from capmesh.gateway.v1 import job_service_pb2_grpc
from capmesh.talkinghead.v1 import talkinghead_service_pb2 as talkinghead_pb2
from capmesh.talkinghead.v1 import talkinghead_service_pb2_grpc as talkinghead_pb2_grpc
from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc
from tests.support.processes import wait_serving
from tests.talkinghead.media_fixtures import astronaut, encode_image
from tests.telemetry.collector import Collector, ReceivedSpan
from tests.telemetry.mesh import POLL_S, Process, start_gateway, start_service, tracing_env

pytestmark = pytest.mark.e2e

TTS_SERVICE = "capmesh.tts.v1.TtsService"
SYNTHESIZE = f"/{TTS_SERVICE}/StreamSynthesize"
TALKING_HEAD_SERVICE = "capmesh.talkinghead.v1.TalkingHeadService"
TALKING_HEAD = f"/{TALKING_HEAD_SERVICE}/StreamGenerateTalkingHead"


def new_parent() -> tuple[str, str, str]:
    """(trace id, span id, traceparent) of a caller's span."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


class Mesh:
    def __init__(self, collector: Collector, env: dict[str, str], grpc_address: str, http_url: str) -> None:
        self.collector = collector
        self.env = env
        self.grpc_address = grpc_address
        self.http_url = http_url


def submit_job(address: str, text: str, traceparent: str) -> str:
    request = any_pb2.Any()
    request.Pack(tts_service_pb2.StreamSynthesizeRequest(text=text))
    with grpc.insecure_channel(address) as channel:
        reply = job_service_pb2_grpc.JobServiceStub(channel).SubmitJob(
            jobs_pb2.SubmitJobRequest(method=SYNTHESIZE, request=request),
            metadata=(("traceparent", traceparent),),
            timeout=30,
        )
    return reply.operation.name.split("/", 1)[1]


def job_state(address: str, job_id: str) -> tuple[operations_pb2.Operation, jobs_pb2.JobMetadata]:
    with grpc.insecure_channel(address) as channel:
        operation = operations_pb2_grpc.OperationsStub(channel).GetOperation(
            operations_pb2.GetOperationRequest(name=f"operations/{job_id}"), timeout=30
        )
    meta = jobs_pb2.JobMetadata()
    operation.metadata.Unpack(meta)
    return operation, meta


def poll(check: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return value


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.close()


@pytest.fixture(scope="module")
def mesh(collector: Collector, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A gateway, a TTS service and a talking-head service, all tracing to the collector."""
    logs: Path = tmp_path_factory.mktemp("traced-mesh")
    env = tracing_env(collector.endpoint)
    gateway, grpc_address, http_url = start_gateway(env, logs / "gateway.log", files_dir=logs / "files")
    services: list[Process] = []
    try:
        for capability in ("tts", "talkinghead"):
            small = {"CAPMESH_TALKINGHEAD_DEFAULT_SIZE": "128", "CAPMESH_TALKINGHEAD_DEFAULT_FPS": "10"}
            process, _ = start_service(
                capability, {**env, **small}, logs / f"{capability}.log", "--gateway", grpc_address
            )
            services.append(process)
        wait_serving(grpc_address, TTS_SERVICE)
        wait_serving(grpc_address, TALKING_HEAD_SERVICE)
        yield Mesh(collector, env, grpc_address, http_url)
    finally:
        for process in services:
            process.stop()
        gateway.stop()


def by_id(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    return {s.span_id: s for s in spans}


def server_span(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan | None:
    return next((s for s in spans if s.service == service and s.server and s.name == name), None)


def backend_leg(spans: list[ReceivedSpan], parent_id: str) -> bool:
    """Under `parent_id` (a gateway span): a routing attempt, under it the tts server span with its stages."""
    index = by_id(spans)
    for tts in (s for s in spans if s.service == "tts" and s.server and s.name == SYNTHESIZE):
        route = index.get(tts.parent_span_id)
        if route is None or route.service != "gateway" or route.parent_span_id != parent_id:
            continue
        stages = [s for s in spans if s.parent_span_id == tts.span_id and s.name.startswith("stage ")]
        if stages and route.attributes.get("capmesh.backend") and route.attributes.get("capmesh.attempt", 0) >= 1:
            return "capmesh.queue_wait_s" in route.attributes
    return False


def test_a_grpc_call_with_a_traceparent_is_one_trace_across_gateway_and_tts(mesh):
    trace_id, parent_id, traceparent = new_parent()
    with grpc.insecure_channel(mesh.grpc_address) as channel:
        stub = tts_service_pb2_grpc.TtsServiceStub(channel)
        messages = list(
            stub.StreamSynthesize(
                tts_service_pb2.StreamSynthesizeRequest(text="Traced."),
                metadata=(("traceparent", traceparent),),
                timeout=60,
            )
        )
    assert messages[-1].HasField("result")

    def linked(spans: list[ReceivedSpan]) -> bool:
        gateway = server_span(spans, "gateway", SYNTHESIZE)
        return gateway is not None and gateway.parent_span_id == parent_id and backend_leg(spans, gateway.span_id)

    spans = mesh.collector.wait_for(trace_id, linked)
    assert {s.service for s in spans} == {"gateway", "tts"}
    assert {s.trace_id for s in spans} == {trace_id}


def test_an_http_call_with_a_traceparent_header_joins_the_trace(mesh):
    trace_id, parent_id, traceparent = new_parent()
    response = httpx.post(
        f"{mesh.http_url}/v1/audio/speech",
        json={"model": "tts-1", "input": "Traced over HTTP.", "voice": "alloy", "response_format": "wav"},
        headers={"traceparent": traceparent},
        timeout=60,
    )
    assert response.status_code == 200, response.text

    def linked(spans: list[ReceivedSpan]) -> bool:
        http = next((s for s in spans if s.service == "gateway" and s.server and s.name.startswith("HTTP ")), None)
        return http is not None and http.parent_span_id == parent_id and backend_leg(spans, http.span_id)

    spans = mesh.collector.wait_for(trace_id, linked)
    http = next(s for s in spans if s.name.startswith("HTTP "))
    assert http.attributes["http.route"] == "/v1/audio/speech"
    assert http.attributes["http.response.status_code"] == 200


def test_a_talking_head_from_text_has_its_tts_leg_under_it(mesh):
    trace_id, parent_id, traceparent = new_parent()
    request = talkinghead_pb2.StreamGenerateTalkingHeadRequest(
        reference_image=artifact_pb2.Artifact(inline_data=encode_image(astronaut())), text="Traced speech.", seed=3
    )
    with grpc.insecure_channel(mesh.grpc_address) as channel:
        messages = list(
            talkinghead_pb2_grpc.TalkingHeadServiceStub(channel).StreamGenerateTalkingHead(
                request, metadata=(("traceparent", traceparent),), timeout=240
            )
        )
    assert messages[-1].HasField("result")

    def linked(spans: list[ReceivedSpan]) -> bool:
        index = by_id(spans)
        head = server_span(spans, "talkinghead", TALKING_HEAD)
        outer = server_span(spans, "gateway", TALKING_HEAD)
        if head is None or outer is None or outer.parent_span_id != parent_id:
            return False
        if index.get(head.parent_span_id, outer).parent_span_id != outer.span_id:  # talking head <- route <- gateway
            return False
        # The talking head's own call of TTS, through the gateway, is a child of its server span.
        inner = [s for s in spans if s.service == "gateway" and s.server and s.name == SYNTHESIZE]
        return any(s.parent_span_id == head.span_id and backend_leg(spans, s.span_id) for s in inner)

    spans = mesh.collector.wait_for(trace_id, linked, timeout_s=120)
    assert {s.service for s in spans} == {"gateway", "talkinghead", "tts"}
    head = server_span(spans, "talkinghead", TALKING_HEAD)
    assert head is not None
    stages = {
        s.attributes["capmesh.stage"] for s in spans if s.parent_span_id == head.span_id and s.name.startswith("stage ")
    }
    assert "synthesizing" in stages and len(stages) >= 3


def test_a_jobs_attempts_across_a_gateway_restart_are_under_its_submitters_trace(
    collector: Collector, redis_server, tmp_path: Path
) -> None:
    """The job's first gateway stops mid-attempt and hands the job back; a new gateway on the same
    Redis runs attempt 2, joining the trace from the traceparent kept in the job's record."""
    redis_server.flush()
    env = tracing_env(collector.endpoint)
    stepper = Process(["-m", "tests.jobs.stepper_process", "--step-s", "0.05"], env, tmp_path / "stepper.log")
    backends = tmp_path / "backends.json"
    backends.write_text(json.dumps({"backends": [{"address": stepper.line.rsplit(" ", 1)[1], "capability": "tts"}]}))
    settings = dict(redis_url=redis_server.url, backends_file=backends, files_dir=tmp_path / "files")
    gateways: list[Process] = []
    try:
        first, address, _ = start_gateway(env, tmp_path / "gateway-1.log", **settings)
        gateways.append(first)
        trace_id, parent_id, traceparent = new_parent()
        job_id = submit_job(address, "steps:60", traceparent)
        poll(lambda: job_state(address, job_id)[1].progress.step >= 3, 60, "the job's first steps")
        first.stop()  # SIGTERM: the running attempt is handed back, queued again
        second, address, _ = start_gateway(env, tmp_path / "gateway-2.log", **settings)
        gateways.append(second)
        operation, meta = poll(
            lambda: (state := job_state(address, job_id))[0].done and state, 120, "the job to finish"
        )  # type: ignore[misc]
        assert operation.HasField("response"), operation.error
        assert meta.attempt == 2

        def complete(spans: list[ReceivedSpan]) -> bool:
            submit = next((s for s in spans if s.name == "job submit"), None)
            if submit is None:
                return False
            attempts = [s for s in spans if s.name.startswith("job attempt") and s.parent_span_id == submit.span_id]
            served = [s for s in spans if s.server and s.name == SYNTHESIZE and s.service == "stepper"]
            return len(attempts) == 2 and len(served) == 2

        spans = collector.wait_for(trace_id, complete)
        index = by_id(spans)
        submit = next(s for s in spans if s.name == "job submit")
        assert submit.attributes["capmesh.job_id"] == job_id
        submitted_by = index[submit.parent_span_id]
        assert submitted_by.server and submitted_by.name == "/capmesh.gateway.v1.JobService/SubmitJob"
        assert submitted_by.parent_span_id == parent_id
        attempts = sorted(
            (s for s in spans if s.name.startswith("job attempt")), key=lambda s: s.attributes["capmesh.attempt"]
        )
        assert [a.attributes["capmesh.attempt"] for a in attempts] == [1, 2]
        for attempt in attempts:  # each attempt's backend call is under it: attempt -> route -> stepper
            served = [
                s
                for s in spans
                if s.server and s.service == "stepper" and index[s.parent_span_id].parent_span_id == attempt.span_id
            ]
            assert len(served) == 1
        # The first gateway's log lines written while serving the submission carry its ids.
        logged = [line for line in first.log_lines() if line.get("event") == "job.submitted"]
        assert logged and logged[0].get("trace_id") == trace_id and logged[0].get("span_id")
    finally:
        for gateway in gateways:
            gateway.stop()
        stepper.stop()
