"""A gateway as its own process (settings from CAPMESH_GATEWAY_* variables), for restart tests:
`python -m tests.jobs.gateway_process`; it prints `capmesh gateway listening on grpc HOST:PORT ...`."""

from __future__ import annotations

from capmesh.gateway.server.config import ENV_PREFIX, GatewaySettings
from capmesh.gateway.server.main import run
from capmesh.services.runtime.settings import load_settings

if __name__ == "__main__":
    run(load_settings(GatewaySettings, ENV_PREFIX))
