"""`capmesh gateway`: runs the gateway until SIGTERM or SIGINT, then stops it gracefully.

With `workers` above 1 this process only supervises: gateway/workers.py starts that many gateway
processes on the same two ports.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from capmesh.gateway.server.config import GatewaySettings

if TYPE_CHECKING:
    from capmesh.gateway.server.app import RunningGateway


def run_event_loop(settings: GatewaySettings, main: Coroutine[Any, Any, None]) -> None:
    """Runs `main` to its end on the loop `settings.event_loop` names (a gateway and each worker)."""
    if settings.event_loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def listening_line(grpc_address: str, http_url: str) -> str:
    """The one line on stdout that scripts (and `capmesh up`) read to learn the bound ports."""
    return f"capmesh gateway listening on grpc {grpc_address} http {http_url or '-'}"


def _print_listening(running: RunningGateway) -> None:
    print(listening_line(running.grpc_address, running.http_url), flush=True)


async def serve(settings: GatewaySettings, on_ready: Callable[[RunningGateway], None] = _print_listening) -> None:
    # imported here: a supervisor of workers (gateway/workers.py) starts faster without the server parts
    from capmesh.gateway.server.app import start_gateway
    from capmesh.services.runtime import telemetry
    from capmesh.services.runtime.logging import configure_logging

    telemetry.setup_tracing("gateway")
    configure_logging(settings.log_level, settings.log_json)
    running = await start_gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    on_ready(running)  # after the handlers: a SIGTERM sent as soon as the line is read stops it gracefully
    await stop.wait()
    await running.stop()
    telemetry.shutdown_tracing()


def run(settings: GatewaySettings) -> None:
    if settings.workers > 1:
        from capmesh.gateway.server.workers import supervise

        sys.exit(supervise(settings))
    try:
        run_event_loop(settings, serve(settings))
    except KeyboardInterrupt:
        sys.exit(130)
