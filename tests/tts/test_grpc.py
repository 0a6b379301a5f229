"""TtsService through a real in-process grpc.aio server on port 0, on the espeak-ng engine."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import grpc
import pytest

from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.client import aio_channel, from_rpc_error
from capmesh.common.v1 import model_pb2
from capmesh.services.runtime.server import CapabilityService, create_server
from capmesh.services.tts.backend import SpeechBackend
from capmesh.services.tts.config import TtsSettings
from capmesh.services.tts.main import build_service
from capmesh.tts.v1 import tts_service_pb2 as pb
from capmesh.tts.v1 import tts_service_pb2_grpc as pb_grpc

from .conftest import decode_with_pyav

LONG_TEXT = " ".join(f"Sentence number {i}." for i in range(200))  # 200 sentences, under 5000 characters


class CountingBackend(SpeechBackend):
    """The real espeak backend, counting the sentences it renders (to see where cancel stopped it)."""

    def __init__(self, inner: SpeechBackend) -> None:
        super().__init__(inner.models)
        self.inner = inner
        self.name, self.speed_range = inner.name, inner.speed_range
        self.supports_pitch, self.renders_volume = inner.supports_pitch, inner.renders_volume
        self.rendered = 0

    def catalog(self):
        return self.inner.catalog()

    def default_voice(self):
        return self.inner.default_voice()

    def native_sample_rate(self, model):
        return self.inner.native_sample_rate(model)

    def render(self, model, text, voice, options, cancel):
        self.rendered += 1
        return self.inner.render(model, text, voice, options, cancel)


@dataclass
class Harness:
    stub: pb_grpc.TtsServiceStub
    counting: CountingBackend
    service: CapabilityService
    channel: grpc.aio.Channel


@pytest.fixture
async def tts():
    service = build_service(TtsSettings(max_concurrency=2, max_queue=2, grace_period_s=1))
    servicer = service.servicers[0][1]
    counting = CountingBackend(servicer.engine.backend)
    servicer.engine.backend = counting
    running = await create_server(service)
    channel = aio_channel(f"127.0.0.1:{running.port}")
    yield Harness(pb_grpc.TtsServiceStub(channel), counting, service, channel)
    await channel.close()
    await running.shutdown(grace_s=0)


async def collect(call):
    kinds, chunks, progress, result = [], [], [], None
    async for message in call:
        kind = message.WhichOneof("event")
        kinds.append(kind)
        if kind == "chunk":
            chunks.append(message.chunk)
        elif kind == "progress":
            progress.append(message.progress)
        else:
            result = message.result
    return kinds, chunks, progress, result


async def rpc_error(call_factory):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(call_factory())
    return from_rpc_error(caught.value)


async def test_stream_synthesize_streams_sentences_then_one_result(tts):
    stub = tts.stub
    request = pb.StreamSynthesizeRequest(text="Hello there. How are you today? Fine, thanks.", seed=3)
    kinds, chunks, progress, result = await collect(stub.StreamSynthesize(request))
    assert kinds.count("result") == 1 and kinds[-1] == "result"
    assert [c.part_index for c in chunks] == [0, 1, 2]
    assert [c.offset for c in chunks] == [0, len(chunks[0].data), len(chunks[0].data) + len(chunks[1].data)]
    assert [(p.step, p.total_steps) for p in progress if p.stage == "synthesizing"] == [(1, 3), (2, 3), (3, 3)]
    data = b"".join(c.data for c in chunks)
    with wave.open(io.BytesIO(data)) as reader:
        frames = len(reader.readframes(10**9)) // 2
        assert reader.getframerate() == result.sample_rate == 22050
    assert result.format == pb.AUDIO_FORMAT_WAV and result.artifact.mime_type == "audio/wav"
    assert result.artifact.size_bytes == len(data) and result.sentence_count == 3
    assert result.duration_seconds == pytest.approx(frames / 22050)
    assert (result.voice, result.seed) == ("en-us", 3)


async def test_compressed_format_speed_and_rate_through_grpc(tts):
    stub = tts.stub
    request = pb.StreamSynthesizeRequest(
        text="Compressed audio. Two sentences.", format=pb.AUDIO_FORMAT_MP3, speed=1.2, volume=0.8, sample_rate=16000
    )
    _, chunks, _, result = await collect(stub.StreamSynthesize(request))
    decoded = decode_with_pyav(b"".join(c.data for c in chunks))
    assert result.artifact.mime_type == "audio/mpeg" and result.sample_rate == decoded.sample_rate == 16000
    assert decoded.duration_s == pytest.approx(result.duration_seconds, abs=0.1)


async def test_invalid_requests_are_invalid_argument_with_field_violations(tts):
    stub, counting = tts.stub, tts.counting
    error = await rpc_error(
        lambda: stub.StreamSynthesize(pb.StreamSynthesizeRequest(text="", voice="klingon", speed=9.0, volume=3.0))
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = dict(error.field_violations)
    assert set(fields) == {"text", "voice", "speed", "volume"} and "capmesh tts --voices" in fields["voice"]
    error = await rpc_error(lambda: stub.StreamSynthesize(pb.StreamSynthesizeRequest(text="Hi.", format=99)))
    assert (error.code, [f for f, _ in error.field_violations]) == (grpc.StatusCode.INVALID_ARGUMENT, ["format"])
    error = await rpc_error(lambda: stub.StreamSynthesize(pb.StreamSynthesizeRequest(text="x" * 5001)))
    assert error.field_violations == [("text", "has 5001 characters; the limit is 5000")]
    error = await rpc_error(
        lambda: stub.StreamSynthesizeScene(
            pb.StreamSynthesizeSceneRequest(
                segments=[pb.SceneSegment(text="ok"), pb.SceneSegment(text="", pause_after_seconds=11, speed=0.1)]
            )
        )
    )
    assert {f for f, _ in error.field_violations} == {
        "segments[1].text",
        "segments[1].pause_after_seconds",
        "segments[1].speed",
    }
    assert counting.rendered == 0


async def test_list_voices_sorted_and_filtered(tts):
    stub = tts.stub
    everything = (await stub.ListVoices(pb.ListVoicesRequest())).voices
    ids = [v.id for v in everything]
    assert ids == sorted(ids) and "en-us" in ids and len(ids) > 50
    french = (await stub.ListVoices(pb.ListVoicesRequest(language="fr"))).voices
    assert french and all(any(lang.startswith("fr") for lang in v.languages) for v in french)
    assert {v.gender for v in everything} <= {"male", "female", ""}


async def test_scene_timings_and_segment_chunks(tts):
    stub = tts.stub
    pauses = [0.4, 0.0, 0.25]
    request = pb.StreamSynthesizeSceneRequest(
        segments=[
            pb.SceneSegment(speaker="Ann", text="Hello Bob. Nice day.", voice="en-us", pause_after_seconds=pauses[0]),
            pb.SceneSegment(speaker="Bob", text="It is.", voice="en-gb", speed=1.5),
            pb.SceneSegment(speaker="Ann", text="Let us go.", pause_after_seconds=pauses[2]),
        ]
    )
    kinds, chunks, progress, result = await collect(stub.StreamSynthesizeScene(request))
    assert kinds[-1] == "result" and kinds.count("result") == 1
    timings = result.timings
    audio = result.audio
    with wave.open(io.BytesIO(b"".join(c.data for c in chunks))) as reader:
        duration = len(reader.readframes(10**9)) / 2 / reader.getframerate()
    assert audio.duration_seconds == pytest.approx(duration)
    assert [t.speaker for t in timings] == ["Ann", "Bob", "Ann"] and timings[0].start_seconds == 0.0
    for before, after, pause in zip(timings, timings[1:], pauses):
        assert after.start_seconds == pytest.approx(before.end_seconds + pause, abs=1e-4)
    assert timings[-1].end_seconds + pauses[-1] == pytest.approx(duration, abs=1e-4)
    assert sorted({c.part_index for c in chunks}) == [0, 1, 2], "scene chunks carry the segment index"
    steps = [(p.step, p.total_steps) for p in progress if p.stage == "synthesizing"]
    assert steps[-1] == (3, 3) and audio.sentence_count == 4


async def test_cancel_reaches_the_engine_before_the_next_sentence(tts):
    stub, counting, service = tts.stub, tts.counting, tts.service
    call = stub.StreamSynthesize(pb.StreamSynthesizeRequest(text=LONG_TEXT))
    async for message in call:
        if message.WhichOneof("event") == "chunk":
            break
    call.cancel()
    assert await service.runtime.admission.wait_idle(5.0), "the engine stopped and gave its slot back"
    assert counting.rendered < 50, f"rendered {counting.rendered} of 200 sentences after the cancel"


async def test_deadline_reaches_the_engine(tts):
    stub, counting, service = tts.stub, tts.counting, tts.service
    error = await rpc_error(lambda: stub.StreamSynthesize(pb.StreamSynthesizeRequest(text=LONG_TEXT), timeout=0.3))
    assert error.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await service.runtime.admission.wait_idle(5.0)
    assert counting.rendered < 200


async def test_admin_status_reports_the_espeak_model(tts):
    await collect(tts.stub.StreamSynthesize(pb.StreamSynthesizeRequest(text="Hi.")))
    admin = admin_service_pb2_grpc.AdminServiceStub(tts.channel)
    status = await admin.GetServiceStatus(admin_service_pb2.GetServiceStatusRequest())
    assert (status.capability, status.engine) == ("tts", "espeak")
    (model,) = status.models
    assert model.name == "espeak-ng" and model.state == model_pb2.MODEL_STATE_LOADED and not model.random_weights


def test_build_service_names_the_tts_service():
    service = build_service(TtsSettings())
    assert service.capability == "tts" and service.service_names == ["capmesh.tts.v1.TtsService"]
    assert service.engine_name == "espeak" and service.models is not None
