"""Runs one echo backend (tests/gateway/backends.py) as its own process, for kill -9 tests and the
benchmark: `python -m tests.gateway.backend_process NAME [--gateway ADDR] [--max-concurrency N] [--faulty]
[--device-group G --models m1,m2]` (`--faulty`: every Chat fails with INTERNAL, a broken backend;
`--models`: a model manager whose models load at once). With `CAPMESH_MESH_SECRET` set it holds
that secret, as a service of a `capmesh up` mesh does (bench_gateway's pair with a secret).
It prints `capmesh echo listening on HOST:PORT` once it serves."""

from __future__ import annotations

import argparse
import asyncio
import os

from capmesh.services.runtime.server import serve
from capmesh.services.runtime.settings import MESH_SECRET_ENV, ServerSettings
from tests.gateway.backends import build_echo_service, instant_models


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--gateway", default="")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--step-s", type=float, default=0.02)
    parser.add_argument("--faulty", action="store_true")
    parser.add_argument("--device-group", default="")
    parser.add_argument("--models", default="")
    options = parser.parse_args()
    settings = ServerSettings(
        port=0,
        gateway=options.gateway,
        max_concurrency=options.max_concurrency,
        max_queue=256,
        grace_period_s=2,
        log_level="warning",
        device_group=options.device_group,
        mesh_secret=os.environ.get(MESH_SECRET_ENV, ""),
    )
    models = instant_models(tuple(options.models.split(","))) if options.models else None
    service, servicer = build_echo_service(options.name, settings, step_s=options.step_s, models=models)
    servicer.faulty = options.faulty
    asyncio.run(serve(service))


if __name__ == "__main__":
    main()
