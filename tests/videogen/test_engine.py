"""VideoGen's diffusers engine on the tiny Wan image-to-video checkpoint (real loading, real pipeline)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.chunks import FileChunk
from capmesh.services.runtime.errors import Cancelled, DeadlineExceeded, InvalidArgument, ModelLoadError
from capmesh.services.runtime.lifecycle import ModelState
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.videogen.domain import MP4, VideoRequest
from tests.support.video import probe_mp4
from tests.videogen.conftest import png_bytes


def run(engine, request, cancel=None):
    events: list[object] = []
    result = engine.generate(request, cancel or CancelToken.never(), events.append)
    return result, events


def progress_of(events, stage=None):
    return [e for e in events if isinstance(e, ProgressUpdate) and (stage is None or e.stage == stage)]


def video_of(events) -> bytes:
    pieces = [e for e in events if isinstance(e, FileChunk)]
    assert [p.offset for p in pieces] == [sum(len(q.data) for q in pieces[:i]) for i in range(len(pieces))]
    return b"".join(p.data for p in pieces)


def test_one_progress_event_per_denoising_step_with_eta(engine, first_frame):
    result, events = run(
        engine,
        VideoRequest(image=first_frame, prompt="a cat walks", width=32, height=32, num_frames=5, steps=3, seed=1),
    )

    denoising = progress_of(events, "denoising")
    assert [e.step for e in denoising] == [1, 2, 3]
    assert {e.total_steps for e in denoising} == {3}
    assert all(e.eta_seconds is not None and e.eta_seconds >= 0 for e in denoising)
    assert denoising[-1].eta_seconds == 0
    assert result.steps == 3 and result.seconds_per_step > 0
    stages = [e.stage for e in progress_of(events)]
    first_seen = list(dict.fromkeys(stages))
    assert first_seen == ["loading_model", "encoding_image", "denoising", "decoding", "encoding_video"]
    percents = [e.percent for e in progress_of(events)]
    assert percents == sorted(percents) and percents[-1] == 100
    assert set(result.stage_seconds) == {"loading_model", "encoding_image", "denoising", "decoding", "encoding_video"}


def test_mp4_decodes_to_requested_frames_size_and_fps(make_engine, first_frame):
    engine = make_engine(chunk_bytes=1024)
    result, events = run(
        engine,
        VideoRequest(image=first_frame, prompt="a cat", width=48, height=32, num_frames=9, fps=12, steps=2, seed=3),
    )

    video = video_of(events)
    assert len([e for e in events if isinstance(e, FileChunk)]) > 1
    assert all(len(e.data) <= 1024 for e in events if isinstance(e, FileChunk))
    probe, frames = probe_mp4(video)
    assert (probe.frame_count, probe.width, probe.height, probe.fps, probe.video_codec) == (9, 48, 32, 12.0, "h264")
    assert frames[0].shape == (32, 48, 3)
    assert (result.artifact.mime_type, result.artifact.size_bytes, result.num_frames, result.fps) == (
        MP4,
        len(video),
        9,
        12,
    )
    assert result.random_weights and result.model == "tiny"
    assert result.duration_seconds == pytest.approx(9 / 12)


def test_unset_fields_come_from_the_checkpoint_defaults_and_the_image_aspect(engine):
    _result, events = run(engine, VideoRequest(image=png_bytes(64, 32), seed=0))

    probe, _ = probe_mp4(video_of(events), decode_frames=False)
    # Tiny defaults: 32x32 area (1024 px) at the image's 2:1 aspect, 5 frames at 8 fps, 2 steps.
    assert (probe.width, probe.height, probe.frame_count, probe.fps) == (48, 16, 5, 8.0)
    assert len(progress_of(events, "denoising")) == 2


def test_same_seed_gives_identical_frames_and_another_seed_does_not(engine, first_frame):
    def frames(seed):
        request = VideoRequest(
            image=first_frame, prompt="a dog runs", width=32, height=32, num_frames=5, steps=2, seed=seed
        )
        return engine.render(request, CancelToken.never(), lambda _: None).pixels

    first, again, other = frames(7), frames(7), frames(8)
    assert first.shape == (5, 32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_same_seed_gives_the_same_mp4_bytes(engine, first_frame):
    # At 64x64 and above; libx264 output for 32x32 frames (2x2 macroblocks) varies run to run.
    request = VideoRequest(image=first_frame, width=64, height=64, num_frames=5, steps=2, seed=3)
    first, _ = run(engine, request)
    again, _ = run(engine, request)
    assert first.artifact.sha256 == again.artifact.sha256


def test_unset_seed_is_reported_and_reproduces_the_frames(engine, first_frame):
    request = dict(image=first_frame, width=32, height=32, num_frames=5, steps=2)
    rendered = engine.render(VideoRequest(**request), CancelToken.never(), lambda _: None)
    again = engine.render(VideoRequest(**request, seed=rendered.job.seed), CancelToken.never(), lambda _: None)
    assert np.array_equal(rendered.pixels, again.pixels)


def test_cancel_after_the_first_step_stops_before_the_second(engine, first_frame):
    pipeline = engine.models.ensure_loaded().handle
    denoiser_calls = []
    hook = pipeline.transformer.register_forward_hook(lambda *_: denoiser_calls.append(1))
    cancel = CancelToken()
    events: list[object] = []

    def emit(event):
        events.append(event)
        if isinstance(event, ProgressUpdate) and event.stage == "denoising" and event.step == 1:
            cancel.cancel()

    # guidance 1 disables classifier-free guidance: one denoiser call per step.
    request = VideoRequest(image=first_frame, width=32, height=32, num_frames=5, steps=4, guidance_scale=1.0, seed=1)
    try:
        with pytest.raises(Cancelled):
            engine.generate(request, cancel, emit)
    finally:
        hook.remove()

    assert denoiser_calls == [1]
    assert [e.step for e in progress_of(events, "denoising")] == [1]
    assert not [e for e in events if isinstance(e, FileChunk)]
    # The service stays ready: the next call runs to the end.
    result, _ = run(engine, request)
    assert result.num_frames == 5


def test_a_passed_deadline_stops_the_call(engine, first_frame):
    with pytest.raises(DeadlineExceeded):
        run(
            engine,
            VideoRequest(image=first_frame, width=32, height=32, num_frames=5, steps=2),
            cancel=CancelToken.with_timeout(0),
        )


def violations(excinfo) -> dict[str, str]:
    return {v.field: v.description for v in excinfo.value.violations}


def test_invalid_fields_are_all_reported_with_their_rule(make_engine):
    engine = make_engine(max_width=64, max_height=64, max_frames=17, max_steps=10)
    request = VideoRequest(
        image=b"not an image", width=40, height=128, num_frames=8, steps=0, fps=0, guidance_scale=-1.0, seed=-5
    )

    with pytest.raises(InvalidArgument) as excinfo:
        run(engine, request)

    found = violations(excinfo)
    assert set(found) == {"image", "width", "height", "num_frames", "steps", "fps", "guidance_scale", "seed"}
    assert "could not be read as a PNG, JPEG or WebP image" in found["image"]
    assert "multiple of 16" in found["width"] and "VAE scale factor 8 x transformer patch size 2" in found["width"]
    assert "between 16 and 64" in found["height"]
    assert "4k+1" in found["num_frames"] and "got 8" in found["num_frames"]
    assert "between 1 and 10" in found["steps"]
    assert engine.models.loaded_models() == []  # refused before any weight loaded


@pytest.mark.parametrize(
    "field, value, rule",
    [
        ("num_frames", 21, "between 1 and 17"),
        ("steps", 11, "between 1 and 10"),
        ("steps", -1, "between 1 and 10"),
        ("width", 80, "between 16 and 64"),
    ],
)
def test_limits_are_configurable(make_engine, first_frame, field, value, rule):
    engine = make_engine(max_width=64, max_frames=17, max_steps=10)
    with pytest.raises(InvalidArgument) as excinfo:
        run(engine, VideoRequest(image=first_frame, **{field: value}))
    assert rule in violations(excinfo)[field]


def test_empty_image_and_long_prompt_are_refused(make_engine):
    engine = make_engine(max_prompt_chars=10)
    with pytest.raises(InvalidArgument) as excinfo:
        run(engine, VideoRequest(image=b"", prompt="x" * 11))
    assert set(violations(excinfo)) == {"image", "prompt"}


def test_unload_frees_the_model_and_the_next_call_reloads_it(engine, first_frame):
    engine.models.ensure_loaded()
    loaded = engine.models.status()[0]
    assert loaded.state is ModelState.LOADED and loaded.memory_bytes > 0 and loaded.random_weights
    assert loaded.details["pipeline"] == "WanImageToVideoPipeline"

    assert engine.models.unload() == ["tiny"]
    assert engine.models.status()[0].state is ModelState.UNLOADED

    result, events = run(engine, VideoRequest(image=first_frame, width=32, height=32, num_frames=5, steps=2))
    assert result.num_frames == 5 and progress_of(events)[0].stage == "loading_model"


def test_stable_video_diffusion_checkpoint_loads_by_its_model_index(make_engine, tiny_svd, first_frame):
    engine = make_engine(extra_models=(str(tiny_svd),))
    # Any frame count works for SVD; the prompt is not used by the pipeline.
    result, events = run(
        engine,
        VideoRequest(
            image=first_frame, prompt="ignored", model=str(tiny_svd), width=32, height=32, num_frames=3, steps=2, seed=0
        ),
    )

    probe, _ = probe_mp4(video_of(events), decode_frames=False)
    assert (probe.frame_count, probe.width, probe.height) == (3, 32, 32)
    assert len(progress_of(events, "denoising")) == 2 and result.random_weights
    assert engine.models.status()[1].details["pipeline"] == "StableVideoDiffusionPipeline"


def test_a_checkpoint_of_another_pipeline_is_refused_with_the_supported_ones(make_engine, first_frame):
    from capmesh.services.imagegen import tiny as image_tiny

    engine = make_engine(model=str(image_tiny.tiny_path()))
    supported = "supported pipelines: StableVideoDiffusionPipeline, WanImageToVideoPipeline"
    with pytest.raises(ModelLoadError, match=supported):
        run(engine, VideoRequest(image=first_frame))


def test_idle_residency_unloads_the_model_after_the_idle_time(make_engine, first_frame):
    from capmesh.services.runtime.lifecycle import Residency

    engine = make_engine(residency=Residency.IDLE, idle_unload_s=0.2)
    run(engine, VideoRequest(image=first_frame, width=32, height=32, num_frames=5, steps=2))
    assert engine.models.loaded_models() == ["tiny"]
    deadline = time.monotonic() + 10
    while engine.models.loaded_models() and time.monotonic() < deadline:
        time.sleep(0.05)  # the manager's reaper thread runs on its own schedule
    assert engine.models.status()[0].state is ModelState.UNLOADED
