"""What the diffusers engines (ImageGen, VideoGen) share: model specs, loading and running one pipeline call.

A subclass says how a served model's spec is read from its config files (`_read_spec`, built with
the shared `_resolve` and `_defaults`) and, when the class named in `model_index.json` is not the
one to load, which `from_pretrained` to call. The base caches the specs, wires the ModelManager,
runs one pipeline call at a time (pipelines keep per-call state: scheduler timesteps, guidance) and
reports loading, per-step progress and stage timings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from capmesh.services.diffusion.checkpoints import Checkpoint, GenerationDefaults, resolve_checkpoint
from capmesh.services.diffusion.loading import load_pipeline, loaded_pipeline_model, supported_class_name
from capmesh.services.diffusion.placement import Offload, resolve_placement
from capmesh.services.diffusion.stepping import (
    LOADING_MODEL,
    DenoisingMonitor,
    StageTimes,
    denoiser_of,
    stage_update,
)
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import ModelLoadError, ResourceExhausted
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager, Residency, release_memory
from capmesh.services.runtime.progress import Emit

if TYPE_CHECKING:
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline  # the real class, see loading.py


class DiffusersSettings(Protocol):
    """The settings fields every diffusers engine reads."""

    @property
    def served_models(self) -> list[str]: ...
    @property
    def residency(self) -> Residency: ...
    @property
    def idle_unload_s(self) -> float: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def vae_dtype(self) -> str: ...
    @property
    def cpu_offload(self) -> Offload: ...
    @property
    def generation_defaults(self) -> GenerationDefaults: ...


GeometryT = TypeVar("GeometryT")


@dataclass(frozen=True)
class ModelSpec(Generic[GeometryT]):
    """A served model from its config files only: enough to validate requests without loading it.
    `geometry` holds the capability's size (and frame) rules; an engine may add fields."""

    checkpoint: Checkpoint
    geometry: GeometryT
    defaults: GenerationDefaults


SettingsT = TypeVar("SettingsT", bound=DiffusersSettings)
SpecT = TypeVar("SpecT", bound=ModelSpec)


@dataclass(frozen=True)
class PipelineCall:
    """One pipeline call as the engine describes it."""

    encoding_stage: str  # reported before the first denoising step (prompt / image encoding)
    encoding_message: str
    steps: int  # requested denoising steps, 0 when left to the pipeline; the pipeline's own count wins
    arguments: Callable[[Callable[..., dict]], dict[str, Any]]  # the keyword arguments, given the step callback
    workload: str  # what did not fit when memory runs out, e.g. "2 image(s)"
    fewer: str  # what the caller should ask for fewer of, e.g. "images"


@dataclass(frozen=True)
class RunInfo:
    """How a pipeline call was made: its stage timings, the model and the denoising steps it ran."""

    times: StageTimes
    model: str
    random_weights: bool
    steps: int
    seconds_per_step: float


JobT = TypeVar("JobT")


@dataclass(frozen=True)
class Rendered(Generic[JobT]):
    """A pipeline call's output as uint8 pixels (images: n x height x width x 3; a video: frames x
    height x width x 3), the job it ran and how it ran."""

    pixels: np.ndarray
    job: JobT
    run: RunInfo


