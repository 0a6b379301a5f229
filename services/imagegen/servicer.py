"""ImageGenService over gRPC: convert, run the engine, stream its events back."""

from __future__ import annotations

from capmesh.imagegen.v1 import imagegen_service_pb2_grpc
from capmesh.services.imagegen import convert
from capmesh.services.imagegen.engine import ImageEngine
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.streaming import engine_events


class ImageGenServicer(imagegen_service_pb2_grpc.ImageGenServiceServicer):
    def __init__(self, engine: ImageEngine) -> None:
        self.engine = engine
        self.service: CapabilityService | None = None  # set by build_service once the service exists

    async def StreamGenerateImages(self, request, context):
        assert self.service is not None, "build_service attaches the service before serving"
        domain = convert.request_from_proto(request)
        work = lambda cancel, emit: self.engine.generate(domain, cancel, emit)  # noqa: E731
        async for event in engine_events(work, **self.service.bridge(context)):
            yield convert.response_from_event(event)
