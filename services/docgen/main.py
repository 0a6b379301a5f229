"""The DocGen capability as a server: `capmesh serve docgen`.

DocGen has no model of its own: it writes through the LLM capability behind the gateway it
registers with, so the service has no model manager, and stopping it closes its gateway channel.
"""

from __future__ import annotations

from capmesh.services.docgen.config import ENV_PREFIX
from capmesh.services.docgen.config import DocgenSettings as Settings
from capmesh.services.docgen.engine import DocGenEngine, Llm
from capmesh.services.docgen.llm_client import GatewayLlm
from capmesh.services.docgen.servicer import DocGenServicer
from capmesh.services.runtime.server import CapabilityService, generated_service
from capmesh.services.runtime.streaming import Runtime

__all__ = ["ENV_PREFIX", "Settings", "build_service"]


def build_service(settings: Settings, llm: Llm | None = None) -> CapabilityService:
    """`llm` replaces the LLM capability behind the gateway (tests pass a fake)."""
    engine = DocGenEngine(llm or GatewayLlm(settings), settings)
    runtime = Runtime("docgen", settings)
    servicer = DocGenServicer(engine, runtime)
    add_servicer, service = generated_service(servicer)
    return CapabilityService(
        "docgen",
        settings,
        [(add_servicer, servicer)],
        [service.full_name],
        runtime=runtime,
        engine_name=engine.name,
        on_stop=engine.close,
    )
