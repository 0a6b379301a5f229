"""The ImageGen capability as a server: `capmesh serve imagegen`."""

from __future__ import annotations

from capmesh.services.imagegen.config import ENV_PREFIX
from capmesh.services.imagegen.config import ImagegenSettings as Settings
from capmesh.services.imagegen.engine import make_engine
from capmesh.services.imagegen.servicer import ImageGenServicer
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.streaming import Runtime

__all__ = ["ENV_PREFIX", "Settings", "build_service"]


def build_service(settings: Settings) -> CapabilityService:
    engine = make_engine(settings)
    runtime = Runtime("imagegen", settings)
    return CapabilityService.of_engine(engine, runtime, ImageGenServicer(engine, runtime))
