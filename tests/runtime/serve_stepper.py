"""Runs the runtime's stepper capability as a real process: `python -m tests.runtime.serve_stepper`."""

from __future__ import annotations

import sys

from capmesh.services.runtime.server import run
from capmesh.services.runtime.settings import ServerSettings
from tests.runtime.stepper import build_stepper_service

if __name__ == "__main__":
    step_s = float(sys.argv[1]) if len(sys.argv) > 1 else 0.05
    service, _ = build_stepper_service(ServerSettings(port=0, grace_period_s=20, max_concurrency=2), step_s=step_s)
    run(service)
