"""Fixtures of the defect tests: a gateway with a TTS service as real processes (one per module), and
the jobs tests' in-process stepper backends and gateways."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.defects.support import available, gateway_process, service_process, wait_until
from tests.jobs.conftest import gateways, steppers

__all__ = ["gateways", "steppers", "tts_mesh"]


@dataclass(frozen=True)
class Mesh:
    grpc_address: str
    http_url: str


@pytest.fixture(scope="module")
def tts_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A gateway process (files in a temp folder) with one `capmesh serve tts` process behind it."""
    files = tmp_path_factory.mktemp("files")
    gateway, address, http = gateway_process(files_dir=files)
    tts = None
    try:
        tts = service_process("tts", address)
        wait_until(lambda: available(address, "tts"), what="tts AVAILABLE")
        yield Mesh(address, http)
    finally:
        for process in (tts, gateway):
            if process is not None:
                process.kill()
