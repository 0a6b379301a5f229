"""Talking heads on real processes: `capmesh up --only tts --only talkinghead` (gateway, TTS, talking head).

A request with text instead of audio has the talking-head service speak it through the gateway's
TTS capability; the stream reports the seed's stages (with `synthesizing`) and one percent that
never goes back, directly and as a job; `capmesh talk --text` makes the same call.
"""

from __future__ import annotations

import os
import subprocess
import sys

import grpc
import pytest

from capmesh.client import from_rpc_error, sync_channel
from capmesh.common.v1 import artifact_pb2
from capmesh.gateway.v1 import job_service_pb2 as jobs_pb
from capmesh.gateway.v1 import job_service_pb2_grpc as jobs_grpc
from capmesh.services.talkinghead.stages import FAILED, stages_for
from capmesh.talkinghead.v1 import talkinghead_service_pb2 as pb
from capmesh.talkinghead.v1 import talkinghead_service_pb2_grpc as pb_grpc
from tests.support.processes import capmesh_up
from tests.support.video import probe_mp4

pytestmark = pytest.mark.e2e

METHOD = "/capmesh.talkinghead.v1.TalkingHeadService/StreamGenerateTalkingHead"
TEXT = "Hello, I am a talking head."
CALL_TIMEOUT_S = 240.0  # two shared CPU cores: espeak, face detection and encoding take their time


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> str:
    env = {**os.environ, "CAPMESH_TALKINGHEAD_DEFAULT_SIZE": "128", "CAPMESH_TALKINGHEAD_DEFAULT_FPS": "10"}
    with capmesh_up(["--only", "tts", "--only", "talkinghead"], tmp_path_factory.mktemp("th-logs"), env) as table:
        assert {"tts", "talkinghead"} <= set(table), table
        yield table["gateway (gRPC)"]


def text_request(portrait_png: bytes, **fields) -> pb.StreamGenerateTalkingHeadRequest:
    return pb.StreamGenerateTalkingHeadRequest(
        reference_image=artifact_pb2.Artifact(inline_data=portrait_png), text=TEXT, seed=3, **fields
    )


def assert_monotonic_stages(progress, with_text: bool) -> None:
    stages = [p.stage for p in progress if p.stage != "queued"]
    assert list(dict.fromkeys(stages)) == list(stages_for(with_text))
    percents = [p.percent for p in progress]
    assert percents == sorted(percents), percents
    assert percents[-1] == 100.0


def test_text_is_spoken_by_tts_through_the_gateway(gateway, portrait_png):
    with sync_channel(gateway) as channel:
        messages = list(
            pb_grpc.TalkingHeadServiceStub(channel).StreamGenerateTalkingHead(
                text_request(portrait_png), timeout=CALL_TIMEOUT_S
            )
        )
    assert_monotonic_stages([m.progress for m in messages if m.HasField("progress")], with_text=True)
    result = messages[-1].result
    mp4 = b"".join(m.chunk.data for m in messages if m.HasField("chunk"))
    probe, _ = probe_mp4(mp4, decode_frames=False)
    assert probe.frame_count == result.num_frames > 0
    assert result.audio_duration_seconds > 0.5  # espeak spoke the sentence


def test_audio_and_text_together_are_refused_before_the_first_message(gateway, portrait_png, speech_wav):
    request = text_request(portrait_png, audio=artifact_pb2.Artifact(inline_data=speech_wav))
    seen = []
    with sync_channel(gateway) as channel, pytest.raises(grpc.RpcError) as caught:
        for message in pb_grpc.TalkingHeadServiceStub(channel).StreamGenerateTalkingHead(request, timeout=60):
            seen.append(message.progress.stage)
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in error.field_violations] == ["text"]
    assert seen == []  # so that the HTTP bridge can still answer 400


def test_a_failure_after_the_start_reports_failed_before_the_status(gateway, speech_wav):
    request = pb.StreamGenerateTalkingHeadRequest(
        reference_image=artifact_pb2.Artifact(inline_data=b"not an image"),
        audio=artifact_pb2.Artifact(inline_data=speech_wav),
    )
    seen = []
    with sync_channel(gateway) as channel, pytest.raises(grpc.RpcError) as caught:
        for message in pb_grpc.TalkingHeadServiceStub(channel).StreamGenerateTalkingHead(request, timeout=60):
            seen.append(message.progress.stage)
    assert from_rpc_error(caught.value).code == grpc.StatusCode.INVALID_ARGUMENT
    assert seen[0] == "processing" and seen[-1] == FAILED


def test_an_unknown_voice_is_the_callers_mistake(gateway, portrait_png):
    with sync_channel(gateway) as channel, pytest.raises(grpc.RpcError) as caught:
        list(
            pb_grpc.TalkingHeadServiceStub(channel).StreamGenerateTalkingHead(
                text_request(portrait_png, voice="no-such-voice"), timeout=60
            )
        )
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "voice" in {field for field, _ in error.field_violations}


def test_text_as_a_job_with_monotonic_job_progress(gateway, portrait_png):
    request = jobs_pb.SubmitJobRequest(method=METHOD)
    request.request.Pack(text_request(portrait_png))
    with sync_channel(gateway) as channel:
        stub = jobs_grpc.JobServiceStub(channel)
        operation = stub.SubmitJob(request, timeout=30).operation
        job_id = operation.name.split("/")[-1]
        events = []
        for response in stub.WatchJob(jobs_pb.WatchJobRequest(job_id=job_id), timeout=CALL_TIMEOUT_S):
            events.append(response.event)
            if response.event.type in (
                jobs_pb.JOB_EVENT_TYPE_SUCCEEDED,
                jobs_pb.JOB_EVENT_TYPE_FAILED,
                jobs_pb.JOB_EVENT_TYPE_CANCELLED,
            ):
                break
    last = events[-1]
    assert last.type == jobs_pb.JOB_EVENT_TYPE_SUCCEEDED, last
    progress = [e.progress for e in events if e.type == jobs_pb.JOB_EVENT_TYPE_PROGRESS]
    assert "synthesizing" in {p.stage for p in progress}
    percents = [p.percent for p in progress]
    assert percents == sorted(percents), percents
    result = pb.TalkingHeadResult()
    assert last.result.response.Unpack(result) and result.num_frames > 0
    assert [a.mime_type for a in last.result.artifacts] == ["video/mp4"]


def test_capmesh_talk_with_text_makes_one_call(gateway, portrait_png, tmp_path):
    face = tmp_path / "face.png"
    face.write_bytes(portrait_png)
    output = tmp_path / "talk.mp4"
    talk = [sys.executable, "-m", "capmesh.cli.main", "talk", str(face), "--text", TEXT, "-o", str(output)]
    done = subprocess.run(
        [*talk, "--address", gateway],
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    probe, _ = probe_mp4(output.read_bytes(), decode_frames=False)
    assert probe.frame_count > 0
