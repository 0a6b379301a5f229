"""One echo backend (tests/gateway/backends.py) as its own process, holding the mesh secret from
`CAPMESH_MESH_SECRET` as every service of a `capmesh up` mesh does: it registers with the secret and
answers only callers that present it. `python -m tests.xds.echo_backend NAME --gateway ADDR`;
prints `capmesh echo listening on HOST:PORT` once it serves."""

from __future__ import annotations

import argparse
import asyncio
import os

from capmesh.services.runtime.server import serve
from capmesh.services.runtime.settings import MESH_SECRET_ENV, ServerSettings
from tests.gateway.backends import build_echo_service


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--gateway", required=True)
    options = parser.parse_args()
    settings = ServerSettings(
        port=0,
        gateway=options.gateway,
        max_concurrency=64,
        max_queue=256,
        grace_period_s=2,
        log_level="warning",
        mesh_secret=os.environ.get(MESH_SECRET_ENV, ""),
    )
    service, _ = build_echo_service(options.name, settings)
    asyncio.run(serve(service))


if __name__ == "__main__":
    main()
