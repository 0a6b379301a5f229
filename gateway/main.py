"""`capmesh gateway`: runs the gateway until SIGTERM or SIGINT, then stops it gracefully."""

from __future__ import annotations

import asyncio
import signal
import sys

from capmesh.gateway.server.app import start_gateway
from capmesh.gateway.server.config import GatewaySettings
from capmesh.services.runtime import telemetry
from capmesh.services.runtime.logging import configure_logging


async def serve(settings: GatewaySettings) -> None:
    telemetry.setup_tracing("gateway")
    configure_logging(settings.log_level, settings.log_json)
    running = await start_gateway(settings)
    # One line on stdout that scripts (and `capmesh up`) read to learn the bound ports.
    print(f"capmesh gateway listening on grpc {running.grpc_address} http {running.http_url or '-'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
    telemetry.shutdown_tracing()


def run(settings: GatewaySettings) -> None:
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        sys.exit(130)
