"""Model lifecycle: lazy or eager load, residency, unload.

Engines give the manager a `load(name) -> LoadedModel` function. The manager loads a model on first
use (or at start, when the `eager_load` setting asks for it), keeps it while the policy says so
(`resident`, or `idle` which unloads after `idle_unload_s` seconds without use), unloads on request
once no call is using it, and reports what is loaded for the status RPC. A served model whose last
load failed makes the service unhealthy until a load of it succeeds: the listeners given to
`on_health` hear it (the server turns that into grpc.health NOT_SERVING, so that routers send calls
elsewhere; the strict readiness Triton has by default). Unloading drops every
reference the manager holds, runs the model's own release hook, collects garbage and, on CUDA,
empties the allocator cache, so that the memory really returns.
"""

from __future__ import annotations

import enum
import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from capmesh.services.runtime import metrics
from capmesh.services.runtime.checkpoint_files import checkpoint_problem
from capmesh.services.runtime.errors import FailedPrecondition, ModelLoadError, NotFound
from capmesh.services.runtime.tiny import TINY, is_random_checkpoint

log = structlog.get_logger("capmesh.lifecycle")


class Residency(str, enum.Enum):
    RESIDENT = "resident"  # keep loaded once loaded
    IDLE = "idle"  # unload after idle_unload_s seconds without a call


