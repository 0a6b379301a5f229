"""The TalkingHead capability as a server: `capmesh serve talkinghead`."""

from __future__ import annotations

from capmesh.services.runtime.server import CapabilityService
from capmesh.services.talkinghead.config import ENV_PREFIX, TalkingheadSettings
from capmesh.services.talkinghead.engine import make_engine
from capmesh.services.talkinghead.servicer import TalkingHeadServicer
from capmesh.talkinghead.v1 import talkinghead_service_pb2, talkinghead_service_pb2_grpc

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = TalkingheadSettings
SERVICE_NAME = talkinghead_service_pb2.DESCRIPTOR.services_by_name["TalkingHeadService"].full_name


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    servicer = TalkingHeadServicer(engine, settings)
    service = CapabilityService(
        capability="talkinghead",
        settings=settings,
        servicers=[(talkinghead_service_pb2_grpc.add_TalkingHeadServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        models=engine.models,
        engine_name=engine.name,
    )
    servicer.service = service
    return service
