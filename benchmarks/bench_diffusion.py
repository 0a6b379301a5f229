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
  Both sides run the same request with the same settings, load the model before one untimed
  warm-up call, run every call on one engine thread and take torch's default thread count; the
  benchmark checks what each side's first call really did (size, frames, steps, seed, fps, torch
  threads) and stops if they differ. `grpc / in-process time` is their ratio within each round
  (1.0 = gRPC costs nothing), and the ratio of each side's fastest call: on a busy machine torch's
  spinning threads turn other processes' load into large, one-sided delays, and the rows say
  BUSY MACHINE when the load average passed the cores plus one: their ratios are then noise.
Every row shows the spread (min..max) of its calls.
The tiny models are random and small, so the denoiser is cheap: the shares say where fixed costs sit,
not how a 14B model splits its time (there denoising dominates).
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import torch
from PIL import Image

from benchmarks.harness import Row, Stats, ratio_row, repeat
from benchmarks.processes import Worker, serve_requests, spawn
from capmesh.client.videogen import video_request
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
from capmesh.videogen.v1.videogen_service_pb2 import StreamGenerateVideoRequest

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


def _progress_message(quick: bool) -> tuple[StreamGenerateVideoRequest, str]:
    """The request of the progress and generate rows as a client sends it, and its label."""
    steps = 10 if quick else 30
    message = video_request(
        _png(32, 32), "a cat", width=32, height=32, num_frames=5, steps=steps, guidance_scale=1.0, seed=0
    )
    return message, f"wan 32x32x5 {steps} steps"


def _progress_request(quick: bool) -> tuple[VideoRequest, str]:
    """The same request as the servicer hands it to the engine (read by the videogen convert module)."""
    message, case = _progress_message(quick)
    return video_convert.request_from_proto(message, message.image.inline_data), case


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


# The server prints torch's intra-op thread count before it starts, so that the benchmark can check
# that both sides run the engine under the same threading (neither sets it: both take torch's default).
SERVER_MAIN = (
    "import torch; print('bench-server torch_threads', torch.get_num_threads(), flush=True); "
    "from capmesh.cli.main import app; app()"
)


async def _generate_rows(quick: bool, rounds: int) -> list[Row]:
    """The whole call over gRPC against the same call in a process of its own, alternating."""
    message, case = _progress_message(quick)
    args = ["-c", SERVER_MAIN, "serve", "videogen", "--port", "0"]
    said: list[str] = []
    server, banner = await spawn(
        args + [arg for s in SERVER_SETTINGS for arg in ("--set", s)], "listening on", seen=said
    )
    server_threads = next(int(line.split()[-1]) for line in said if line.startswith("bench-server torch_threads"))
    in_process: Worker | None = None
    times: dict[str, list[float]] = {"grpc": [], "in-process": []}
    try:
        in_process = await Worker.start("benchmarks.bench_diffusion", "--in-process", *(["--quick"] if quick else []))
        async with grpc.aio.insecure_channel(banner.rsplit(" ", 1)[-1]) as channel:
            stub = videogen_service_pb2_grpc.VideoGenServiceStub(channel)

            async def over_grpc() -> tuple[float, dict[str, Any]]:
                started = time.perf_counter()
                messages = [m async for m in stub.StreamGenerateVideo(message)]
                seconds = time.perf_counter() - started
                return seconds, {**_work(messages[-1].result), "torch_threads": server_threads}

            # One warm-up call each (both sides loaded the model before), and the check that they
            # do the same work under the same threading.
            _, grpc_work = await over_grpc()
            in_process_work = (await in_process.ask({}))["work"]
            if grpc_work != in_process_work:
                raise RuntimeError(f"the two sides differ: grpc {grpc_work}, in-process {in_process_work}")
            print(f"  generate: both sides run {grpc_work}", file=sys.stderr, flush=True)
            load = os.getloadavg()[0]
            for round_ in range(rounds):
                sides = ["grpc", "in-process"] if round_ % 2 == 0 else ["in-process", "grpc"]
                for side in sides:
                    seconds = (await over_grpc())[0] if side == "grpc" else (await in_process.ask({}))["seconds"]
                    times[side].append(seconds)
    finally:
        if in_process is not None:
            await in_process.stop()
        server.terminate()
        await server.wait()
    # With more runnable threads than cores, torch's threads wait for each other and a 0.1 s call
    # takes seconds, on either side at random: a ratio measured so is noise, and the rows say so.
    # The benchmark itself keeps one to two cores busy (torch's threads on one side at a time): a margin of one.
    load, cores = max(load, os.getloadavg()[0]), os.cpu_count() or 1
    busy = f", BUSY MACHINE (load {load:.1f} on {cores} cores): noise" if load > cores + 1 else ""
    case = f"{case}, {server_threads} torch threads{busy}"
    in_process_case = f"generate in-process, own process ({case})"
    best = min(times["grpc"]) / min(times["in-process"])
    return [
        Row.from_samples(NAME, in_process_case, "s/call", times["in-process"]),
        Row.from_samples(
            NAME, f"generate over gRPC, client reads all ({case})", "s/call", times["grpc"], baseline=in_process_case
        ),
        ratio_row(NAME, f"generate grpc / in-process time ({case})", times["grpc"], times["in-process"], False),
        # Load from other processes only ever adds time (and torch's spinning threads amplify it
        # on a busy machine), so the fastest call of each side is the steadiest estimate of the work.
        Row(NAME, f"generate grpc / in-process time, fastest call of each ({case})", "x", best, best, rounds),
    ]


