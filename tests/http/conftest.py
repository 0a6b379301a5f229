"""Fixtures of the HTTP tests: one background loop and one mesh (gateway + capability services)
for the whole folder; the servers run in the loop's thread, the tests are synchronous clients."""

from __future__ import annotations

import pytest

from capmesh.gateway.server.config import GatewaySettings
from tests.http.support import BackgroundLoop, start_mesh


@pytest.fixture(scope="session")
def background_loop():
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def mesh(background_loop, tmp_path_factory):
    settings = GatewaySettings(
        port=0,
        http_port=0,
        host="127.0.0.1",
        files_dir=str(tmp_path_factory.mktemp("files")),
        sse_keepalive_s=1.0,
        max_body_bytes=256 * 1024,
        max_file_bytes=2 * 1024 * 1024,
        grace_period_s=0,
        log_level="warning",
    )
    running = background_loop.run(start_mesh(settings))
    yield running
    background_loop.run(running.stop())
