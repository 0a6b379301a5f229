"""The TTS capability as a server: `capmesh serve tts`."""

from __future__ import annotations

from capmesh.services.runtime.server import CapabilityService
from capmesh.services.tts.config import ENV_PREFIX, TtsSettings
from capmesh.services.tts.engine import make_engine
from capmesh.services.tts.servicer import TtsServicer
from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = TtsSettings
SERVICE_NAME = tts_service_pb2.DESCRIPTOR.services_by_name["TtsService"].full_name


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    servicer = TtsServicer(engine)
    service = CapabilityService(
        capability="tts",
        settings=settings,
        servicers=[(tts_service_pb2_grpc.add_TtsServiceServicer_to_server, servicer)],
        service_names=[SERVICE_NAME],
        models=engine.models,
        engine_name=engine.name,  # the runtime unloads engine.models on shutdown
    )
    servicer.service = service
    return service
