"""Fixtures shared by every test folder."""

from __future__ import annotations

import os

import pytest

# Nothing in the suite may reach a model hub: checkpoints are the project's own tiny ones.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from capmesh.services.runtime.logging import configure_logging
from tests.support.redis_server import RedisServer

# In-process servers log through structlog; keep the test output to warnings and errors.
configure_logging("warning", json=False)


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the whole run; tests that need a clean slate call `flush()`."""
    with RedisServer() as server:
        yield server
