"""VideoGen and ImageGen on their tiny checkpoints (CPU): step time, stage shares, progress-stream cost.

    .venv/bin/python -m benchmarks.run diffusion [--quick]

- `videogen` / `imagegen` rows: one whole call (validation to the last mp4/PNG byte), the time per
  denoising step, and the share of the call spent in each stage (VAE decode and video/PNG encoding
  included) from the engine's own stage timings.
- `progress` rows: the cost of per-step progress. Baseline: the bare pipeline call with no step
  callback. Then the engine's render (step callback, ETA, cancel check) emitting to no subscriber,
  emitting to a subscriber that converts every event to its proto and serializes it (what the
  servicer does).
- `generate` rows: the whole call over gRPC (`capmesh serve videogen` in its own process, this
  process the client, reading every message) against the same call in-process, in a fresh process
  of its own (`python -m benchmarks.bench_diffusion --in-process`), neither sharing an interpreter
  with the other; each round runs both, the gRPC one first in even rounds and last in odd ones.
  `grpc / in-process time` is their ratio within each round (1.0 = gRPC costs nothing).
Every row shows the spread (min..max) of its calls.
The tiny models are random and small, so the denoiser is cheap: the shares say where fixed costs sit,
not how a 14B model splits its time (there denoising dominates).
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from typing import Any

import grpc
from PIL import Image

from benchmarks.harness import Row, Stats, ratio_row, repeat
from benchmarks.processes import Worker, serve_requests, spawn
from capmesh.services.diffusion.stepping import cpu_generators
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.diffusers_engine import DiffusersImageEngine
from capmesh.services.imagegen.domain import ImageRequest
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.videogen import convert as video_convert
from capmesh.services.videogen.config import VideogenSettings
from capmesh.services.videogen.domain import VideoRequest
from capmesh.services.videogen.engine import DiffusersVideoEngine
from capmesh.videogen.v1 import videogen_service_pb2_grpc

NAME = "diffusion"
SERVER_SETTINGS = ("log_level=warning", "eager_load=true")  # the gRPC server's and the in-process worker's
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


def _progress_request(quick: bool) -> tuple[VideoRequest, str]:
    """The request of the progress and generate rows, and its label."""
    steps = 10 if quick else 30
    request = VideoRequest(
        image=_png(32, 32), prompt="a cat", width=32, height=32, num_frames=5, steps=steps, guidance_scale=1.0, seed=0
    )
    return request, f"wan 32x32x5 {steps} steps"


def _progress_rows(engine: DiffusersVideoEngine, quick: bool, repeats: int) -> list[Row]:
    request, case = _progress_request(quick)
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
    return rows


async def _generate_rows(quick: bool, rounds: int) -> list[Row]:
    """The whole call over gRPC against the same call in a process of its own, alternating."""
    request, case = _progress_request(quick)
    args = ["-m", "capmesh.cli.main", "serve", "videogen", "--port", "0"]
    server, banner = await spawn(args + [arg for s in SERVER_SETTINGS for arg in ("--set", s)], "listening on")
    in_process: Worker | None = None
    times: dict[str, list[float]] = {"grpc": [], "in-process": []}
    try:
        in_process = await Worker.start("benchmarks.bench_diffusion", "--in-process", *(["--quick"] if quick else []))
        async with grpc.aio.insecure_channel(banner.rsplit(" ", 1)[-1]) as channel:
            stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)
            message = video_request_message(request)

            async def over_grpc() -> float:
                started = time.perf_counter()
                [m async for m in stub.StreamGenerateVideo(message)]
                return time.perf_counter() - started

            await over_grpc()  # warm-up (the worker warms itself)
            for round_ in range(rounds):
                sides = ["grpc", "in-process"] if round_ % 2 == 0 else ["in-process", "grpc"]
                for side in sides:
                    seconds = await over_grpc() if side == "grpc" else (await in_process.ask({}))["seconds"]
                    times[side].append(seconds)
    finally:
        if in_process is not None:
            await in_process.stop()
        server.terminate()
        await server.wait()
    in_process_case = f"generate in-process, own process ({case})"
    return [
        Row.from_samples(NAME, in_process_case, "s/call", times["in-process"]),
        Row.from_samples(
            NAME, f"generate over gRPC, client reads all ({case})", "s/call", times["grpc"], baseline=in_process_case
        ),
        ratio_row(NAME, f"generate grpc / in-process time ({case})", times["grpc"], times["in-process"], False),
    ]


async def _in_process_worker(quick: bool) -> None:
    """The in-process side of `_generate_rows`: answers each request with one call's seconds."""
    from capmesh.services.runtime.logging import configure_logging
    from capmesh.services.runtime.settings import load_settings

    overrides = dict(setting.split("=", 1) for setting in SERVER_SETTINGS)
    settings = load_settings(VideogenSettings, "videogen", overrides)  # as `capmesh serve` reads them
    configure_logging(settings.log_level, settings.log_json)
    engine = DiffusersVideoEngine(settings)
    request, _ = _progress_request(quick)

    def one() -> float:
        started = time.perf_counter()
        engine.generate(request, CancelToken.never(), _ignore)
        return time.perf_counter() - started

    async def generate(_request: dict[str, Any]) -> dict[str, Any]:
        return {"seconds": await asyncio.to_thread(one)}  # a worker thread, as the servicer's runtime

    try:
        await asyncio.to_thread(one)  # loads the model and warms up
        await serve_requests(generate)
    finally:
        engine.close()


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
    rows += asyncio.run(_generate_rows(quick, 4 if quick else 8))
    return rows + _image_rows(quick, repeats)


if __name__ == "__main__" and sys.argv[1:2] == ["--in-process"]:
    asyncio.run(_in_process_worker(quick="--quick" in sys.argv))
