"""The TTS capability as a server: `capmesh serve tts`."""

from __future__ import annotations

from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.tts.config import ENV_PREFIX, TtsSettings
from capmesh.services.tts.engine import make_engine
from capmesh.services.tts.servicer import TtsServicer

__all__ = ["ENV_PREFIX", "Settings", "build_service"]

Settings = TtsSettings


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    return CapabilityService.for_engine(
        "tts", settings, engine, TtsServicer(engine),
        tts_service_pb2_grpc.add_TtsServiceServicer_to_server,
        tts_service_pb2.DESCRIPTOR.services_by_name["TtsService"],
    )