def _work(result: Any) -> dict[str, Any]:
    """What a call really did, from its VideoResult (the proto's or the engine's: the fields are alike)."""
    fields = ("model", "width", "height", "num_frames", "steps", "seed")
    return {**{name: getattr(result, name) for name in fields}, "fps": round(result.fps, 3)}  # the proto's is 32-bit


async def _in_process_worker(quick: bool) -> None:
    """The in-process side of `_generate_rows`: answers each request with one call's seconds and
    what the call did, running the engine as `capmesh serve videogen` does."""
    from capmesh.services.runtime.logging import configure_logging
    from capmesh.services.runtime.settings import load_settings

    overrides = dict(setting.split("=", 1) for setting in SERVER_SETTINGS)
    settings = load_settings(VideogenSettings, "videogen", overrides)  # as `capmesh serve` reads them
    configure_logging(settings.log_level, settings.log_json)
    engine = DiffusersVideoEngine(settings)
    request, _ = _progress_request(quick)
    # Every call on one and the same thread, as the servicer's executor runs them (one thread: the
    # settings' max_concurrency). A call on a new thread builds itself a new team of torch threads.
    executor = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix="capmesh-videogen")
    loop = asyncio.get_running_loop()

    def one() -> dict[str, Any]:
        started = time.perf_counter()
        result = engine.generate(request, CancelToken.never(), _ignore)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "work": {**_work(result), "torch_threads": torch.get_num_threads()}}

    async def generate(_request: dict[str, Any]) -> dict[str, Any]:
        return await loop.run_in_executor(executor, one)

    try:
        # Loaded as the server's eager load does, off the engine thread; the benchmark's first
        # request is the warm-up, as its first call is the server's.
        await asyncio.to_thread(engine.models.ensure_loaded)
        await serve_requests(generate)
    finally:
        executor.shutdown()
        engine.close()


def run(quick: bool) -> list[Row]:
    repeats = 2 if quick else 5
    engine = DiffusersVideoEngine(VideogenSettings())
    try:
        rows = _video_rows(engine, quick, repeats)
        rows += _progress_rows(engine, quick, repeats)
    finally:
        engine.close()
    rows += asyncio.run(_generate_rows(quick, 8 if quick else 16))
    return rows + _image_rows(quick, repeats)


if __name__ == "__main__" and sys.argv[1:2] == ["--in-process"]:
    asyncio.run(_in_process_worker(quick="--quick" in sys.argv))
