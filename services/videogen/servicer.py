"""VideoGenService over gRPC: resolve the image artifact, run the engine, stream its events back."""

from __future__ import annotations

import asyncio

from capmesh.services.runtime.errors import InvalidArgument
from capmesh.services.runtime.streaming import Runtime
from capmesh.services.videogen import convert
from capmesh.services.videogen.engine import VideoEngine
from capmesh.videogen.v1 import videogen_service_pb2_grpc


class VideoGenServicer(videogen_service_pb2_grpc.VideoGenServiceServicer):
    def __init__(self, engine: VideoEngine, runtime: Runtime) -> None:
        self.engine = engine
        self.runtime = runtime

    async def StreamGenerateVideo(self, request, context):
        try:
            image = await self.runtime.read_artifact(request.image, "image")
        except InvalidArgument as missing_image:
            raise await self._with_other_violations(missing_image, request) from None
        domain = convert.request_from_proto(request, image)
        async for event in self.runtime.events(context, self.engine.generate, domain):
            yield convert.response_from_event(event)

    async def _with_other_violations(self, missing_image: InvalidArgument, request) -> InvalidArgument:
        """One error naming every bad field: the artifact's, plus the rest of the request's."""
        violations = list(missing_image.violations)
        try:
            await asyncio.to_thread(self.engine.validate, convert.request_from_proto(request, b""))
        except InvalidArgument as invalid:
            violations += [v for v in invalid.violations if v.field != "image"]
        return InvalidArgument(violations)
