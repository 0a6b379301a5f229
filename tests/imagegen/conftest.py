"""Fixtures: the tiny Stable Diffusion checkpoint (built once per session) and an engine serving it."""

from __future__ import annotations

from pathlib import Path

import pytest

from capmesh.services.imagegen import tiny
from capmesh.services.imagegen.config import ImagegenSettings
from capmesh.services.imagegen.diffusers_engine import DiffusersImageEngine
from capmesh.services.runtime.tiny import TINY


@pytest.fixture(scope="session")
def tiny_sd() -> Path:
    """Built once per machine in the default tiny cache, like `capmesh models make-tiny` does."""
    return tiny.tiny_path()


@pytest.fixture
def make_engine(tiny_sd):
    engines: list[DiffusersImageEngine] = []

    def build(**overrides) -> DiffusersImageEngine:
        engine = DiffusersImageEngine(ImagegenSettings(**{"model": TINY, **overrides}))
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine) -> DiffusersImageEngine:
    return make_engine()
