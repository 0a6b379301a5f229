"""ImageGenService over gRPC: convert, run the engine, stream its events back."""

from __future__ import annotations

from capmesh.imagegen.v1 import imagegen_service_pb2_grpc
from capmesh.services.imagegen import convert
from capmesh.services.imagegen.engine import ImageEngine
from capmesh.services.runtime.streaming import Runtime


class ImageGenServicer(imagegen_service_pb2_grpc.ImageGenServiceServicer):
    def __init__(self, engine: ImageEngine, runtime: Runtime) -> None:
        self.engine = engine
        self.runtime = runtime

    async def StreamGenerateImages(self, request, context):
        domain = convert.request_from_proto(request)
        async for event in self.runtime.events(context, self.engine.generate, domain):
            yield convert.response_from_event(event)
