"""The LLM capability as a server: `capmesh serve llm`."""

from __future__ import annotations

import asyncio

from capmesh.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from capmesh.services.llm.config import ENV_PREFIX, LlmSettings
from capmesh.services.llm.engine import make_engine
from capmesh.services.llm.servicer import LlmServicer
from capmesh.services.runtime.server import CapabilityService

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = LlmSettings
SERVICE_NAME = llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    servicer = LlmServicer(engine)

    async def stop_engine() -> None:
        await asyncio.to_thread(engine.close)  # joins the scheduler thread

    service = CapabilityService(
        capability="llm",
        settings=settings,
        servicers=[(llm_service_pb2_grpc.add_LlmServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        models=engine.models,
        engine_name=engine.name,
        on_stop=stop_engine,
    )
    servicer.service = service
    return service
