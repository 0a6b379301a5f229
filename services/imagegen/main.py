"""The ImageGen capability as a server: `capmesh serve imagegen`."""

from __future__ import annotations

import asyncio

from capmesh.imagegen.v1 import imagegen_service_pb2, imagegen_service_pb2_grpc
from capmesh.services.imagegen.config import ENV_PREFIX, ImagegenSettings
from capmesh.services.imagegen.engine import make_engine
from capmesh.services.imagegen.servicer import ImageGenServicer
from capmesh.services.runtime.server import CapabilityService

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = ImagegenSettings
SERVICE_NAME = imagegen_service_pb2.DESCRIPTOR.services_by_name["ImageGenService"].full_name


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    servicer = ImageGenServicer(engine)
    service = CapabilityService(
        capability="imagegen",
        settings=settings,
        servicers=[(imagegen_service_pb2_grpc.add_ImageGenServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        models=engine.models,  # the runtime reports, unloads and finally closes them
        engine_name=engine.name,
        on_stop=lambda: asyncio.to_thread(engine.close),
    )
    servicer.service = service
    return service
