"""One stepper backend (tests/runtime/stepper.py) as its own process, for kill -9 tests and the
benchmark: `python -m tests.jobs.stepper_process [--step-s S] [--max-concurrency N]`.
It prints `capmesh stepper listening on HOST:PORT` once it serves."""

from __future__ import annotations

import argparse
import asyncio

from capmesh.services.runtime.server import serve
from capmesh.services.runtime.settings import ServerSettings
from tests.runtime.stepper import build_stepper_service


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-s", type=float, default=0.02)
    parser.add_argument("--max-concurrency", type=int, default=4)
    options = parser.parse_args()
    settings = ServerSettings(
        port=0, max_concurrency=options.max_concurrency, max_queue=64, grace_period_s=0, log_level="warning"
    )
    service, _ = build_stepper_service(settings, step_s=options.step_s)
    asyncio.run(serve(service))


if __name__ == "__main__":
    main()
