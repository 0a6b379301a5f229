"""The TalkingHead capability as a server: `capmesh serve talkinghead`.

Text in a request is spoken by the TTS capability behind the gateway the service registers with;
stopping the service closes the engine and that gateway channel.
"""

from __future__ import annotations

from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.streaming import Runtime
from capmesh.services.talkinghead.config import ENV_PREFIX
from capmesh.services.talkinghead.config import TalkingheadSettings as Settings
from capmesh.services.talkinghead.engine import make_engine
from capmesh.services.talkinghead.servicer import TalkingHeadServicer
from capmesh.services.talkinghead.speech import GatewaySpeech

__all__ = ["ENV_PREFIX", "Settings", "build_service"]


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    runtime = Runtime("talkinghead", settings)
    speech = GatewaySpeech(settings)
    servicer = TalkingHeadServicer(engine, runtime, speech)
    return CapabilityService.of_engine(engine, runtime, servicer, also_close=speech.close)