class ModelState(str, enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass
class LoadedModel:
    """What an engine's loader returns: the object to run plus facts for the status RPC."""

    handle: Any
    device: str = "cpu"
    memory_bytes: int = 0
    random_weights: bool = False
    release: Callable[[], None] | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class ModelSlot:
    """One served model: its state and, once loaded, the model. The manager changes its slots under
    its lock; `ModelManager.status()` hands out copies, which the status RPC and metrics read."""

    name: str
    state: ModelState = ModelState.UNLOADED
    model: LoadedModel | None = None
    last_error: str = ""
    in_use: int = 0  # calls holding the model now
    loaded_at: float | None = None  # time.monotonic()
    last_used_at: float | None = None

    # The loaded model's facts, or what an unloaded model reports.
    @property
    def device(self) -> str:
        return self.model.device if self.model else ""

    @property
    def memory_bytes(self) -> int:
        return self.model.memory_bytes if self.model else 0

    @property
    def random_weights(self) -> bool:
        return self.model.random_weights if self.model else False

    @property
    def details(self) -> dict[str, str]:
        return self.model.details if self.model else {}


Loader = Callable[[str], LoadedModel]
HealthListener = Callable[[bool], None]  # called with False when a load fails, True once all load again


# What a checkpoint folder holds at its top: transformers models and diffusers pipelines.
CHECKPOINT_MARKERS = ("config.json", "model_index.json")


def looks_like_path(name: str) -> bool:
    """A model setting meant as a local folder rather than a hub id ("org/name": one '/', no
    leading '/', '.' or '~')."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def local_checkpoint_problem(name: str) -> str:
    """Why the local folder `name` cannot be a checkpoint ("" when it may be, or is no path)."""
    if name == TINY:  # the project-built checkpoint, made on first use
        return ""
    path = Path(name).expanduser()
    if not path.exists():
        return f"the folder {path} does not exist" if looks_like_path(name) else ""
    if not path.is_dir():
        return f"{path} is a file, not a checkpoint folder"
    if not any((path / marker).is_file() for marker in CHECKPOINT_MARKERS):
        return f"{path} is not a checkpoint folder (it has no {' or '.join(CHECKPOINT_MARKERS)})"
    return checkpoint_problem(path)


class ModelManager:
    """Thread-safe: engines acquire models from worker threads while the event loop asks for status."""

    def __init__(
        self,
        loader: Loader,
        served_models: list[str],
        *,
        residency: Residency = Residency.RESIDENT,
        idle_unload_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not served_models:
            raise ValueError("a ModelManager needs at least one served model")
        self._loader = loader
        self._served = list(served_models)
        self._residency = residency
        self._idle_unload_s = idle_unload_s
        self._clock = clock
        self._slots = {name: ModelSlot(name) for name in self._served}
        self._cond = threading.Condition()
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()
        self._health_listeners: list[HealthListener] = []

    def check_sources(self) -> None:
        """Refuses, before the service says SERVING, a served model that can never load: a local
        path that does not exist, is not a checkpoint folder, or whose files are visibly broken
        (checkpoint_files.py). Without this a path such as '/nonexistent' is taken for a hub id,
        and a truncated weights file shows only when the first call loads it. Hub ids (and 'tiny')
        are left to the loader."""
        for name in self._served:
            problem = local_checkpoint_problem(name)
            if problem:
                raise ModelLoadError(f"model {name!r}: {problem}", reason="MODEL_SOURCE_INVALID")

    # -- queries -------------------------------------------------------------------------------
    def random_weights(self) -> bool:
        """Whether a served model has random weights (the project-built `tiny` checkpoints, or a
        folder built like them): its output is noise, and the registry, `capmesh status`, the
        console and the OpenAI routes say so. Known before any load, from the names alone."""
        with self._cond:
            loaded = any(s.model is not None and s.model.random_weights for s in self._slots.values())
        return loaded or any(name == TINY or is_random_checkpoint(Path(name).expanduser()) for name in self._served)

    def load_failures(self) -> dict[str, str]:
        """Served model -> the reason its last load failed, for models that have not loaded since."""
        with self._cond:
            return {name: slot.last_error for name, slot in self._slots.items() if slot.last_error}

    def healthy(self) -> bool:
        """False while a served model's last load failed: calls for it would fail too."""
        return not self.load_failures()

    def on_health(self, listener: HealthListener) -> None:
        """Calls `listener(healthy)` whenever `healthy()` changes, from the thread that loaded."""
        self._health_listeners.append(listener)

    @property
    def served_models(self) -> list[str]:
        return list(self._served)

    @property
    def default_model(self) -> str:
        return self._served[0]

    def resolve(self, name: str) -> str:
        """Maps '' to the default model; an unknown name is NOT_FOUND listing the served ones."""
        if not name:
            return self.default_model
        if name not in self._slots:
            raise NotFound(
                f"model {name!r} is not served here; served models: {', '.join(self._served)}",
                reason="MODEL_NOT_FOUND",
                metadata={"served_models": ",".join(self._served)},
            )
        return name

    def status(self) -> list[ModelSlot]:
        """A copy of each served model's slot, in the served order."""
        with self._cond:
            return [replace(slot) for slot in self._slots.values()]

    def loaded_models(self) -> list[str]:
        with self._cond:
            return [n for n, s in self._slots.items() if s.state is ModelState.LOADED]

    # -- loading -------------------------------------------------------------------------------
    def ensure_loaded(self, name: str = "") -> LoadedModel:
        """Loads the model if needed (one loader at a time per model) and returns it."""
        name = self.resolve(name)
        with self._cond:
            slot = self._slots[name]
            while slot.state is ModelState.LOADING:
                self._cond.wait()
            if slot.state is ModelState.LOADED and slot.model is not None:
                return slot.model
            slot.state = ModelState.LOADING
        started = time.monotonic()
        log.info("model.loading", model=name)
        try:
            model = self._loader(name)
        except Exception as exc:  # the reason goes to the caller, the status RPC and the health
            with self._cond:
                was_healthy = not any(s.last_error for s in self._slots.values())
                slot.state = ModelState.FAILED
                slot.last_error = f"{type(exc).__name__}: {exc}"
                self._cond.notify_all()
            log.error("model.load_failed", model=name, error=slot.last_error)
            if was_healthy:
                self._tell_health(False)
            raise ModelLoadError(f"model {name!r} failed to load: {slot.last_error}") from exc
        with self._cond:
            recovered = bool(slot.last_error) and not any(s.last_error for n, s in self._slots.items() if n != name)
            slot.model = model
            slot.state = ModelState.LOADED
            slot.last_error = ""
            slot.loaded_at = slot.last_used_at = self._clock()
            self._cond.notify_all()
        if recovered:
            self._tell_health(True)
        metrics.model_load_seconds.labels(name).observe(time.monotonic() - started)
        log.info(
            "model.loaded",
            model=name,
            device=model.device,
            memory_bytes=model.memory_bytes,
            random_weights=model.random_weights,
            seconds=round(time.monotonic() - started, 3),
        )
        if model.random_weights:
            log.warning(
                "model.random_weights",
                model=name,
                note="this model has random weights: its output is noise, for tests and demos only",
            )
        self._start_reaper_if_needed()
        return model

    def _tell_health(self, healthy: bool) -> None:
        for listener in self._health_listeners:
            try:
                listener(healthy)
            except Exception:  # a listener's trouble must not hide the load's own outcome
                log.exception("model.health_listener_failed")

    @contextmanager
    def use(self, name: str = "") -> Iterator[LoadedModel]:
        """Holds the model for one call so that an unload waits until the call is done."""
        name = self.resolve(name)
        while True:
            model = self.ensure_loaded(name)
            with self._cond:
                slot = self._slots[name]
                if slot.state is ModelState.LOADED and slot.model is model:
                    slot.in_use += 1
                    break
        try:
            yield model
        finally:
            with self._cond:
                slot.in_use -= 1
                slot.last_used_at = self._clock()
                self._cond.notify_all()

    # -- unloading -----------------------------------------------------------------------------
    def unload(self, names: list[str] | None = None, *, wait_s: float = 60.0) -> list[str]:
        """Unloads the named models (all when empty) once their calls finish; returns those unloaded."""
        targets = [self.resolve(n) for n in names] if names else list(self._slots)
        unloaded: list[str] = []
        deadline = time.monotonic() + wait_s
        for name in targets:
            with self._cond:
                slot = self._slots[name]
                while slot.in_use > 0 or slot.state is ModelState.LOADING:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise FailedPrecondition(
                            f"model {name!r} is still in use by {slot.in_use} call(s)", reason="MODEL_IN_USE"
                        )
                    self._cond.wait(remaining)
                model, slot.model = slot.model, None
                was_loaded = slot.state is ModelState.LOADED
                slot.state = ModelState.UNLOADED
                slot.loaded_at = None
            if was_loaded and model is not None:
                self._release(name, model)
                unloaded.append(name)
        return unloaded

    def _release(self, name: str, model: LoadedModel) -> None:
        if model.release is not None:
            try:
                model.release()
            except Exception:
                log.exception("model.release_failed", model=name)
        model.handle = None
        del model
        release_memory()
        log.info("model.unloaded", model=name)

    # -- idle policy ---------------------------------------------------------------------------
    def _start_reaper_if_needed(self) -> None:
        if self._residency is not Residency.IDLE or self._reaper is not None:
            return
        self._reaper = threading.Thread(target=self._reap_idle, name="capmesh-idle-unloader", daemon=True)
        self._reaper.start()

    def unload_idle(self) -> list[str]:
        """Unloads every model unused for idle_unload_s; the reaper thread calls it periodically."""
        now = self._clock()
        with self._cond:
            idle = [
                n
                for n, s in self._slots.items()
                if s.state is ModelState.LOADED
                and s.in_use == 0
                and s.last_used_at is not None
                and now - s.last_used_at >= self._idle_unload_s
            ]
        return self.unload(idle) if idle else []

    def _reap_idle(self) -> None:
        interval = max(0.05, min(5.0, self._idle_unload_s / 4))
        while not self._closed.wait(interval):
            try:
                self.unload_idle()
            except Exception:
                log.exception("model.idle_unload_failed")

    def close(self) -> None:
        self._closed.set()
        self.unload(wait_s=5.0)


def release_memory() -> None:
    """Collects garbage and returns cached CUDA memory to the driver when torch uses CUDA."""
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def torch_module_bytes(*modules: Any) -> int:
    """Bytes held by the parameters and buffers of torch modules (pipelines: pass their components)."""
    total = 0
    for module in modules:
        if module is None or not hasattr(module, "parameters"):
            continue
        for tensor in list(module.parameters()) + list(module.buffers()):
            total += tensor.numel() * tensor.element_size()
    return total
