"""The LLM capability as a server: `capmesh serve llm`."""

from __future__ import annotations

from capmesh.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.llm.config import ENV_PREFIX, LlmSettings
from capmesh.services.llm.engine import make_engine
from capmesh.services.llm.servicer import LlmServicer

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = LlmSettings


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    return CapabilityService.for_engine(
        "llm", settings, engine, LlmServicer(engine),
        llm_service_pb2_grpc.add_LlmServiceServicer_to_server,
        llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"],
        close_engine=True,  # joins the scheduler thread
    )
