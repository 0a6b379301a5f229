"""Runs one echo backend (tests/gateway/backends.py) as its own process, for kill -9 tests and the
benchmark: `python -m tests.gateway.backend_process NAME [--gateway ADDR] [--max-concurrency N]`.
It prints `capmesh echo listening on HOST:PORT` once it serves."""

from __future__ import annotations

import argparse
import asyncio

from capmesh.services.runtime.server import serve
from capmesh.services.runtime.settings import ServerSettings
from tests.gateway.backends import build_echo_service


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--gateway", default="")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--step-s", type=float, default=0.02)
    options = parser.parse_args()
    settings = ServerSettings(
        port=0,
        gateway=options.gateway,
        max_concurrency=options.max_concurrency,
        max_queue=256,
        grace_period_s=2,
        log_level="warning",
    )
    service, _ = build_echo_service(options.name, settings, step_s=options.step_s)
    asyncio.run(serve(service))


if __name__ == "__main__":
    main()
