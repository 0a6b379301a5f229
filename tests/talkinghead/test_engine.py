"""The default portrait engine end to end: real portrait, espeak-ng speech, decoded mp4."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import Cancelled, FailedPrecondition, InvalidArgument
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.talkinghead.config import TalkingheadSettings
from capmesh.services.talkinghead.domain import TalkingHeadRequest
from capmesh.services.talkinghead.engine import STAGES, PortraitEngine
from tests.support.video import probe_mp4
from tests.talkinghead.conftest import SILENCE_S
from tests.talkinghead.media_fixtures import astronaut, encode_audio, encode_image

SIZE = 256
FPS = 12
ASTRONAUT_FACE_CENTRE = (223, 113)  # in the 512x512 original


def run(engine, request, cancel=None):
    events: list[object] = []
    result = engine.generate(request, cancel or CancelToken.never(), events.append)
    return result, [e for e in events if isinstance(e, ProgressUpdate)]


def small(portrait: bytes, audio: bytes, **overrides) -> TalkingHeadRequest:
    fields = dict(reference_image=portrait, audio=audio, width=SIZE, height=SIZE, fps=FPS, seed=7)
    fields.update(overrides)
    return TalkingHeadRequest(**fields)


def test_finds_the_face_and_writes_the_requested_video(engine, portrait_png, silence_then_speech):
    audio, duration = silence_then_speech
    result, _progress = run(engine, small(portrait_png, audio))

    assert result.faces_found == 1
    box = result.face_box
    assert abs(box.x + box.width / 2 - ASTRONAUT_FACE_CENTRE[0]) < 25
    assert abs(box.y + box.height / 2 - ASTRONAUT_FACE_CENTRE[1]) < 25
    expected_frames = round(duration * FPS)
    probe, _ = probe_mp4(result.mp4, decode_frames=False)
    assert (probe.frame_count, probe.width, probe.height) == (expected_frames, SIZE, SIZE)
    assert probe.fps == pytest.approx(FPS)
    assert (probe.video_codec, probe.audio_codec) == ("h264", "aac")
    assert probe.audio_seconds == pytest.approx(duration, abs=0.1)
    assert result.frame_count == expected_frames and result.fps == FPS
    assert result.mime_type == "video/mp4" and result.seed == 7


def test_publishes_the_stages_in_order_with_per_frame_progress(engine, portrait_png, speech_wav):
    result, progress = run(engine, small(portrait_png, speech_wav))

    stages = list(dict.fromkeys(p.stage for p in progress))
    assert stages == list(STAGES)
    frames = [p for p in progress if p.stage == "inference" and p.step]
    assert [p.step for p in frames] == list(range(1, result.frame_count + 1))
    assert all(p.total_steps == result.frame_count for p in frames)
    assert frames[-1].percent == pytest.approx(100.0)
    assert set(result.stage_seconds) == set(STAGES)


def test_mouth_moves_with_loudness(engine, portrait_png, silence_then_speech):
    audio, duration = silence_then_speech
    result, _ = run(engine, small(portrait_png, audio))
    _, frames = probe_mp4(result.mp4)
    reference = cv2.resize(astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
    box = result.frame_face_box
    mouth = (
        slice(box.y + int(0.65 * box.height), box.y + int(1.1 * box.height)),
        slice(box.x + int(0.2 * box.width), box.x + int(0.8 * box.width)),
    )

    def change(frame: np.ndarray) -> float:
        return float(np.abs(frame.astype(np.float32)[mouth] - reference[mouth]).mean())

    silent = [change(f) for f in frames[: int(SILENCE_S * FPS) - 1]]
    speaking = [change(f) for f in frames[int((SILENCE_S + 0.2) * FPS) : int((duration - 0.2) * FPS)]]
    assert np.mean(speaking) > 1.5 * np.mean(silent)
    assert max(speaking) > 2 * max(silent)


def test_same_seed_same_video_and_other_seed_other_motion(engine, portrait_png, speech_wav):
    first, _ = run(engine, small(portrait_png, speech_wav, num_frames=8, seed=11))
    again, _ = run(engine, small(portrait_png, speech_wav, num_frames=8, seed=11))
    other, _ = run(engine, small(portrait_png, speech_wav, num_frames=8, seed=12))
    assert first.mp4 == again.mp4
    assert first.mp4 != other.mp4


def test_num_frames_overrides_the_audio_length_and_trims_the_track(engine, portrait_png, speech_wav):
    result, _ = run(engine, small(portrait_png, speech_wav, num_frames=6))
    probe, _ = probe_mp4(result.mp4, decode_frames=False)
    assert probe.frame_count == result.frame_count == 6
    assert probe.audio_seconds == pytest.approx(6 / FPS, abs=0.1)


def test_size_follows_the_reference_aspect_and_default_size(portrait_png, speech_wav):
    engine = PortraitEngine(TalkingheadSettings(default_size=128))
    result, _ = run(engine, TalkingHeadRequest(portrait_png, speech_wav, fps=FPS, num_frames=2))
    assert (result.width, result.height) == (128, 128)
    wide, _ = run(engine, small(portrait_png, speech_wav, width=256, height=128, num_frames=2))
    probe, _ = probe_mp4(wide.mp4, decode_frames=False)
    assert (probe.width, probe.height) == (256, 128)
    box = wide.frame_face_box  # the crop keeps the face inside the frame
    assert box.y >= 0 and box.y + box.height <= 128


@pytest.mark.parametrize(
    ("image_format", "audio_format"), [("JPEG", ("flac", "flac")), ("WEBP", ("mp3", "libmp3lame"))]
)
def test_accepts_jpeg_webp_and_compressed_audio(engine, speech, image_format, audio_format):
    samples, rate = speech
    image = encode_image(astronaut(), image_format)
    audio = encode_audio(samples, rate, *audio_format)
    result, _ = run(engine, small(image, audio, num_frames=3))
    assert result.frame_count == 3 and result.faces_found == 1


def test_uses_the_largest_of_several_faces(engine, speech_wav):
    big = astronaut()
    canvas = np.full((512, 800, 3), 235, dtype=np.uint8)
    canvas[:, :512] = big
    canvas[128:384, 530:786] = cv2.resize(big, (256, 256), interpolation=cv2.INTER_AREA)
    result, _ = run(
        engine, TalkingHeadRequest(encode_image(canvas), speech_wav, fps=FPS, num_frames=2, width=200, height=128)
    )
    assert result.faces_found == 2
    assert result.face_box.x < 512 and result.face_box.width > 70


def test_blank_image_is_no_face_detected(engine, speech_wav):
    blank = encode_image(np.full((256, 256, 3), 200, dtype=np.uint8))
    with pytest.raises(FailedPrecondition) as caught:
        run(engine, small(blank, speech_wav))
    assert caught.value.reason == "NO_FACE_DETECTED"


def test_cancel_during_inference_stops_before_the_next_frame(engine, portrait_png, speech_wav):
    cancel = CancelToken.never()
    seen: list[ProgressUpdate] = []

    def emit(item: object) -> None:
        seen.append(item)
        if isinstance(item, ProgressUpdate) and item.stage == "inference" and item.step == 3:
            cancel.cancel()

    with pytest.raises(Cancelled):
        engine.generate(small(portrait_png, speech_wav), cancel, emit)
    assert max(p.step for p in seen if p.stage == "inference") == 3
    assert "merging_audio" not in {p.stage for p in seen}


def test_undecodable_inputs_name_both_fields(engine):
    with pytest.raises(InvalidArgument) as caught:
        run(engine, TalkingHeadRequest(b"not an image", b"not audio either"))
    assert {v.field for v in caught.value.violations} == {"reference_image", "audio"}


def test_out_of_range_numbers_are_field_violations(engine, portrait_png, speech_wav):
    request = small(portrait_png, speech_wav, fps=500, num_frames=10**6, width=255, steps=0, guidance_scale=-1.0)
    with pytest.raises(InvalidArgument) as caught:
        run(engine, request)
    assert {v.field for v in caught.value.violations} == {"fps", "num_frames", "width", "steps", "guidance_scale"}


def test_audio_longer_than_the_limit_is_refused(portrait_png, speech_wav):
    engine = PortraitEngine(TalkingheadSettings(max_audio_s=0.5))
    with pytest.raises(InvalidArgument) as caught:
        run(engine, small(portrait_png, speech_wav))
    assert [v.field for v in caught.value.violations] == ["audio"]
    assert "0.5 seconds" in caught.value.violations[0].description


def test_audio_needing_too_many_frames_is_refused(portrait_png, speech_wav):
    engine = PortraitEngine(TalkingheadSettings(max_frames=5))
    with pytest.raises(InvalidArgument) as caught:
        run(engine, small(portrait_png, speech_wav))
    assert [v.field for v in caught.value.violations] == ["audio"]


def test_status_reports_the_cascades_as_real_weights(engine, portrait_png, speech_wav):
    run(engine, small(portrait_png, speech_wav, num_frames=1))
    [status] = engine.models.status()
    assert status.state.value == "loaded" and status.device == "cpu" and not status.random_weights


@pytest.mark.parametrize(("width", "height"), [(64, 512), (512, 64), (64, 64)])
def test_extreme_frames_that_crop_the_face_still_render(engine, portrait_png, speech_wav, width, height):
    result, _ = run(engine, small(portrait_png, speech_wav, width=width, height=height, num_frames=4))
    probe, _ = probe_mp4(result.mp4, decode_frames=False)
    assert (probe.width, probe.height, probe.frame_count) == (width, height, 4)
