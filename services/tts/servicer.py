"""TtsService over gRPC: a thin adapter that converts, runs the engine through the runtime bridge
(worker thread, admission, cancellation), and converts back."""

from __future__ import annotations

from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.streaming import engine_events, engine_result
from capmesh.services.tts import convert
from capmesh.services.tts.engine import TtsEngine
from capmesh.tts.v1 import tts_service_pb2_grpc


class TtsServicer(tts_service_pb2_grpc.TtsServiceServicer):
    def __init__(self, engine: TtsEngine) -> None:
        self.engine = engine
        self.service: CapabilityService | None = None  # set by build_service once the service exists

    def _bridge(self, context):
        assert self.service is not None, "build_service attaches the service before serving"
        return self.service.bridge(context)

    async def StreamSynthesize(self, request, context):
        domain = convert.synthesis_request_from_proto(request)
        work = lambda cancel, emit: self.engine.synthesize(domain, cancel, emit)  # noqa: E731
        async for item in engine_events(work, **self._bridge(context)):
            yield convert.synthesize_event_to_proto(item)

    async def StreamSynthesizeScene(self, request, context):
        domain = convert.scene_request_from_proto(request)
        work = lambda cancel, emit: self.engine.synthesize_scene(domain, cancel, emit)  # noqa: E731
        async for item in engine_events(work, **self._bridge(context)):
            yield convert.scene_event_to_proto(item)

    async def ListVoices(self, request, context):
        # Blocking (espeak-ng runs, a VITS model may load), so it runs in the worker pool too.
        voices = await engine_result(lambda cancel, emit: self.engine.list_voices(request.language),
                                     **self._bridge(context))
        return convert.voices_to_proto(voices)
