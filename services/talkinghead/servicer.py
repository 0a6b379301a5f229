"""TalkingHeadService over gRPC: resolve the artifacts, run the engine, stream progress, mp4, result."""

from __future__ import annotations

from capmesh.services.runtime.errors import InvalidArgument, Violations
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.runtime.streaming import Runtime
from capmesh.services.talkinghead import convert
from capmesh.services.talkinghead.domain import TalkingHeadRequest, TalkingHeadResult
from capmesh.services.talkinghead.engine import STAGE_DOWNLOADING, TalkingHeadEngine
from capmesh.talkinghead.v1 import talkinghead_service_pb2 as pb
from capmesh.talkinghead.v1 import talkinghead_service_pb2_grpc

ARTIFACT_FIELDS = ("reference_image", "audio")


class TalkingHeadServicer(talkinghead_service_pb2_grpc.TalkingHeadServiceServicer):
    def __init__(self, engine: TalkingHeadEngine, runtime: Runtime) -> None:
        self.engine = engine
        self.runtime = runtime

    async def StreamGenerateTalkingHead(self, request, context):
        yield convert.progress_response(ProgressUpdate(STAGE_DOWNLOADING, 0.0, "resolving the input artifacts"))
        domain = await self._resolve(request)
        async for item in self.runtime.events(context, self.engine.generate, domain):
            if isinstance(item, ProgressUpdate):
                yield convert.progress_response(item)
            elif isinstance(item, TalkingHeadResult):
                for chunk in convert.chunk_responses(item):
                    yield chunk
                yield convert.result_response(item)

    async def _resolve(self, request: pb.StreamGenerateTalkingHeadRequest) -> TalkingHeadRequest:
        """Reads both artifacts and checks every field, reporting all bad fields in one error."""
        violations = Violations()
        data: dict[str, bytes] = {}
        for name in ARTIFACT_FIELDS:
            try:
                data[name] = await self.runtime.read_artifact(getattr(request, name), name)
            except InvalidArgument as exc:
                violations.items.extend(exc.violations)
                data[name] = b""
        domain = convert.request_from_proto(request, data["reference_image"], data["audio"])
        try:
            self.engine.validate(domain)
        except InvalidArgument as exc:
            reported = {v.field.split(".")[0] for v in violations.items}
            violations.items.extend(v for v in exc.violations if v.field not in reported)
        violations.raise_if_any()
        return domain
