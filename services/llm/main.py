"""The LLM capability as a server: `capmesh serve llm`."""

from __future__ import annotations

from capmesh.services.llm.config import ENV_PREFIX
from capmesh.services.llm.config import LlmSettings as Settings
from capmesh.services.llm.engine import make_engine
from capmesh.services.llm.servicer import LlmServicer
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.streaming import Runtime

__all__ = ["ENV_PREFIX", "Settings", "build_service"]


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    runtime = Runtime("llm", settings)
    return CapabilityService.of_engine(engine, runtime, LlmServicer(engine, runtime))
