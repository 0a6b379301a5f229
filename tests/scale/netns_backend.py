"""One echo backend (tests/gateway/backends.py) on a given host address, for the multi-host test in
network namespaces: `python -m tests.scale.netns_backend NAME HOST GATEWAYS` serves on HOST (its
namespace's own address, port 0) and registers with GATEWAYS (comma-separated). It prints
`capmesh echo listening on HOST:PORT` once it serves."""

from __future__ import annotations

import asyncio
import sys

from capmesh.services.runtime.server import serve
from capmesh.services.runtime.settings import ServerSettings
from tests.gateway.backends import build_echo_service


def main() -> None:
    name, host, gateways = sys.argv[1:4]
    settings = ServerSettings(
        host=host, port=0, gateway=gateways, max_concurrency=64, max_queue=64, grace_period_s=1, log_level="warning"
    )
    service, _ = build_echo_service(name, settings, step_s=0.05)
    asyncio.run(serve(service))


if __name__ == "__main__":
    main()
