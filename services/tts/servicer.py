"""TtsService over gRPC: a thin adapter that converts, runs the engine through the runtime (worker
thread, admission, cancellation), and converts back."""

from __future__ import annotations

from capmesh.services.runtime.streaming import Runtime
from capmesh.services.tts import convert
from capmesh.services.tts.engine import TtsEngine
from capmesh.tts.v1 import tts_service_pb2_grpc


class TtsServicer(tts_service_pb2_grpc.TtsServiceServicer):
    def __init__(self, engine: TtsEngine, runtime: Runtime) -> None:
        self.engine = engine
        self.runtime = runtime

    async def StreamSynthesize(self, request, context):
        domain = convert.synthesis_request_from_proto(request)
        async for item in self.runtime.events(context, self.engine.synthesize, domain):
            yield convert.synthesize_event_to_proto(item)

    async def StreamSynthesizeScene(self, request, context):
        domain = convert.scene_request_from_proto(request)
        async for item in self.runtime.events(context, self.engine.synthesize_scene, domain):
            yield convert.scene_event_to_proto(item)

    async def ListVoices(self, request, context):
        # Blocking (espeak-ng runs, a VITS model may load), so it runs in the worker pool too.
        voices = await self.runtime.result(context, lambda cancel, emit: self.engine.list_voices(request.language))
        return convert.voices_to_proto(voices)
