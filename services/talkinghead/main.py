"""The TalkingHead capability as a server: `capmesh serve talkinghead`."""

from __future__ import annotations

from capmesh.talkinghead.v1 import talkinghead_service_pb2, talkinghead_service_pb2_grpc
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.talkinghead.config import ENV_PREFIX, TalkingheadSettings
from capmesh.services.talkinghead.engine import make_engine
from capmesh.services.talkinghead.servicer import TalkingHeadServicer

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = TalkingheadSettings


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    return CapabilityService.for_engine(
        "talkinghead", settings, engine, TalkingHeadServicer(engine, settings),
        talkinghead_service_pb2_grpc.add_TalkingHeadServiceServicer_to_server,
        talkinghead_service_pb2.DESCRIPTOR.services_by_name["TalkingHeadService"],
    )
