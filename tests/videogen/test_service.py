"""VideoGenService through a real in-process grpc.aio server on port 0, on the tiny Wan checkpoint."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.client import from_rpc_error
from capmesh.client.videogen import VideoGenClient, video_request
from capmesh.common.v1 import artifact_pb2
from capmesh.services.runtime.server import create_server
from capmesh.services.videogen.config import VideogenSettings
from capmesh.services.videogen.main import build_service
from capmesh.videogen.v1 import videogen_service_pb2_grpc
from tests.support.video import probe_mp4
from tests.videogen.conftest import png_bytes


@pytest.fixture
async def server(tiny_wan):
    service = build_service(VideogenSettings(max_queue=2, grace_period_s=1))
    running = await create_server(service)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, service.servicers[0][1].engine, channel
    await channel.close()
    await running.shutdown(grace_s=0)


def small(**fields):
    values = dict(width=32, height=32, num_frames=5, steps=2, seed=1)
    values.update(fields)
    return video_request(png_bytes(), "a cat walks", **values)


async def test_stream_sends_progress_then_the_mp4_then_one_result(server):
    _, _, channel = server
    stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)
    messages = [m async for m in stub.StreamGenerateVideo(small(width=48, num_frames=9, fps=12))]

    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert kinds.index("chunk") > max(i for i, k in enumerate(kinds) if k == "progress")
    progress = [m.progress for m in messages if m.WhichOneof("event") == "progress"]
    denoising = [p for p in progress if p.stage == "denoising"]
    assert [p.step for p in denoising] == [1, 2]
    mp4 = b"".join(m.chunk.data for m in messages if m.WhichOneof("event") == "chunk")
    probe, _ = probe_mp4(mp4, decode_frames=False)
    result = messages[-1].result
    assert (probe.frame_count, probe.width, probe.height, probe.fps) == (9, 48, 32, 12.0)
    assert (result.num_frames, result.width, result.height, result.fps) == (9, 48, 32, 12.0)
    assert (result.artifact.mime_type, result.artifact.size_bytes, result.seed, result.steps, result.model) == (
        "video/mp4",
        len(mp4),
        1,
        2,
        "tiny",
    )


async def test_the_client_helper_checks_the_mp4_against_the_result(server):
    running, _, _ = server
    from capmesh.client import sync_channel

    def call():
        with sync_channel(f"127.0.0.1:{running.port}") as channel:
            progress = []
            video = VideoGenClient(channel).generate(
                png_bytes(), "a dog", width=32, height=32, num_frames=5, steps=2, on_progress=progress.append
            )
            return video, progress

    video, progress = await asyncio.to_thread(call)
    assert video.result.num_frames == 5 and video.mp4[4:8] == b"ftyp"
    assert progress[-1].percent == 100


async def test_invalid_request_lists_every_bad_field(server):
    _, _, channel = server
    stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)
    request = small(num_frames=8, width=40, steps=0)
    request.image.CopyFrom(artifact_pb2.Artifact())  # no image at all

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamGenerateVideo(request)]

    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = dict(error.field_violations)
    assert set(fields) == {"image", "num_frames", "width", "steps"}
    assert "4k+1" in fields["num_frames"] and "multiple of 16" in fields["width"]


async def test_an_undecodable_image_is_invalid_argument(server):
    _, _, channel = server
    stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)
    request = small()
    request.image.inline_data = b"GIF89a but not really"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamGenerateVideo(request)]
    assert from_rpc_error(caught.value).field_violations[0][0] == "image"


class SlowDenoiser:
    """Makes each denoising step take a while (a real forward hook), and counts the steps run."""

    def __init__(self, engine, seconds: float = 0.03) -> None:
        self.calls = 0
        pipeline = engine.models.ensure_loaded().handle
        self._handle = pipeline.transformer.register_forward_pre_hook(self._slow_down)
        self._seconds = seconds

    def _slow_down(self, *_):
        self.calls += 1
        time.sleep(self._seconds)

    def remove(self):
        self._handle.remove()


async def test_cancel_reaches_the_pipeline_at_the_next_step_and_the_service_stays_ready(server):
    running, engine, channel = server
    slow = SlowDenoiser(engine)
    stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)
    try:
        call = stub.StreamGenerateVideo(small(steps=100, guidance_scale=1.0))
        async for message in call:
            if message.WhichOneof("event") == "progress" and message.progress.stage == "denoising":
                break
        call.cancel()
        assert await running.service.runtime.admission.wait_idle(5.0)
        assert slow.calls <= 3  # the step running when the cancel arrived, at most one more
    finally:
        slow.remove()
    messages = [m async for m in stub.StreamGenerateVideo(small())]
    assert messages[-1].result.num_frames == 5


async def test_a_deadline_stops_the_pipeline(server):
    running, engine, channel = server
    slow = SlowDenoiser(engine)
    stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            [m async for m in stub.StreamGenerateVideo(small(steps=100, guidance_scale=1.0), timeout=0.5)]
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await running.service.runtime.admission.wait_idle(5.0)
        assert slow.calls < 50
    finally:
        slow.remove()


async def test_admin_reports_the_random_weight_model_and_unloads_it(server):
    _, _, channel = server
    stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)
    [m async for m in stub.StreamGenerateVideo(small())]
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)

    status = await admin.GetServiceStatus(admin_service_pb2.GetServiceStatusRequest())
    assert (status.capability, status.engine) == ("videogen", "diffusers")
    [model] = status.models
    assert model.name == "tiny" and model.random_weights and model.memory_bytes > 0
    assert model.details["pipeline"] == "WanImageToVideoPipeline"

    unloaded = await admin.UnloadModels(admin_service_pb2.UnloadModelsRequest())
    assert list(unloaded.unloaded) == ["tiny"] and unloaded.models[0].memory_bytes == 0