class DiffusersEngine(Generic[SettingsT, SpecT]):
    name = "diffusers"

    def __init__(self, settings: SettingsT) -> None:
        self._settings = settings
        self._specs: dict[str, SpecT] = {}
        self._specs_lock = threading.Lock()
        self._pipeline_lock = threading.Lock()
        self.models = ModelManager(
            self._load, settings.served_models, residency=settings.residency, idle_unload_s=settings.idle_unload_s
        )

    # -- models --------------------------------------------------------------------------------
    def spec(self, name: str) -> SpecT:
        """The model's pipeline class, geometry and defaults (cached; reads config files, never weights)."""
        with self._specs_lock:
            if name not in self._specs:
                try:
                    self._specs[name] = self._read_spec(name)
                except Exception as exc:
                    raise ModelLoadError(f"model {name!r} cannot be used: {type(exc).__name__}: {exc}") from exc
            return self._specs[name]

    def _read_spec(self, name: str) -> SpecT:
        raise NotImplementedError

    def _resolve(self, name: str, tiny_path: Callable[[], Path], supported: Collection[str]) -> tuple[Checkpoint, str]:
        """The checkpoint a served model name stands for, and its pipeline class (one of `supported`)."""
        checkpoint = resolve_checkpoint(name, tiny_path=tiny_path)
        return checkpoint, supported_class_name(checkpoint, supported)

    def _defaults(self, checkpoint: Checkpoint, pipeline: GenerationDefaults | None = None) -> GenerationDefaults:
        """Defaults for fields a request leaves unset: the configured ones, else the checkpoint's
        defaults file, else `pipeline`'s (the pipeline family's own, where the engine knows them)."""
        return (
            (pipeline or GenerationDefaults())
            .overridden_by(GenerationDefaults.load(checkpoint.source))
            .overridden_by(self._settings.generation_defaults)
        )

    def _from_pretrained(self) -> Callable[..., DiffusionPipeline] | None:
        """The `from_pretrained` that loads a pipeline; None: the class named in `model_index.json`."""
        return None

    def _load(self, name: str) -> LoadedModel:
        spec = self.spec(name)
        placement = resolve_placement(
            self._settings.device, self._settings.dtype, self._settings.vae_dtype, self._settings.cpu_offload
        )
        pipeline = load_pipeline(spec.checkpoint, placement, self._from_pretrained())
        return loaded_pipeline_model(pipeline, spec.checkpoint, placement, type(pipeline).__name__)

    # -- one pipeline call ---------------------------------------------------------------------
    def run_pipeline(self, name: str, call: PipelineCall, cancel: CancelToken, emit: Emit) -> tuple[Any, RunInfo]:
        """Loads the model (reporting it), waits for the pipeline and runs the call with per-step progress:
        the pipeline's raw output and how it was made."""
        cancel.raise_if_cancelled()
        times = StageTimes()
        if name not in self.models.loaded_models():
            emit(stage_update(LOADING_MODEL, f"loading model {name}"))
        with times.measure(LOADING_MODEL):
            self.models.ensure_loaded(name)
        with self.models.use(name) as loaded, self._exclusive_pipeline(cancel):
            output, monitor = self._call_pipeline(loaded.handle, call, cancel, emit, times)
        return output, RunInfo(times, name, loaded.random_weights, monitor.steps_done, monitor.seconds_per_step)

    @contextmanager
    def _exclusive_pipeline(self, cancel: CancelToken) -> Iterator[None]:
        """Waits for the pipeline (staying cancellable while queued behind another call)."""
        while not self._pipeline_lock.acquire(timeout=0.05):
            cancel.raise_if_cancelled()
        try:
            yield
        finally:
            self._pipeline_lock.release()

    def _call_pipeline(
        self, pipeline, call: PipelineCall, cancel: CancelToken, emit: Emit, times: StageTimes
    ) -> tuple[Any, DenoisingMonitor]:
        emit(stage_update(call.encoding_stage, call.encoding_message))
        monitor = DenoisingMonitor(emit, cancel, call.steps, encoding_stage=call.encoding_stage)
        arguments = call.arguments(monitor.callback)
        try:
            with monitor.watching(denoiser_of(pipeline)):
                output = pipeline(**arguments)
        except torch.OutOfMemoryError as exc:
            pipeline.maybe_free_model_hooks()
            release_memory()
            raise ResourceExhausted(
                f"the accelerator ran out of memory for {call.workload}: try fewer {call.fewer}, a smaller size "
                "or cpu_offload",
                retry_after_s=5.0,
                reason="OUT_OF_MEMORY",
            ) from exc
        except BaseException:
            # A cancelled call leaves offloaded components where the next call expects them.
            pipeline.maybe_free_model_hooks()
            raise
        monitor.record(times, time.perf_counter())
        return output, monitor

    def close(self) -> None:
        self.models.close()
