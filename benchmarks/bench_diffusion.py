"""VideoGen and ImageGen on their tiny checkpoints (CPU): step time, stage shares, progress-stream cost.

    .venv/bin/python -m benchmarks.run diffusion [--quick]

- `videogen` / `imagegen` rows: one whole call (validation to the last mp4/PNG byte), the time per
  denoising step, and the share of the call spent in each stage (VAE decode and video/PNG encoding
  included) from the engine's own stage timings.
- `progress` rows: the cost of per-step progress. Baseline: the bare pipeline call with no step
  callback. Then the engine's render (step callback, ETA, cancel check) emitting to no subscriber,
  emitting to a subscriber that converts every event to its proto and serializes it (what the
  servicer does), and the whole call over an in-process gRPC stream whose client reads every message,
  against the same call in-process.
The tiny models are random and small, so the denoiser is cheap: the shares say where fixed costs sit,
not how a 14B model splits its time (there denoising dominates).
"""

from __future__ import annotations

import asyncio
import io
import time

import grpc
from PIL import Image

from benchmarks.harness import Row, Stats, repeat
from capmesh.services.diffusion.stepping import cpu_generators
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.diffusers_engine import DiffusersImageEngine
from capmesh.services.imagegen.domain import ImageRequest
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.server import create_server
from capmesh.services.videogen import convert as video_convert
from capmesh.services.videogen.config import VideogenSettings
from capmesh.services.videogen.domain import VideoRequest
from capmesh.services.videogen.engine import DiffusersVideoEngine
from capmesh.services.videogen.main import build_service as build_videogen
from capmesh.videogen.v1 import videogen_service_pb2_grpc

NAME = "diffusion"
VIDEO_STAGES = ("encoding_image", "denoising", "decoding", "encoding_video")
IMAGE_STAGES = ("encoding_prompt", "denoising", "decoding", "encoding_images")


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (180, 60, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _ignore(_event: object) -> None:
    pass


def _whole_calls(engine, request, stages: tuple[str, ...], repeats: int, label: str, unit: str) -> list[Row]:
    """The call's time, the time per step and each stage's share, over `repeats` calls."""
    results = []
    stats = repeat(lambda: results.append(engine.generate(request, CancelToken.never(), _ignore)), repeats)
    results = results[1:]  # the warm-up call
    totals = stats.samples
    rows = [
        Row.from_stats(NAME, f"{label} whole call", unit, stats),
        Row.from_stats(
            NAME,
            f"{label} per denoising step",
            "ms/step",
            Stats(tuple(r.seconds_per_step for r in results)),
            scale=1000,
        ),
    ]
    for stage in stages:
        shares = tuple(100 * r.stage_seconds.get(stage, 0.0) / total for r, total in zip(results, totals))
        rows.append(Row.from_stats(NAME, f"{label} share {stage}", "% of call", Stats(shares)))
    return rows


def _video_rows(engine: DiffusersVideoEngine, quick: bool, repeats: int) -> list[Row]:
    width, frames, steps = (32, 9, 4) if quick else (64, 17, 8)
    request = VideoRequest(
        image=_png(width, width),
        prompt="a cat walks on the beach",
        width=width,
        height=width,
        num_frames=frames,
        steps=steps,
        seed=0,
    )
    return _whole_calls(
        engine, request, VIDEO_STAGES, repeats, f"videogen wan {width}x{width}x{frames} {steps} steps", "s/video"
    )


def _image_rows(quick: bool, repeats: int) -> list[Row]:
    engine = DiffusersImageEngine(ImagegenSettings())
    size, steps, count = (32, 4, 1) if quick else (64, 8, 2)
    request = ImageRequest(
        prompt="a lighthouse at dawn", width=size, height=size, steps=steps, num_images=count, seed=0
    )
    try:
        return _whole_calls(
            engine, request, IMAGE_STAGES, repeats, f"imagegen sd {size}x{size} n={count} {steps} steps", "s/call"
        )
    finally:
        engine.close()


def _progress_rows(engine: DiffusersVideoEngine, quick: bool, repeats: int) -> list[Row]:
    steps = 10 if quick else 30
    case = f"wan 32x32x5 {steps} steps"
    request = VideoRequest(
        image=_png(32, 32), prompt="a cat", width=32, height=32, num_frames=5, steps=steps, guidance_scale=1.0, seed=0
    )
    spec = engine.spec(engine.models.default_model)
    job = engine.validate(request)
    pipeline = engine.models.ensure_loaded().handle

    def bare_pipeline() -> None:
        arguments = spec.family.call_arguments(job, cpu_generators(job.seed), callback=None)
        pipeline(**arguments)

    def to_proto(event: object) -> None:
        video_convert.response_from_event(event).SerializeToString()

    baseline = f"progress bare pipeline, no callback ({case})"
    rows = [Row.from_stats(NAME, baseline, "s/call", repeat(bare_pipeline, repeats))]
    for subscriber, emit in (("no subscriber", _ignore), ("proto subscriber", to_proto)):
        renders = repeat(lambda emit=emit: engine.render(request, CancelToken.never(), emit), repeats)
        rows.append(
            Row.from_stats(NAME, f"progress render, {subscriber} ({case})", "s/call", renders, baseline=baseline)
        )
    in_process = f"progress generate in-process ({case})"
    rows.append(
        Row.from_stats(
            NAME, in_process, "s/call", repeat(lambda: engine.generate(request, CancelToken.never(), _ignore), repeats)
        )
    )
    rows.append(
        Row.from_stats(
            NAME,
            f"progress generate over gRPC, client reads all ({case})",
            "s/call",
            asyncio.run(_grpc_calls(request, repeats)),
            baseline=in_process,
        )
    )
    return rows


async def _grpc_calls(request: VideoRequest, repeats: int) -> Stats:
    running = await create_server(build_videogen(VideogenSettings()))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)
    message = video_request_message(request)
    samples = []
    try:
        for index in range(repeats + 1):
            started = time.perf_counter()
            [m async for m in stub.StreamGenerateVideo(message)]
            if index:  # the first call loads the model and warms up
                samples.append(time.perf_counter() - started)
    finally:
        await channel.close()
        await running.shutdown(grace_s=0)
    return Stats(tuple(samples))


def video_request_message(request: VideoRequest):
    from capmesh.client.videogen import video_request

    return video_request(
        request.image,
        request.prompt,
        width=request.width,
        height=request.height,
        num_frames=request.num_frames,
        steps=request.steps,
        guidance_scale=request.guidance_scale,
        seed=request.seed,
    )


def run(quick: bool) -> list[Row]:
    repeats = 2 if quick else 5
    engine = DiffusersVideoEngine(VideogenSettings())
    try:
        rows = _video_rows(engine, quick, repeats)
        rows += _progress_rows(engine, quick, repeats)
    finally:
        engine.close()
    return rows + _image_rows(quick, repeats)
