"""Talking-head progress as the seed reported it: its stages in order, one percent that never goes
back, `queued` with the queue position while a call waits, and `failed` before a failure status."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from capmesh.common.v1 import artifact_pb2
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.runtime.server import create_server
from capmesh.services.talkinghead.config import TalkingheadSettings
from capmesh.services.talkinghead.main import build_service
from capmesh.services.talkinghead.stages import FAILED, OverallProgress, stages_for
from capmesh.talkinghead.v1 import talkinghead_service_pb2 as pb
from capmesh.talkinghead.v1 import talkinghead_service_pb2_grpc as pb_grpc


@pytest.fixture
async def one_slot():
    running = await create_server(
        build_service(TalkingheadSettings(default_size=128, default_fps=10, max_concurrency=1, max_queue=2))
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield pb_grpc.TalkingHeadServiceStub(channel)
    await channel.close()
    await running.shutdown(grace_s=0)


def make_request(image: bytes, audio: bytes, **fields) -> pb.StreamGenerateTalkingHeadRequest:
    return pb.StreamGenerateTalkingHeadRequest(
        reference_image=artifact_pb2.Artifact(inline_data=image),
        audio=artifact_pb2.Artifact(inline_data=audio),
        **fields,
    )


async def progress_of(stub, request) -> list:
    return [m.progress async for m in stub.StreamGenerateTalkingHead(request) if m.HasField("progress")]


async def test_a_waiting_call_reports_its_place_then_the_seed_stages(one_slot, portrait_png, speech_wav):
    first, second = await asyncio.gather(
        progress_of(one_slot, make_request(portrait_png, speech_wav, seed=1)),
        progress_of(one_slot, make_request(portrait_png, speech_wav, seed=2)),
    )
    waited = first if any(p.stage == "queued" for p in first) else second
    assert [p.queue_position for p in waited if p.stage == "queued"] == [1]
    for progress in (first, second):
        stages = [p.stage for p in progress if p.stage != "queued"]
        assert list(dict.fromkeys(stages)) == list(stages_for(with_text=False))
        percents = [p.percent for p in progress]
        assert percents == sorted(percents) and percents[-1] == 100.0


async def test_failed_comes_before_the_failure_status(one_slot, speech_wav):
    call = one_slot.StreamGenerateTalkingHead(make_request(b"not an image", speech_wav))
    seen = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for message in call:
            seen.append(message.progress.stage)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert seen[0] == "processing" and seen[-1] == FAILED


async def test_text_without_a_gateway_is_unavailable_and_text_with_audio_is_invalid(one_slot, portrait_png, speech_wav):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await progress_of(one_slot, make_request(portrait_png, b"", text="hello"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await progress_of(one_slot, make_request(portrait_png, speech_wav, text="hello"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_overall_percent_gives_each_stage_its_share_and_never_goes_back():
    overall = OverallProgress(with_text=True)
    figures = [
        overall.overall(ProgressUpdate(stage, percent)).percent
        for stage, percent in [
            ("processing", 0),
            ("queued", 0),
            ("processing", 100),
            ("synthesizing", 50),
            ("downloading", 0),
            ("downloading", 100),
            ("face_detecting", 100),
            ("inference", 0),  # a stage starting again at 0 does not move the figure back
            ("inference", 50),
            ("merging_audio", 100),
            ("failed", 0),
            ("completed", 100),
        ]
    ]
    assert figures == sorted(figures) and figures[0] == 0.0 and figures[-1] == 100.0
    assert 40 < figures[8] < 70  # inference owns most of the bar


async def test_the_neural_engine_is_selected_by_the_engine_setting_and_reports_each_step(portrait_png, speech_wav):
    running = await create_server(build_service(TalkingheadSettings(engine="echomimic", default_size=64)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            messages = [
                m
                async for m in pb_grpc.TalkingHeadServiceStub(channel).StreamGenerateTalkingHead(
                    make_request(portrait_png, speech_wav, steps=3, guidance_scale=2.0, num_frames=2, seed=4)
                )
            ]
    finally:
        await running.shutdown(grace_s=0)
    progress = [m.progress for m in messages if m.HasField("progress")]
    assert [p.step for p in progress if p.stage == "inference" and p.step] == [1, 2, 3]
    percents = [p.percent for p in progress]
    assert percents == sorted(percents) and percents[-1] == 100.0
    result = messages[-1].result
    assert (result.num_frames, result.model, result.seed) == (2, "tiny", 4)
