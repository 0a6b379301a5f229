"""GPU check for VideoGen and ImageGen: the tiny pipelines in bfloat16 on CUDA.

    .venv/bin/python -m benchmarks.gpu_diffusion_check [--offload] [--json out.json]

For each engine (tiny Wan image-to-video, tiny Stable Diffusion) it reports the load time, the
model memory the status reports, the step time and whole-call time, the peak CUDA memory during a
call, whether the same seed gives the same output on the GPU, and the CUDA memory after the
ModelManager unloads the model (allocated should return to what it was before loading; reserved
shows that the allocator cache was emptied). `--offload` adds a run with model CPU offload.
Needs a CUDA machine; exits with status 2 otherwise. Prints a table, optionally writes JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from capmesh.services.diffusion.placement import Offload
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.diffusers_engine import DiffusersImageEngine
from capmesh.services.imagegen.domain import ImageRequest
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.videogen.config import VideogenSettings
from capmesh.services.videogen.domain import VideoRequest
from capmesh.services.videogen.engine import DiffusersVideoEngine

MiB = 1024 * 1024


@dataclass
class GpuFigures:
    engine: str
    offload: str
    load_s: float
    model_memory_mib: float
    whole_call_s: float
    step_ms: float
    peak_allocated_mib: float
    same_seed_identical: bool
    allocated_before_load_mib: float
    allocated_after_unload_mib: float
    reserved_after_unload_mib: float
    memory_returned: bool


def _png(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (180, 60, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _mib(value: int) -> float:
    return round(value / MiB, 2)


def measure(label: str, engine, request, render, offload: Offload, repeats: int) -> GpuFigures:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    started = time.perf_counter()
    engine.models.ensure_loaded()
    torch.cuda.synchronize()
    load_s = time.perf_counter() - started
    model_memory = engine.models.status()[0].memory_bytes

    outputs = [render(request)]  # warm-up (kernels, cuDNN autotuning), also the first determinism sample
    torch.cuda.reset_peak_memory_stats()
    calls, steps = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        result = engine.generate(request, CancelToken.never(), lambda _: None)
        torch.cuda.synchronize()
        calls.append(time.perf_counter() - started)
        steps.append(result.seconds_per_step)
    peak = torch.cuda.max_memory_allocated()
    outputs.append(render(request))

    engine.models.unload()
    torch.cuda.synchronize()
    after_allocated, after_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    return GpuFigures(
        engine=label,
        offload=offload.value,
        load_s=round(load_s, 3),
        model_memory_mib=_mib(model_memory),
        whole_call_s=round(float(np.median(calls)), 4),
        step_ms=round(1000 * float(np.median(steps)), 3),
        peak_allocated_mib=_mib(peak),
        same_seed_identical=bool(np.array_equal(outputs[0], outputs[1])),
        allocated_before_load_mib=_mib(before),
        allocated_after_unload_mib=_mib(after_allocated),
        reserved_after_unload_mib=_mib(after_reserved),
        memory_returned=after_allocated <= before,
    )


def video_figures(offload: Offload, repeats: int) -> GpuFigures:
    # Wan's VAE is usually kept in float32; here everything runs in bfloat16, as asked of the check.
    engine = DiffusersVideoEngine(VideogenSettings(device="cuda", dtype="bfloat16", cpu_offload=offload))
    request = VideoRequest(
        image=_png(256), prompt="a cat walks on the beach", width=256, height=256, num_frames=17, steps=20, seed=0
    )
    return _figures("videogen tiny wan 256x256x17, 20 steps", engine, request, lambda r: r.pixels, offload, repeats)


def image_figures(offload: Offload, repeats: int) -> GpuFigures:
    engine = DiffusersImageEngine(ImagegenSettings(device="cuda", dtype="bfloat16", cpu_offload=offload))
    request = ImageRequest(prompt="a lighthouse at dawn", width=256, height=256, steps=20, num_images=4, seed=0)
    return _figures("imagegen tiny sd 256x256 n=4, 20 steps", engine, request, lambda r: r.pixels, offload, repeats)


def _figures(label: str, engine, request, pixels_of, offload: Offload, repeats: int) -> GpuFigures:
    """`measure` on the engine's renders (`pixels_of` picks the pixel array of one), then closes the engine."""

    def render(request):
        return pixels_of(engine.render(request, CancelToken.never(), lambda _: None))

    try:
        return measure(label, engine, request, render, offload, repeats)
    finally:
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offload", action="store_true", help="also run with model CPU offload")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the figures to this file as JSON")
    options = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_diffusion_check needs CUDA; none is available here", file=sys.stderr)
        return 2
    modes = [Offload.NONE, Offload.MODEL] if options.offload else [Offload.NONE]
    figures = [
        measure_one(offload, options.repeats) for offload in modes for measure_one in (video_figures, image_figures)
    ]
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    header = list(asdict(figures[0]))
    print("\t".join(header))
    for item in figures:
        print("\t".join(str(value) for value in asdict(item).values()))
    if options.json:
        with open(options.json, "w") as handle:
            json.dump([asdict(item) for item in figures], handle, indent=2)
    return 0 if all(item.memory_returned for item in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
