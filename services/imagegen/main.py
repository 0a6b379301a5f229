"""The ImageGen capability as a server: `capmesh serve imagegen`."""

from __future__ import annotations

from capmesh.imagegen.v1 import imagegen_service_pb2, imagegen_service_pb2_grpc
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.imagegen.config import ENV_PREFIX, ImagegenSettings
from capmesh.services.imagegen.engine import make_engine
from capmesh.services.imagegen.servicer import ImageGenServicer

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = ImagegenSettings


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    return CapabilityService.for_engine(
        "imagegen", settings, engine, ImageGenServicer(engine),
        imagegen_service_pb2_grpc.add_ImageGenServiceServicer_to_server,
        imagegen_service_pb2.DESCRIPTOR.services_by_name["ImageGenService"],
        close_engine=True,
    )
