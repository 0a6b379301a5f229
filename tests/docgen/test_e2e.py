"""DocGen through `capmesh up --only llm --only docgen`: real gateway, tiny LLM and docgen processes.

Outlines need the LLM service to enforce `response_format` (constrained decoding: the random-weight
tiny model answers JSON only when forced to). The `structured_output` fixture tries that once and
skips the outline tests where the LLM service does not enforce it yet; documents from a given
outline need no JSON and always run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import grpc
import httpx
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from capmesh.client import sync_channel
from capmesh.client.docgen import DocGenClient, outline_to_json
from capmesh.docgen.v1 import docgen_service_pb2 as pb
from capmesh.gateway.v1 import file_service_pb2, file_service_pb2_grpc, job_service_pb2
from capmesh.llm.v1 import llm_service_pb2 as llm_pb
from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.support.processes import capmesh_up

pytestmark = pytest.mark.e2e

CAPMESH = [sys.executable, "-m", "capmesh.cli.main"]
OUTLINE = pb.Outline(
    title="Tiny Handbook",
    nodes=[pb.OutlineNode(title=title, summary="one paragraph") for title in ("Alpha", "Beta", "Gamma")],
)
DOCUMENT_METHOD = "/capmesh.docgen.v1.DocGenService/StreamGenerateDocument"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    logs = tmp_path_factory.mktemp("docgen-logs")
    env = {
        **os.environ,
        "COLUMNS": "250",
        # Short sections keep the tiny model quick; the outline stays small too.
        "CAPMESH_DOCGEN_SECTION_MAX_TOKENS": "24",
        "CAPMESH_DOCGEN_OUTLINE_MAX_TOKENS": "384",
        "CAPMESH_DOCGEN_MAX_SECTIONS": "6",
    }
    with capmesh_up(["--only", "llm", "--only", "docgen"], logs, env) as addresses:
        assert {"llm", "docgen"} <= set(addresses), addresses
        yield addresses


@pytest.fixture(scope="module")
def gateway(mesh) -> str:
    return mesh["gateway (gRPC)"]


@pytest.fixture(scope="module")
def http_base(mesh) -> str:
    base = mesh["gateway (HTTP)"]
    return base if base.startswith("http") else f"http://{base}"


@pytest.fixture(scope="module")
def structured_output(gateway: str) -> None:
    """Skips unless the LLM service enforces response_format json_schema (tried once)."""
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    request = llm_pb.StreamChatRequest(
        messages=[llm_pb.ChatMessage(role=llm_pb.ROLE_USER, content="a number")],
        max_tokens=32,
        response_format=llm_pb.ResponseFormat(json_schema=json.dumps(schema)),
    )
    with sync_channel(gateway) as channel:
        try:
            messages = list(llm_service_pb2_grpc.LlmServiceStub(channel).StreamChat(request, timeout=120))
        except grpc.RpcError as exc:
            pytest.skip(f"the LLM service refused response_format: {exc.code().name}")
    try:
        ok = isinstance(json.loads(messages[-1].result.text).get("n"), int)
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        pytest.skip("the LLM service does not enforce response_format json_schema yet")


def check_document(markdown: str, outline: pb.Outline) -> None:
    assert markdown.startswith(f"# {outline.title}\n")
    for node in outline.nodes:
        assert f"\n## {node.title}\n" in markdown


def test_outline_then_document_through_the_gateway(gateway, structured_output):
    with sync_channel(gateway) as channel:
        client = DocGenClient(channel)
        result = client.outline("A handbook about tiny language models", max_sections=4, timeout=300)
        outline = result.outline
        assert outline.title.strip() and 2 <= len(outline.nodes) <= 4
        steps: list[int] = []
        document = client.write(
            outline, on_progress=lambda p: steps.append(p.step) if p.stage == "writing" else None, timeout=300
        )
    check_document(document.data.decode(), outline)
    assert sorted(set(steps)) == list(range(len(outline.nodes) + 1))


def test_document_from_an_outline_reports_a_step_per_section(gateway):
    with sync_channel(gateway) as channel:
        steps: list[tuple[int, int]] = []
        document = DocGenClient(channel).write(
            OUTLINE,
            max_concurrent_sections=3,
            on_progress=lambda p: steps.append((p.step, p.total_steps)) if p.stage == "writing" else None,
            timeout=300,
        )
    check_document(document.data.decode(), OUTLINE)
    assert steps == [(n, 3) for n in range(4)]
    assert [s.index for s in document.result.sections] == [1, 2, 3]
    assert all(s.tokens > 0 and s.attempts == 1 for s in document.result.sections)
    assert set(document.section_texts) == {1, 2, 3}


def test_document_as_a_job_with_a_client_chosen_id_from_the_cli(gateway, tmp_path):
    request_file = tmp_path / "req.json"
    request_file.write_text(json.dumps({"outline": json.loads(outline_to_json(OUTLINE))}))
    request_id = f"doc-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "CAPMESH_ADDRESS": gateway}
    submit = [*CAPMESH, "jobs", "submit", DOCUMENT_METHOD, "--request-id", request_id, "-d", f"@{request_file}"]
    first = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=120)
    job_id = first.stdout.strip()
    assert job_id and again.stdout.strip() == job_id  # the same request id is the same job

    with sync_channel(gateway) as channel:
        operations = operations_pb2_grpc.OperationsStub(channel)
        deadline = time.monotonic() + 300
        while not (
            operation := operations.GetOperation(operations_pb2.GetOperationRequest(name=f"operations/{job_id}"))
        ).done:
            assert time.monotonic() < deadline, "the job did not finish"
            time.sleep(0.2)  # polling the job until it is done
        assert operation.HasField("response"), operation.error
        job_result = job_service_pb2.JobResult()
        operation.response.Unpack(job_result)
        result = pb.DocumentResult()
        job_result.response.Unpack(result)
        assert result.document.file_id and result.document.mime_type == "text/markdown"
        data = b"".join(
            m.data
            for m in file_service_pb2_grpc.FileServiceStub(channel).DownloadFile(
                file_service_pb2.DownloadFileRequest(file_id=result.document.file_id)
            )
        )
    assert len(data) == result.document.size_bytes
    check_document(data.decode(), OUTLINE)


def test_document_job_over_http_answers_202_and_reports_progress_steps(http_base):
    request_id = f"http-doc-{uuid.uuid4().hex[:8]}"
    body = {
        "method": DOCUMENT_METHOD,
        "request": {"outline": json.loads(outline_to_json(OUTLINE)), "maxConcurrentSections": 2},
        "requestId": request_id,
    }
    with httpx.Client(base_url=http_base, timeout=120) as http:
        submitted = http.post("/v1/jobs", json=body)
        assert submitted.status_code == 202, submitted.text
        name = submitted.json()["operation"]["name"]
        assert submitted.headers["Location"] == f"/v1/{name}"
        assert http.post("/v1/jobs", json=body).json()["operation"]["name"] == name
        with http.stream("GET", f"/v1/jobs/{name.split('/')[-1]}/events") as events:
            received = [json.loads(line[5:])["event"] for line in events.iter_lines() if line.startswith("data:")]
        kinds = [e["type"] for e in received]
        assert kinds[-1] == "JOB_EVENT_TYPE_SUCCEEDED", kinds
        steps = {e["progress"].get("step", 0) for e in received if e.get("progress", {}).get("stage") == "writing"}
        assert {1, 2, 3} <= steps
        operation = http.get(f"/v1/{name}").json()
        document = operation["response"]["response"]["document"]
        markdown = http.get(f"/v1/files/{document['fileId']}:download")
    assert markdown.status_code == 200
    check_document(markdown.text, OUTLINE)
