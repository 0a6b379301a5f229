"""The VideoGen capability as a server: `capmesh serve videogen`."""

from __future__ import annotations

from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.streaming import Runtime
from capmesh.services.videogen.config import ENV_PREFIX
from capmesh.services.videogen.config import VideogenSettings as Settings
from capmesh.services.videogen.engine import make_engine
from capmesh.services.videogen.servicer import VideoGenServicer

__all__ = ["ENV_PREFIX", "Settings", "build_service"]


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    runtime = Runtime("videogen", settings)
    return CapabilityService.of_engine(engine, runtime, VideoGenServicer(engine, runtime))
