"""TalkingHeadService through a real in-process grpc.aio server on port 0."""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest

from capmesh.client import from_rpc_error
from capmesh.common.v1 import artifact_pb2
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.runtime.server import create_server
from capmesh.services.talkinghead.config import TalkingheadSettings
from capmesh.services.talkinghead.main import build_service
from capmesh.services.talkinghead.stages import stages_for
from capmesh.talkinghead.v1 import talkinghead_service_pb2 as pb
from capmesh.talkinghead.v1 import talkinghead_service_pb2_grpc as pb_grpc
from tests.support.video import probe_mp4
from tests.talkinghead.media_fixtures import encode_image, wav_bytes


class RecordingEngine:
    """The real engine, with a record of how far each call got (to see cancellation arrive)."""

    def __init__(self, engine) -> None:
        self._engine = engine
        self.frames_done = 0
        self.stopped = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._engine, name)  # everything but `generate` is the real engine's

    def generate(self, request, cancel, emit):
        self.frames_done = 0
        self.stopped.clear()

        def record(item):
            if isinstance(item, ProgressUpdate) and item.stage == "inference":
                self.frames_done = item.step
            emit(item)

        try:
            return self._engine.generate(request, cancel, record)
        finally:
            self.stopped.set()


@pytest.fixture
async def server():
    service = build_service(TalkingheadSettings(default_size=256, default_fps=12, max_concurrency=2))
    servicer = service.servicers[0][1]
    servicer.engine = RecordingEngine(servicer.engine)
    running = await create_server(service)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield pb_grpc.TalkingHeadServiceStub(channel), servicer.engine
    await channel.close()
    await running.shutdown(grace_s=0)


def inline(data: bytes) -> artifact_pb2.Artifact:
    return artifact_pb2.Artifact(inline_data=data)


def make_request(image: bytes, audio: bytes, **fields) -> pb.StreamGenerateTalkingHeadRequest:
    return pb.StreamGenerateTalkingHeadRequest(reference_image=inline(image), audio=inline(audio), **fields)


async def failure(stub, request):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamGenerateTalkingHead(request)]
    return from_rpc_error(caught.value)


async def test_streams_stages_then_the_mp4_then_one_result(server, portrait_png, speech_wav):
    stub, _ = server
    messages = [m async for m in stub.StreamGenerateTalkingHead(make_request(portrait_png, speech_wav, seed=5))]

    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert kinds.index("chunk") > max(i for i, k in enumerate(kinds) if k == "progress")
    progress = [m.progress for m in messages if m.HasField("progress")]
    assert list(dict.fromkeys(p.stage for p in progress)) == list(stages_for(with_text=False))
    percents = [p.percent for p in progress]
    assert percents == sorted(percents) and percents[-1] == 100.0  # one overall figure, never back
    mp4 = b"".join(m.chunk.data for m in messages if m.HasField("chunk"))
    result = messages[-1].result
    assert (result.artifact.size_bytes, result.artifact.mime_type, result.seed, result.model) == (
        len(mp4),
        "video/mp4",
        5,
        "portrait-haar",
    )
    probe, _ = probe_mp4(mp4, decode_frames=False)
    assert (probe.frame_count, probe.width, probe.height) == (result.num_frames, 256, 256)
    assert probe.fps == pytest.approx(12) == pytest.approx(result.fps)
    assert result.faces_found == 1 and result.face_box.width > 50


async def test_missing_inputs_and_bad_numbers_are_field_violations(server):
    stub, _ = server
    request = pb.StreamGenerateTalkingHeadRequest(fps=1000, num_frames=-1, steps=0)
    error = await failure(stub, request)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in error.field_violations} == {"reference_image", "audio", "fps", "num_frames", "steps"}


async def test_inputs_that_do_not_decode_are_field_violations(server):
    stub, _ = server
    error = await failure(stub, make_request(b"GIF89a nonsense", b"RIFF nonsense"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in error.field_violations} == {"reference_image", "audio"}


async def test_file_ids_need_a_gateway(server, speech_wav):
    stub, _ = server
    request = pb.StreamGenerateTalkingHeadRequest(
        reference_image=artifact_pb2.Artifact(file_id="f-1"), audio=inline(speech_wav)
    )
    error = await failure(stub, request)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in error.field_violations] == ["reference_image.file_id"]


async def test_no_face_is_failed_precondition(server, speech_wav):
    stub, _ = server
    blank = encode_image(np.full((200, 200, 3), 128, dtype=np.uint8))
    error = await failure(stub, make_request(blank, speech_wav))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_FACE_DETECTED")


@pytest.fixture(scope="module")
def long_speech(speech) -> bytes:
    samples, rate = speech
    return wav_bytes(np.tile(samples, 4), rate)


async def test_cancel_reaches_the_engine_before_the_next_frame(server, portrait_png, long_speech):
    stub, engine = server
    call = stub.StreamGenerateTalkingHead(make_request(portrait_png, long_speech, fps=25))
    async for message in call:
        if message.progress.stage == "inference" and message.progress.step >= 1:
            total = message.progress.total_steps
            break
    call.cancel()
    assert await asyncio.to_thread(engine.stopped.wait, 5.0)
    assert engine.frames_done < total


async def test_deadline_reaches_the_engine(server, portrait_png, long_speech):
    stub, engine = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamGenerateTalkingHead(make_request(portrait_png, long_speech, fps=60), timeout=0.3)]
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await asyncio.to_thread(engine.stopped.wait, 5.0)
