"""ImageGenService through a real in-process grpc.aio server on port 0 (tiny Stable Diffusion, and openai)."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import grpc
import pytest
from PIL import Image

from capmesh.client import from_rpc_error, sync_channel
from capmesh.client.imagegen import ImageGenClient, images_request
from capmesh.imagegen.v1 import imagegen_service_pb2_grpc
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.main import build_service
from capmesh.services.runtime.server import create_server
from tests.support.fake_openai import FakeOpenAI, Reply


@pytest.fixture
async def serve():
    running_servers = []

    async def start(settings: ImagegenSettings):
        service = build_service(settings)
        running = await create_server(service)
        running_servers.append(running)
        return running, service.servicers[0][1].engine, grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")

    yield start
    for running in running_servers:
        await running.shutdown(grace_s=0)


async def test_n_pngs_stream_in_chunks_then_one_result(serve, tiny_sd):
    _, _, channel = await serve(ImagegenSettings(chunk_bytes=1024))
    stub = imagegen_service_pb2_grpc.ImageGenServiceStub(channel)
    messages = [
        m
        async for m in stub.StreamGenerateImages(
            images_request("a cat", width=40, height=32, steps=2, seed=9, num_images=2)
        )
    ]

    kinds = [m.WhichOneof("event") for m in messages]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    assert [m.progress.step for m in messages if kinds and m.progress.stage == "denoising"] == [1, 2]
    result = messages[-1].result
    assert (result.seed, result.steps, result.model) == (9, 2, "tiny")
    for image in result.images:
        data = b"".join(
            m.chunk.data for m in messages if m.WhichOneof("event") == "chunk" and m.chunk.index == image.index
        )
        assert len(data) == image.artifact.size_bytes
        assert Image.open(io.BytesIO(data)).size == (40, 32) == (image.width, image.height)
    await channel.close()


async def test_the_client_helper_returns_checked_pngs(serve, tiny_sd):
    running, _, channel = await serve(ImagegenSettings())
    await channel.close()

    def call():
        with sync_channel(f"127.0.0.1:{running.port}") as sync:
            return ImageGenClient(sync).generate("a dog", num_images=3, seed=1)

    images = await asyncio.to_thread(call)
    assert len(images.pngs) == 3 and all(png.startswith(b"\x89PNG") for png in images.pngs)


async def test_invalid_request_lists_every_bad_field(serve, tiny_sd):
    _, _, channel = await serve(ImagegenSettings(max_images=4))
    stub = imagegen_service_pb2_grpc.ImageGenServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        [m async for m in stub.StreamGenerateImages(images_request("", width=30, steps=0, num_images=5))]
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {field for field, _ in error.field_violations} == {"prompt", "width", "steps", "num_images"}
    await channel.close()


async def test_cancel_reaches_the_pipeline_at_the_next_step(serve, tiny_sd):
    running, engine, channel = await serve(ImagegenSettings())
    unet = engine.models.ensure_loaded().handle.unet
    calls = []

    def slow_step(*_) -> None:  # a real hook: each UNet call takes a while, and is counted
        calls.append(1)
        time.sleep(0.03)

    hook = unet.register_forward_pre_hook(slow_step)
    stub = imagegen_service_pb2_grpc.ImageGenServiceStub(channel)
    try:
        call = stub.StreamGenerateImages(images_request("a cat", steps=100))
        async for message in call:
            if message.WhichOneof("event") == "progress" and message.progress.stage == "denoising":
                break
        call.cancel()
        assert await running.service.runtime.admission.wait_idle(5.0)
        assert len(calls) <= 3
    finally:
        hook.remove()
    messages = [m async for m in stub.StreamGenerateImages(images_request("a cat"))]
    assert len(messages[-1].result.images) == 1
    await channel.close()


async def test_openai_engine_serves_the_same_contract(serve):
    def answer(request):
        buffer = io.BytesIO()
        Image.new("RGB", (24, 16)).save(buffer, format="PNG")
        item = {"b64_json": base64.b64encode(buffer.getvalue()).decode()}
        return Reply.json(200, {"data": [item] * request.body["n"]})

    with FakeOpenAI() as api:
        api.route("/v1/images/generations", answer)
        _, _, channel = await serve(ImagegenSettings(engine="openai", openai_base_url=api.base_url))
        stub = imagegen_service_pb2_grpc.ImageGenServiceStub(channel)
        messages = [m async for m in stub.StreamGenerateImages(images_request("a fox", num_images=2))]
        result = messages[-1].result
        assert [(i.width, i.height) for i in result.images] == [(24, 16), (24, 16)]
        assert (result.model, result.seed) == ("gpt-image-1", 0)
        await channel.close()
