"""Per-step progress and cancellation for diffusers pipelines, through `callback_on_step_end`.

`DenoisingMonitor.callback` runs after every denoising step inside the pipeline: it reports the step,
the total, the overall percent and an ETA from the measured step times, then checks the cancel token.
Cancellation raises out of the pipeline (`Cancelled` / `DeadlineExceeded`), so the pipeline stops at
the next step and skips the VAE decode that its own interrupt flag would still run.

A forward pre-hook on the denoiser marks when the first step starts, so that the first ETA and the
stage timings do not count prompt and image encoding as denoising.

Percent is the whole call's progress (monotonic, for one progress bar): each stage owns a band
(`STAGE_BANDS`), and denoising moves through its band step by step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.progress import Emit, ProgressUpdate

LOADING_MODEL = "loading_model"
DENOISING = "denoising"
DECODING = "decoding"

# (start, end) percent of the whole call that each stage covers.
STAGE_BANDS: dict[str, tuple[float, float]] = {
    LOADING_MODEL: (0.0, 5.0),
    "encoding_image": (5.0, 10.0),
    "encoding_prompt": (5.0, 10.0),
    DENOISING: (10.0, 90.0),
    DECODING: (90.0, 95.0),
    "encoding_video": (95.0, 100.0),
    "encoding_images": (95.0, 100.0),
}


def stage_update(stage: str, message: str, fraction: float = 0.0, **fields) -> ProgressUpdate:
    """A progress update at `fraction` (0..1) through `stage`'s band."""
    low, high = STAGE_BANDS[stage]
    return ProgressUpdate(
        stage=stage, percent=round(low + (high - low) * min(1.0, max(0.0, fraction)), 2), message=message, **fields
    )


@dataclass
class StageTimes:
    """Seconds spent per stage of one call, for results, logs and the benchmark."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + max(0.0, seconds)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)


class DenoisingMonitor:
    """One pipeline call's step callback: progress after each step, cancellation at the next step."""

    def __init__(self, emit: Emit, cancel: CancelToken, total_steps: int, *, encoding_stage: str) -> None:
        self._emit = emit
        self._cancel = cancel
        self.total_steps = total_steps
        self.encoding_stage = encoding_stage
        self.steps_done = 0
        self.call_started: float | None = None
        self.denoising_started: float | None = None
        self.denoising_finished: float | None = None

    @contextmanager
    def watching(self, denoiser: torch.nn.Module | None) -> Iterator[DenoisingMonitor]:
        """Wraps the pipeline call: marks its start and hooks the denoiser to see the first step begin."""
        handle = denoiser.register_forward_pre_hook(self._on_denoiser_call) if denoiser is not None else None
        self.call_started = time.perf_counter()
        try:
            yield self
        finally:
            if handle is not None:
                handle.remove()

    def _on_denoiser_call(self, _module, _args) -> None:
        if self.denoising_started is None:
            self.denoising_started = time.perf_counter()

    def callback(self, pipeline, step_index: int, _timestep, _tensors: dict) -> dict:
        """The `callback_on_step_end` hook; returns no tensor overrides."""
        now = time.perf_counter()
        # Schedulers of higher order run more timesteps than requested steps; the pipeline knows.
        self.steps_done = step_index + 1
        total = max(int(getattr(pipeline, "_num_timesteps", 0) or self.total_steps), self.steps_done)
        self.total_steps = total
        started = self.denoising_started or self.call_started or now
        per_step = (now - started) / self.steps_done
        remaining = max(0, total - self.steps_done)
        self._emit(
            stage_update(
                DENOISING,
                f"denoising step {self.steps_done}/{total}",
                self.steps_done / total,
                step=self.steps_done,
                total_steps=total,
                eta_seconds=round(per_step * remaining, 3),
            )
        )
        self._cancel.raise_if_cancelled()
        if remaining == 0:
            self.denoising_finished = time.perf_counter()
            self._emit(stage_update(DECODING, "decoding latents with the VAE"))
        return {}

    def record(self, times: StageTimes, call_finished: float) -> None:
        """Splits the pipeline call's wall time into encoding, denoising and decoding."""
        started = self.call_started or call_finished
        denoise_start = self.denoising_started or started
        denoise_end = self.denoising_finished or call_finished
        times.add(self.encoding_stage, denoise_start - started)
        times.add(DENOISING, denoise_end - denoise_start)
        times.add(DECODING, call_finished - denoise_end)

    @property
    def seconds_per_step(self) -> float:
        if not self.steps_done or self.denoising_started is None or self.denoising_finished is None:
            return 0.0
        return (self.denoising_finished - self.denoising_started) / self.steps_done


def denoiser_of(pipeline) -> torch.nn.Module | None:
    """The module that runs once per step: `transformer` (DiT families) or `unet`."""
    for name in ("transformer", "unet", "transformer_2"):
        module = getattr(pipeline, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


def cpu_generators(seed: int, count: int = 1) -> list[torch.Generator]:
    """Seeded CPU generators (one per output, seed, seed+1, ...): the same noise on every device."""
    return [torch.Generator(device="cpu").manual_seed(seed + index) for index in range(count)]
