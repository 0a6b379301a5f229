"""The TTS capability as a server: `capmesh serve tts`."""

from __future__ import annotations

from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.streaming import Runtime
from capmesh.services.tts.config import ENV_PREFIX
from capmesh.services.tts.config import TtsSettings as Settings
from capmesh.services.tts.engine import make_engine
from capmesh.services.tts.servicer import TtsServicer

__all__ = ["ENV_PREFIX", "Settings", "build_service"]


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    runtime = Runtime("tts", settings)
    return CapabilityService.of_engine(engine, runtime, TtsServicer(engine, runtime))
