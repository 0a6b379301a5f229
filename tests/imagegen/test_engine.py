"""ImageGen's diffusers engine on the tiny Stable Diffusion checkpoint (AutoPipelineForText2Image)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from capmesh.services.imagegen.domain import PNG, ImageRequest
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.chunks import FileChunk
from capmesh.services.runtime.errors import Cancelled, InvalidArgument
from capmesh.services.runtime.lifecycle import ModelState
from capmesh.services.runtime.progress import ProgressUpdate


def run(engine, request, cancel=None):
    events: list[object] = []
    result = engine.generate(request, cancel or CancelToken.never(), events.append)
    return result, events


def pngs_of(events) -> dict[int, bytes]:
    files: dict[int, bytes] = {}
    for event in events:
        if isinstance(event, FileChunk):
            assert event.offset == len(files.get(event.index, b""))
            files[event.index] = files.get(event.index, b"") + event.data
    return files


def denoising(events):
    return [e for e in events if isinstance(e, ProgressUpdate) and e.stage == "denoising"]


def test_n_images_come_back_as_valid_pngs_with_their_seeds(make_engine):
    engine = make_engine(chunk_bytes=1024)
    result, events = run(
        engine, ImageRequest(prompt="a cat on the beach", width=40, height=32, steps=3, num_images=3, seed=11)
    )

    files = pngs_of(events)
    assert sorted(files) == [0, 1, 2]
    for info in result.images:
        image = Image.open(io.BytesIO(files[info.index]))
        image.load()
        assert (image.format, image.size, image.mode) == ("PNG", (40, 32), "RGB")
        assert (info.artifact.mime_type, info.width, info.height, info.artifact.size_bytes) == (
            PNG,
            40,
            32,
            len(files[info.index]),
        )
    assert [info.seed for info in result.images] == [11, 12, 13]
    assert result.random_weights and result.model == "tiny" and result.steps == 3


def test_one_progress_event_per_step_and_stages_in_order(engine):
    _, events = run(engine, ImageRequest(prompt="a dog", steps=4, seed=0))

    assert [e.step for e in denoising(events)] == [1, 2, 3, 4]
    assert denoising(events)[-1].eta_seconds == 0
    stages = list(dict.fromkeys(e.stage for e in events if isinstance(e, ProgressUpdate)))
    assert stages == ["loading_model", "encoding_prompt", "denoising", "decoding", "encoding_images"]
    percents = [e.percent for e in events if isinstance(e, ProgressUpdate)]
    assert percents == sorted(percents) and percents[-1] == 100


def test_defaults_come_from_the_checkpoint(engine):
    result, events = run(engine, ImageRequest(prompt="a city"))
    assert (result.images[0].width, result.images[0].height) == (32, 32)
    assert len(denoising(events)) == 2


def test_same_seed_gives_identical_images_and_each_image_has_its_own_seed(engine):
    def pixels(seed, n=1):
        request = ImageRequest(prompt="a portrait", width=32, height=32, steps=2, seed=seed, num_images=n)
        return engine.render(request, CancelToken.never(), lambda _: None).pixels

    pair = pixels(5, n=2)
    assert np.array_equal(pair, pixels(5, n=2))
    assert not np.array_equal(pair[0], pair[1])
    # Image i of a batch is the image of seed + i alone (up to batched-matmul rounding).
    assert np.abs(pair[1].astype(int) - pixels(6)[0]).max() <= 1


def test_cancel_after_the_first_step_stops_before_the_second(engine):
    pipeline = engine.models.ensure_loaded().handle
    unet_calls = []
    hook = pipeline.unet.register_forward_hook(lambda *_: unet_calls.append(1))
    cancel = CancelToken()

    def emit(event):
        if isinstance(event, ProgressUpdate) and event.stage == "denoising":
            cancel.cancel()

    request = ImageRequest(prompt="a cat", steps=5, seed=1)
    try:
        with pytest.raises(Cancelled):
            engine.generate(request, cancel, emit)
    finally:
        hook.remove()
    assert unet_calls == [1]  # classifier-free guidance batches both halves into one UNet call
    result, _ = run(engine, request)
    assert len(result.images) == 1


def test_invalid_fields_are_all_reported_with_their_rule(make_engine):
    engine = make_engine(max_images=4, max_steps=20)
    request = ImageRequest(
        prompt=" ", width=36, height=4096, steps=0, num_images=5, guidance_scale=float("nan"), seed=-1
    )
    with pytest.raises(InvalidArgument) as excinfo:
        run(engine, request)
    found = {v.field: v.description for v in excinfo.value.violations}
    assert set(found) == {"prompt", "width", "height", "steps", "num_images", "guidance_scale", "seed"}
    assert "multiple of 8" in found["width"] and "got 36" in found["width"]
    assert "between 1 and 4" in found["num_images"]
    assert engine.models.loaded_models() == []


def test_unload_frees_the_model_and_status_reports_it(engine):
    run(engine, ImageRequest(prompt="a cat", seed=0))
    status = engine.models.status()[0]
    assert status.state is ModelState.LOADED and status.memory_bytes > 0 and status.random_weights
    assert status.details["pipeline"] == "StableDiffusionPipeline"
    assert engine.models.unload() == ["tiny"]
    assert engine.models.status()[0].memory_bytes == 0
