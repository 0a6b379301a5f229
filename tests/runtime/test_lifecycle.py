"""Model lifecycle: lazy load, residency policies, unload that really frees, failed loads reported."""

from __future__ import annotations

import threading
import weakref

import pytest
import torch

from capmesh.services.runtime.errors import ModelLoadError, NotFound
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager, ModelState, Residency, torch_module_bytes


class Loader:
    def __init__(self, fail: bool = False) -> None:
        self.loads = 0
        self.fail = fail
        self.last: weakref.ref | None = None

    def __call__(self, name: str) -> LoadedModel:
        self.loads += 1
        if self.fail:
            raise OSError(f"no checkpoint at /models/{name}")
        module = torch.nn.Linear(64, 64)
        self.last = weakref.ref(module)
        return LoadedModel(handle=module, memory_bytes=torch_module_bytes(module), random_weights=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_loads_lazily_once_and_reports_status():
    loader = Loader()
    manager = ModelManager(loader, ["tiny", "other"])
    assert loader.loads == 0 and manager.loaded_models() == []
    with manager.use("") as model:
        assert model.memory_bytes == (64 * 64 + 64) * 4
    with manager.use("tiny"):
        pass
    assert loader.loads == 1
    status = {s.name: s for s in manager.status()}
    assert status["tiny"].state is ModelState.LOADED and status["tiny"].random_weights
    assert status["other"].state is ModelState.UNLOADED


def test_unknown_model_is_not_found_listing_served_models():
    manager = ModelManager(Loader(), ["tiny", "other"])
    with pytest.raises(NotFound, match="served models: tiny, other"):
        manager.resolve("nope")


def test_unload_drops_every_reference():
    loader = Loader()
    manager = ModelManager(loader, ["tiny"])
    with manager.use():
        pass
    assert loader.last() is not None
    assert manager.unload() == ["tiny"]
    assert loader.last() is None, "the module is still referenced after unload"
    assert manager.status()[0].state is ModelState.UNLOADED


def test_unload_waits_for_the_call_using_the_model():
    manager = ModelManager(Loader(), ["tiny"])
    release = threading.Event()
    inside = threading.Event()

    def call():
        with manager.use():
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=call)
    worker.start()
    inside.wait(5)
    unloaded: list[str] = []
    unloader = threading.Thread(target=lambda: unloaded.extend(manager.unload()))
    unloader.start()
    unloader.join(0.2)
    assert unloaded == [] and manager.status()[0].state is ModelState.LOADED
    release.set()
    worker.join(5)
    unloader.join(5)
    assert unloaded == ["tiny"]


def test_idle_policy_unloads_after_the_idle_period():
    clock = FakeClock()
    manager = ModelManager(Loader(), ["tiny"], residency=Residency.IDLE, idle_unload_s=30, clock=clock)
    with manager.use():
        pass
    clock.now += 10
    assert manager.unload_idle() == []
    clock.now += 25
    assert manager.unload_idle() == ["tiny"]
    manager.close()


def test_failed_load_is_reported_with_its_reason():
    manager = ModelManager(Loader(fail=True), ["tiny"])
    with pytest.raises(ModelLoadError, match="no checkpoint at /models/tiny"):
        manager.ensure_loaded()
    status = manager.status()[0]
    assert status.state is ModelState.FAILED and "no checkpoint" in status.last_error
