"""The TalkingHead capability as a server: `capmesh serve talkinghead`."""

from __future__ import annotations

from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.streaming import Runtime
from capmesh.services.talkinghead.config import ENV_PREFIX
from capmesh.services.talkinghead.config import TalkingheadSettings as Settings
from capmesh.services.talkinghead.engine import make_engine
from capmesh.services.talkinghead.servicer import TalkingHeadServicer

__all__ = ["ENV_PREFIX", "Settings", "build_service"]


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    runtime = Runtime("talkinghead", settings)
    return CapabilityService.of_engine(engine, runtime, TalkingHeadServicer(engine, runtime))
