"""A capability built only to exercise the runtime: an engine that emits numbered steps.

It serves the TTS contract (any capability contract would do) with an engine whose work is
counting, so the runtime's streaming, cancellation, error mapping and shutdown can be tested
without a model. It is not a stand-in for the TTS engines, which have their own tests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from capmesh.common.v1 import artifact_pb2
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import FailedPrecondition, Violations
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.runtime.protoconv import progress_to_proto
from capmesh.services.runtime.server import CapabilityService
from capmesh.services.runtime.settings import ServerSettings
from capmesh.services.runtime.streaming import Runtime
from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc


@dataclass
class StepChunk:
    index: int


class SteppingEngine:
    """Emits one chunk per step, sleeping `step_s` between steps; records how far it got."""

    def __init__(self, step_s: float = 0.02) -> None:
        self.step_s = step_s
        self.steps_run = 0
        self.stopped = threading.Event()

    def run(self, steps: int, cancel: CancelToken, emit) -> int:
        self.steps_run = 0
        self.stopped.clear()
        try:
            for index in range(steps):
                cancel.raise_if_cancelled()
                time.sleep(self.step_s)
                self.steps_run += 1
                emit(ProgressUpdate("stepping", 100 * (index + 1) / steps, step=index + 1, total_steps=steps))
                emit(StepChunk(index))
            return steps
        finally:
            self.stopped.set()


class SteppingServicer(tts_service_pb2_grpc.TtsServiceServicer):
    """Text "steps:N" runs N steps; "crash" raises a bug; "refuse" raises FailedPrecondition."""

    def __init__(self, engine: SteppingEngine, runtime: Runtime) -> None:
        self.engine = engine
        self.runtime = runtime

    async def StreamSynthesize(self, request, context):
        violations = Violations()
        violations.check(bool(request.text), "text", "must not be empty")
        violations.raise_if_any()
        if request.text == "crash":
            raise ZeroDivisionError("a bug in one request")
        if request.text == "refuse":
            raise FailedPrecondition("the state refuses this", reason="REFUSED_FOR_TEST")
        steps = int(request.text.split(":")[1])
        async for item in self.runtime.events(context, self.engine.run, steps):
            if isinstance(item, ProgressUpdate):
                yield tts_service_pb2.StreamSynthesizeResponse(progress=progress_to_proto(item))
            elif isinstance(item, StepChunk):
                yield tts_service_pb2.StreamSynthesizeResponse(
                    chunk=artifact_pb2.DataChunk(data=b"x", offset=item.index)
                )
            else:
                yield tts_service_pb2.StreamSynthesizeResponse(
                    result=tts_service_pb2.SynthesisResult(sentence_count=item)
                )


def build_stepper_service(
    settings: ServerSettings | None = None, step_s: float = 0.02
) -> tuple[CapabilityService, SteppingEngine]:
    settings = settings or ServerSettings(max_concurrency=2, max_queue=1, grace_period_s=5)
    engine = SteppingEngine(step_s)
    runtime = Runtime("stepper", settings)
    servicer = SteppingServicer(engine, runtime)
    service = CapabilityService(
        capability="stepper",
        settings=settings,
        servicers=[(tts_service_pb2_grpc.add_TtsServiceServicer_to_server, servicer)],
        service_names=[tts_service_pb2.DESCRIPTOR.services_by_name["TtsService"].full_name],
        runtime=runtime,
        engine_name="stepper",
    )
    return service, engine
