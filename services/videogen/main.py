"""The VideoGen capability as a server: `capmesh serve videogen`."""

from __future__ import annotations

from capmesh.videogen.v1 import videogen_service_pb2, videogen_service_pb2_grpc
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.videogen.config import ENV_PREFIX, VideogenSettings
from capmesh.services.videogen.engine import make_engine
from capmesh.services.videogen.servicer import VideoGenServicer

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = VideogenSettings


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    return CapabilityService.for_engine(
        "videogen", settings, engine, VideoGenServicer(engine),
        videogen_service_pb2_grpc.add_VideoGenServiceServicer_to_server,
        videogen_service_pb2.DESCRIPTOR.services_by_name["VideoGenService"],
        close_engine=True,
    )
