"""Fixtures: the tiny Wan image-to-video checkpoint (built once per session) and an engine serving it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from capmesh.services.runtime.tiny import TINY
from capmesh.services.videogen import tiny
from capmesh.services.videogen.config import VideogenSettings
from capmesh.services.videogen.engine import DiffusersVideoEngine


@pytest.fixture(scope="session")
def tiny_wan() -> Path:
    """Built once per machine in the default tiny cache, like `capmesh models make-tiny` does."""
    return tiny.tiny_path()


@pytest.fixture(scope="session")
def tiny_svd() -> Path:
    return tiny.tiny_svd_path()


@pytest.fixture
def make_engine(tiny_wan):
    engines: list[DiffusersVideoEngine] = []

    def build(**overrides) -> DiffusersVideoEngine:
        settings = VideogenSettings(**{"model": TINY, **overrides})
        engine = DiffusersVideoEngine(settings)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.close()


@pytest.fixture
def engine(make_engine) -> DiffusersVideoEngine:
    return make_engine()


def png_bytes(width: int = 48, height: int = 32, color=(200, 40, 20)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def first_frame() -> bytes:
    return png_bytes()
