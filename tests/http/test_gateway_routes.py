"""Every HTTP route of a real gateway (start_gateway) with real capability services behind it,
through a real HTTP client."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import pytest

from tests.http.support import client, sse_events

TTS_METHOD = "/capmesh.tts.v1.TtsService/StreamSynthesize"


@pytest.fixture
def http(mesh):
    with client(mesh.http_url) as session:
        yield session


def events_of(response) -> list[dict]:
    return [json.loads(e["data"]) for e in sse_events(response.text)]


# ------------------------------------------------------------------------------ registry and ops


def test_capabilities_list_get_and_watch(http):
    listed = http.get("/v1/capabilities").json()["capabilities"]
    names = {c["capability"] for c in listed}
    assert {"tts", "llm", "imagegen"} <= names
    tts = http.get("/v1/capabilities/tts").json()["capability"]
    assert tts["state"] == "BACKEND_STATE_AVAILABLE"
    assert tts["backends"][0]["backend"]["address"].startswith("127.0.0.1:")
    assert http.get("/v1/capabilities/nope").status_code == 404
    with http.stream("GET", "/v1/capabilities:watch") as watch:
        assert watch.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in watch.iter_lines() if line.startswith("data:"))
    assert {c["capability"] for c in json.loads(first[5:])["capabilities"]} == names


def test_backends_register_heartbeat_and_deregister_over_http(http):
    registered = http.post(
        "/v1/backends", json={"backend": {"address": "127.0.0.1:1", "capability": "videogen", "services": []}}
    )
    assert registered.status_code == 200, registered.text
    backend_id = registered.json()["backendId"]
    assert http.post(f"/v1/backends/{backend_id}:heartbeat", json={"inFlight": 0}).json()["known"] is True
    assert http.delete(f"/v1/backends/{backend_id}").status_code == 200
    assert http.post("/v1/backends", json={"backend": {"capability": "videogen"}}).status_code == 400


def test_health_readiness_and_metrics(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["grpc"] == "ok"
    http.get("/v1/capabilities/tts")
    metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    counted = r'capmesh_http_requests_total\{method="GET",route="/v1/capabilities/\{capability\}",status="200"\}'
    assert re.search(counted, metrics.text)
    assert "capmesh_http_request_seconds_bucket" in metrics.text


def test_openapi_document_describes_the_annotated_routes(http):
    document = http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    synthesize = document["paths"]["/v1/tts:synthesize"]["post"]
    assert "streaming progress and audio chunks" in synthesize["summary"] + synthesize["description"]
    assert "text/event-stream" in synthesize["responses"]["200"]["content"]
    assert document["paths"]["/v1/jobs"]["post"]["responses"]["202"]
    assert "/v1/operations/{name}:cancel" in document["paths"]
    request = document["components"]["schemas"]["capmesh.tts.v1.StreamSynthesizeRequest"]
    assert request["properties"]["sampleRate"]["description"].startswith("The sample rate")
    assert request["properties"]["format"]["enum"][0] == "AUDIO_FORMAT_UNSPECIFIED"


@pytest.mark.parametrize("page", ["/", "/docs", "/static/console.js", "/static/console.css"])
def test_pages_load_nothing_from_the_internet(http, page):
    response = http.get(page)
    assert response.status_code == 200
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", response.text)
    assert not re.search(r"https?://", response.text)  # no absolute URL of any kind


# ------------------------------------------------------------------------------- capabilities


def test_llm_chat_stream_chat_and_models(http):
    messages = [{"role": "ROLE_USER", "content": "hello"}]
    chat = http.post("/v1/llm:chat", json={"messages": messages, "maxTokens": 4, "seed": "7"})
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["completionTokens"] <= 4
    stream = http.post("/v1/llm:streamChat", json={"messages": messages, "maxTokens": 4, "temperature": 0})
    kinds = [next(iter(e)) for e in events_of(stream)]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert http.get("/v1/llm/models").json()["models"][0]["name"]
    invalid = http.post("/v1/llm:chat", json={"messages": []})
    assert invalid.status_code == 400
    assert invalid.json()["details"][-1]["fieldViolations"][0]["field"].startswith("messages")


def test_tts_synthesize_voices_and_scene(http):
    stream = http.post("/v1/tts:synthesize", json={"text": "Hello there.", "format": "AUDIO_FORMAT_WAV"})
    events = events_of(stream)
    audio = b"".join(base64.b64decode(e["chunk"]["data"]) for e in events if "chunk" in e)
    assert audio[:4] == b"RIFF"
    assert events[-1]["result"]["artifact"]["sizeBytes"] == str(len(audio))  # int64 is a string in proto3 JSON
    assert http.get("/v1/tts/voices").json()["voices"]
    scene = http.post(
        "/v1/tts:synthesizeScene",
        json={"segments": [{"speaker": "a", "text": "One."}, {"speaker": "b", "text": "Two."}]},
    )
    assert len(events_of(scene)[-1]["result"]["timings"]) == 2


def test_imagegen_generate(http):
    events = events_of(
        http.post(
            "/v1/imagegen:generate", json={"prompt": "a red square", "width": 16, "height": 16, "steps": 2, "seed": "1"}
        )
    )
    png = b"".join(base64.b64decode(e["chunk"]["data"]) for e in events if "chunk" in e)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert events[-1]["result"]["images"][0]["width"] == 16


# -------------------------------------------------------------------------------------- files


def test_files_upload_multipart_and_raw_then_download_with_ranges(http):
    content = bytes(range(256)) * 40
    uploaded = http.post(
        "/v1/files",
        files={"file": ("blob.bin", content, "application/octet-stream")},
        data={"labels": json.dumps({"purpose": "test"})},
    )
    assert uploaded.status_code == 201, uploaded.text
    info = uploaded.json()["file"]
    assert info["sizeBytes"] == str(len(content)) and info["labels"] == {"purpose": "test"}
    assert uploaded.headers["Location"] == f"/v1/files/{info['fileId']}"
    file_id = info["fileId"]

    whole = http.get(f"/v1/files/{file_id}:download")
    assert whole.status_code == 200 and whole.content == content
    assert whole.headers["content-length"] == str(len(content))
    assert whole.headers["accept-ranges"] == "bytes"

    part = http.get(f"/v1/files/{file_id}:download", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(content)}"
    suffix = http.get(f"/v1/files/{file_id}:download", headers={"Range": "bytes=-10"})
    assert suffix.content == content[-10:]
    outside = http.get(f"/v1/files/{file_id}:download", headers={"Range": f"bytes={len(content)}-"})
    assert outside.status_code == 416 and outside.headers["content-range"] == f"bytes */{len(content)}"
    head = http.head(f"/v1/files/{file_id}:download")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(content))

    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    raw = http.post("/v1/files?name=raw.png", content=png, headers={"Content-Type": "image/png"})
    assert raw.status_code == 201
    raw_id = raw.json()["file"]["fileId"]
    downloaded = http.get(f"/v1/files/{raw_id}:download")
    assert downloaded.headers["content-type"] == "image/png" and downloaded.content == png
    assert "raw.png" in downloaded.headers["content-disposition"]

    assert http.get(f"/v1/files/{file_id}").json()["file"]["sha256"]
    assert file_id in {f["fileId"] for f in http.get("/v1/files", params={"page_size": 100}).json()["files"]}
    assert http.delete(f"/v1/files/{file_id}").status_code == 200
    assert http.get(f"/v1/files/{file_id}:download").status_code == 404


def test_large_files_go_through_in_many_batches_and_pieces_byte_identical(http, monkeypatch):
    # Small batches and pieces, so that a file within the test limit (2 MiB) crosses many of them.
    monkeypatch.setattr("capmesh.gateway.server.files.store.FLUSH_BYTES", 64 * 1024)
    monkeypatch.setattr("capmesh.gateway.server.http.files.PIECE_BYTES", 100_003)
    content = hashlib.sha256(b"seed").digest() * 60_000  # 1.92 MB
    uploaded = http.post("/v1/files?name=big.bin", content=content, headers={"Content-Type": "application/x-big"})
    assert uploaded.status_code == 201, uploaded.text
    info = uploaded.json()["file"]
    assert (info["sizeBytes"], info["sha256"]) == (str(len(content)), hashlib.sha256(content).hexdigest())
    whole = http.get(f"/v1/files/{info['fileId']}:download")
    assert whole.content == content and whole.headers["content-length"] == str(len(content))
    across = http.get(f"/v1/files/{info['fileId']}:download", headers={"Range": "bytes=99990-300020"})
    assert across.status_code == 206 and across.content == content[99990:300021]
    assert http.delete(f"/v1/files/{info['fileId']}").status_code == 200


def test_upload_over_the_file_limit_is_413(http):
    too_big = b"\x00" * (2 * 1024 * 1024 + 1)
    response = http.post(
        "/v1/files?name=big.bin", content=too_big, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 413


# --------------------------------------------------------------------------------------- jobs


def submit(http, text: str, labels: dict[str, str]) -> dict:
    response = http.post("/v1/jobs", json={"method": TTS_METHOD, "request": {"text": text}, "labels": labels})
    assert response.status_code == 202, response.text
    operation = response.json()["operation"]
    assert response.headers["Location"] == f"/v1/{operation['name']}"
    return operation


def test_jobs_submit_get_list_events_and_cancel(http):
    operation = submit(http, "A job to watch.", {"characterId": "char_001"})
    job_id = operation["metadata"]["jobId"]
    events = events_of(http.get(f"/v1/jobs/{job_id}/events"))
    types = [e["event"]["type"] for e in events]
    assert types[0] == "JOB_EVENT_TYPE_QUEUED" and types[-1] == "JOB_EVENT_TYPE_SUCCEEDED"
    done = http.get(f"/v1/operations/{job_id}").json()
    assert done["done"] is True and done["response"]["@type"].endswith("capmesh.gateway.v1.JobResult")

    other = submit(http, "Another one.", {"characterId": "char_002"})
    listed = http.get("/v1/operations", params={"filter": 'labels.characterId="char_001"'}).json()["operations"]
    assert {o["name"] for o in listed} == {operation["name"]}
    cancelled = http.post(f"/v1/operations/{other['metadata']['jobId']}:cancel", json={})
    assert cancelled.status_code in (200, 400)  # 400 (FAILED_PRECONDITION) when it already finished
    assert http.get("/v1/operations/does-not-exist").status_code == 404


def test_job_events_resume_after_a_dropped_connection(http):
    job_id = submit(http, "First sentence. Second sentence. Third sentence.", {"test": "resume"})["metadata"]["jobId"]
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as first:
        lines = first.iter_lines()
        seen_ids = []
        for line in lines:
            if line.startswith("id:"):
                seen_ids.append(line[3:].strip())
                if len(seen_ids) == 2:
                    break
    # the connection dropped after two events; resume after the last id seen
    resumed = http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": seen_ids[-1]})
    resumed_events = sse_events(resumed.text)
    everything = sse_events(http.get(f"/v1/jobs/{job_id}/events").text)
    all_ids = [e["id"] for e in everything]
    assert [e["id"] for e in resumed_events] == all_ids[all_ids.index(seen_ids[-1]) + 1 :]
    assert all_ids[:2] == seen_ids
    assert json.loads(resumed_events[-1]["data"])["event"]["type"] == "JOB_EVENT_TYPE_SUCCEEDED"
