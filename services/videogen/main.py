"""The VideoGen capability as a server: `capmesh serve videogen`."""

from __future__ import annotations

import asyncio

from capmesh.services.runtime.server import CapabilityService
from capmesh.services.videogen.config import ENV_PREFIX, VideogenSettings
from capmesh.services.videogen.engine import make_engine
from capmesh.services.videogen.servicer import VideoGenServicer
from capmesh.videogen.v1 import videogen_service_pb2, videogen_service_pb2_grpc

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = VideogenSettings
SERVICE_NAME = videogen_service_pb2.DESCRIPTOR.services_by_name["VideoGenService"].full_name


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    servicer = VideoGenServicer(engine)
    service = CapabilityService(
        capability="videogen",
        settings=settings,
        servicers=[(videogen_service_pb2_grpc.add_VideoGenServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        models=engine.models,  # the runtime reports, unloads and finally closes them
        engine_name=engine.name,
        on_stop=lambda: asyncio.to_thread(engine.close),
    )
    servicer.service = service
    return service
