"""Fixtures for the LLM tests: the tiny checkpoint (built once per session) and engines on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from capmesh.services.llm.batching import TransformersChatEngine
from capmesh.services.llm.config import LlmSettings
from capmesh.services.llm.tiny import tiny_path


@pytest.fixture(scope="session")
def tiny_llm_path() -> Path:
    return tiny_path()  # the machine's cache: built once, not per test run


@pytest.fixture(scope="session")
def llm_settings(tiny_llm_path: Path) -> LlmSettings:
    return LlmSettings(
        model="tiny", device="cpu", max_batch_size=8, max_waiting=8, default_max_tokens=32, log_json=False
    )


@pytest.fixture(scope="session")
def engine(llm_settings: LlmSettings) -> Iterator[TransformersChatEngine]:
    engine = TransformersChatEngine(llm_settings)
    engine.load()
    yield engine
    engine.close()
