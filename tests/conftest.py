"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest

from tests.support.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the whole run; tests that need a clean slate call `flush()`."""
    with RedisServer() as server:
        yield server
