"""Job events over WebSocket (issue 16): `GET /v1/jobs/{id}/events` upgraded to a WebSocket sends
the SSE route's events and resumes by event id the same way; `/v1/jobs:events` follows many jobs on
one socket. A real gateway process and a real stepper backend process."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.defects.support import gateway_process
from tests.jobs.support import Client, eventually, start_stepper_process, write_backends


@pytest.fixture
async def jobs_mesh(tmp_path):
    stepper, stepper_address = start_stepper_process(step_s=0.02, max_concurrency=4)
    backends = write_backends(tmp_path / "backends.json", [stepper_address], 4)
    gateway, address, http = gateway_process(backends_file=backends, files_dir=tmp_path / "files")
    client = Client.connect(address)
    try:
        await eventually(lambda: client.available_backends("tts"), what="the stepper AVAILABLE")
        yield client, http
    finally:
        await client.close()
        gateway.kill()
        stepper.kill()


async def _frames(url: str, **headers: str) -> tuple[list[dict], int | None]:
    """Every frame of a socket until the server closes it, and its close code."""
    frames = []
    async with connect(url, additional_headers=headers, open_timeout=30) as socket:
        try:
            while True:
                frames.append(json.loads(await socket.recv()))
        except ConnectionClosed:
            pass
        return frames, socket.close_code


def _sse(http: str, job_id: str, last_event_id: str = "") -> list[dict]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with httpx.stream("GET", f"{http}/v1/jobs/{job_id}/events", headers=headers, timeout=60) as answer:
        assert answer.status_code == 200
        return [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: ")]


def _types(frames: list[dict]) -> list[str]:
    return [f["event"]["type"].removeprefix("JOB_EVENT_TYPE_") for f in frames]


async def test_one_jobs_events_over_a_websocket_match_sse_and_resume(jobs_mesh) -> None:
    client, http = jobs_mesh
    ws = http.replace("http://", "ws://", 1)
    job_id = await client.submit("steps:5")
    frames, code = await _frames(f"{ws}/v1/jobs/{job_id}/events")
    assert code == 1000  # closed normally once the job ended
    assert _types(frames)[0] == "QUEUED" and _types(frames)[-1] == "SUCCEEDED" and "PROGRESS" in _types(frames)
    assert {f["event"]["jobId"] for f in frames} == {job_id}
    assert frames == _sse(http, job_id)  # the same events as the SSE route, frame for frame

    middle = frames[2]["event"]["eventId"]
    resumed, _ = await _frames(f"{ws}/v1/jobs/{job_id}/events", **{"Last-Event-ID": middle})
    assert resumed == frames[3:] == _sse(http, job_id, middle)
    by_query, _ = await _frames(f"{ws}/v1/jobs/{job_id}/events?after={middle}")
    assert by_query == frames[3:]

    unknown, code = await _frames(f"{ws}/v1/jobs/no-such-job/events")
    assert code == 4404 and unknown[0]["error"]["status"] == "NOT_FOUND"


async def test_many_jobs_on_one_socket(jobs_mesh) -> None:
    client, http = jobs_mesh
    ws = http.replace("http://", "ws://", 1)
    first, second = await client.submit("steps:20"), await client.submit("steps:3")
    ended: dict[str, list[dict]] = {}
    events: dict[str, list[dict]] = {first: [], second: []}
    errors = []
    async with connect(f"{ws}/v1/jobs:events?ids={first}", open_timeout=30) as socket:
        await socket.send(json.dumps({"subscribe": second}))
        await socket.send(json.dumps({"subscribe": "no-such-job"}))
        await socket.send("not json")
        while len(ended) < 2 or len(errors) < 2:
            frame = json.loads(await socket.recv())
            if frame.get("end"):
                ended[frame["jobId"]] = events[frame["jobId"]]
            elif "event" in frame:
                events[frame["event"]["jobId"]].append(frame)
            else:
                errors.append(frame)
        # a job followed again from an event id resumes after it
        await socket.send(json.dumps({"subscribe": second, "after": events[second][1]["event"]["eventId"]}))
        again = []
        while not (frame := json.loads(await socket.recv())).get("end"):
            again.append(frame)
    assert _types(ended[first])[-1] == "SUCCEEDED" and _types(ended[second])[-1] == "SUCCEEDED"
    assert ended[first] == _sse(http, first) and ended[second] == _sse(http, second)
    assert again == events[second][2:]
    assert {e.get("jobId") for e in errors} == {"no-such-job", None}
    assert next(e for e in errors if e.get("jobId"))["error"]["status"] == "NOT_FOUND"


async def test_a_socket_needs_the_key_the_http_routes_need(tmp_path) -> None:
    gateway, _, http = gateway_process(files_dir=tmp_path / "files", api_keys="k1")
    try:
        ws = http.replace("http://", "ws://", 1)
        with pytest.raises(InvalidStatus) as refused:
            await _frames(f"{ws}/v1/jobs/some-job/events")
        assert refused.value.response.status_code == 403  # closed before the upgrade
        with pytest.raises(InvalidStatus):
            await _frames(f"{ws}/v1/jobs:events", Authorization="Bearer wrong")
        frames, code = await _frames(f"{ws}/v1/jobs/no-such-job/events", Authorization="Bearer k1")
        assert code == 4404 and frames[0]["error"]["status"] == "NOT_FOUND"  # admitted: the job service answered
    finally:
        gateway.kill()
