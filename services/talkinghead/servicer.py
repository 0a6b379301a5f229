"""TalkingHeadService over gRPC: check, wait for a slot, speak text (TTS), resolve the artifacts, run
the engine, and stream progress (one overall percent, see `stages.py`), the mp4 and the result.

A request that breaks a rule, and a call that finds the admission line full, fail before the first
message (so that the HTTP bridge can still answer 400 or 429). Every later failure is reported as
stage `failed` before the error status. The whole call runs under one admission slot: a waiting call
reports `queued` before any work, and the stages then follow in the order `stages.py` lists.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from capmesh.services.runtime.admission import queued_update
from capmesh.services.runtime.errors import InvalidArgument, Violations
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.runtime.streaming import Runtime
from capmesh.services.talkinghead import convert
from capmesh.services.talkinghead.domain import TalkingHeadRequest, TalkingHeadResult
from capmesh.services.talkinghead.engine import TalkingHeadEngine
from capmesh.services.talkinghead.speech import GatewaySpeech, Speech
from capmesh.services.talkinghead.stages import (
    COMPLETED,
    DOWNLOADING,
    FAILED,
    PROCESSING,
    SYNTHESIZING,
    OverallProgress,
)
from capmesh.talkinghead.v1 import talkinghead_service_pb2 as pb
from capmesh.talkinghead.v1 import talkinghead_service_pb2_grpc

PLACEHOLDER = b"-"  # stands for an input not read yet, so that the numbers can be checked first


class TalkingHeadServicer(talkinghead_service_pb2_grpc.TalkingHeadServiceServicer):
    def __init__(self, engine: TalkingHeadEngine, runtime: Runtime, speech: GatewaySpeech) -> None:
        self.engine = engine
        self.runtime = runtime
        self.speech = speech

    async def StreamGenerateTalkingHead(self, request, context):
        progress = OverallProgress(with_text=bool(request.text))

        def report(update: ProgressUpdate) -> pb.StreamGenerateTalkingHeadResponse:
            return convert.progress_response(progress.overall(update))

        self._check(request)
        async with self.runtime.ticket() as ticket:
            yield report(ProgressUpdate(PROCESSING, 0.0, "accepted"))
            try:
                async for position in ticket.positions():
                    yield report(queued_update(position))
                yield report(ProgressUpdate(PROCESSING, 100.0, "started"))
                audio = b""
                if request.text:
                    async with contextlib.aclosing(self._speak(request, context)) as spoken:
                        async for item in spoken:
                            if isinstance(item, Speech):
                                audio = item.wav
                            else:
                                yield report(item)
                yield report(ProgressUpdate(DOWNLOADING, 0.0, "resolving the input artifacts"))
                domain = await self._resolve(request, audio)
                events = self.runtime.events(context, self.engine.generate, domain, admitted=True)
                async with contextlib.aclosing(events):  # a cancel stops the engine now (see Runtime.events)
                    async for event in events:
                        if isinstance(event, ProgressUpdate):
                            yield report(event)
                        elif isinstance(event, TalkingHeadResult):
                            yield report(ProgressUpdate(COMPLETED, 100.0, f"{event.frame_count} frames"))
                            for chunk in convert.chunk_responses(event):
                                yield chunk
                            yield convert.result_response(event)
            except Exception as exc:
                yield report(ProgressUpdate(FAILED, progress.percent, str(exc)[:200]))
                raise

    def _speak(
        self, request: pb.StreamGenerateTalkingHeadRequest, context
    ) -> AsyncGenerator[ProgressUpdate | Speech, None]:
        timeout = context.time_remaining() if context is not None else None
        return self.speech.speak(request.text, request.voice, request.language, SYNTHESIZING, timeout)

    def _check(self, request: pb.StreamGenerateTalkingHeadRequest) -> None:
        """Every field that can be checked before any work: audio or text, and the numbers."""
        violations = Violations()
        violations.check(
            _given(request, "reference_image"), "reference_image", "is required: a PNG, JPEG or WebP portrait"
        )
        has_audio = _given(request, "audio")
        if has_audio and request.text:
            violations.add("text", "set either audio or text, not both")
        elif not has_audio and not request.text:
            violations.add("audio", "is required: the driving audio, or text to speak")
        if not request.text:
            violations.check(not request.voice, "voice", "is only used with text")
            violations.check(not request.language, "language", "is only used with text")
        try:
            self.engine.validate(convert.request_from_proto(request, PLACEHOLDER, PLACEHOLDER))
        except InvalidArgument as exc:
            violations.items.extend(exc.violations)
        violations.raise_if_any()

    async def _resolve(self, request: pb.StreamGenerateTalkingHeadRequest, speech: bytes) -> TalkingHeadRequest:
        """Reads the artifacts (the audio is `speech` when the request gave text) and checks every
        field, reporting all bad fields in one error."""
        violations = Violations()
        data = {"audio": speech}
        fields = ("reference_image",) if request.text else ("reference_image", "audio")
        for name in fields:
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


def _given(request: pb.StreamGenerateTalkingHeadRequest, name: str) -> bool:
    """Whether the artifact field `name` holds data or a file id (an empty one counts as absent)."""
    artifact = getattr(request, name)
    return bool(artifact.inline_data or artifact.file_id)
