"""DocGenService over gRPC: read the context files, run the engine's stream, convert each event.

The engine is async (it waits on LLM calls, not on a GPU), so the servicer awaits it directly under
an admission slot instead of running it in the runtime's worker threads. When the caller cancels or
its deadline passes, grpc cancels this handler's task; closing the engine's stream then cancels the
section tasks and their LLM calls.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TypeVar

import grpc
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from capmesh.common.v1 import artifact_pb2
from capmesh.docgen.v1 import docgen_service_pb2 as pb
from capmesh.docgen.v1 import docgen_service_pb2_grpc
from capmesh.services.docgen import convert
from capmesh.services.docgen.domain import ContextFile
from capmesh.services.docgen.engine import DocGenEngine
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import InvalidArgument, Violations
from capmesh.services.runtime.streaming import Runtime, token_for

R = TypeVar("R")


class DocGenServicer(docgen_service_pb2_grpc.DocGenServiceServicer):
    def __init__(self, engine: DocGenEngine, runtime: Runtime) -> None:
        self.engine = engine
        self.runtime = runtime

    async def StreamGenerateOutline(
        self, request: pb.StreamGenerateOutlineRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamGenerateOutlineResponse]:
        def start(files: tuple[ContextFile, ...], cancel: CancelToken) -> AsyncGenerator[object, None]:
            return self.engine.generate_outline(convert.outline_request_from_proto(request, files), cancel)

        async for message in self._stream(context, request.context_files, start, convert.outline_response):
            yield message

    async def StreamGenerateDocument(
        self, request: pb.StreamGenerateDocumentRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamGenerateDocumentResponse]:
        def start(files: tuple[ContextFile, ...], cancel: CancelToken) -> AsyncGenerator[object, None]:
            return self.engine.generate_document(convert.document_request_from_proto(request, files), cancel)

        async for message in self._stream(context, request.context_files, start, convert.document_response):
            yield message

    async def _stream(
        self,
        context: grpc.aio.ServicerContext,
        files: RepeatedCompositeFieldContainer[artifact_pb2.Artifact],
        start: Callable[[tuple[ContextFile, ...], CancelToken], AsyncGenerator[object, None]],
        respond: Callable[[object], R],
    ) -> AsyncIterator[R]:
        """Reads the context files, then streams the engine's events (`start(files, cancel)`) as
        `respond(event)` messages under an admission slot."""
        cancel = token_for(context)
        read = await self._context(files)
        async with self.runtime.slot():
            events = start(read, cancel)
            try:
                async for event in events:
                    yield respond(event)
            finally:
                await events.aclose()  # at once, not when collected: it cancels the sections still writing

    async def _context(self, files: RepeatedCompositeFieldContainer[artifact_pb2.Artifact]) -> tuple[ContextFile, ...]:
        """Each context file's text; every unreadable or non-UTF-8 file is named in one error."""
        limit = self.engine.settings.max_context_files
        violations = Violations()
        violations.check(len(files) <= limit, "context_files", f"must have at most {limit} files")
        violations.raise_if_any()
        read: list[ContextFile] = []
        for number, artifact in enumerate(files, start=1):
            field = f"context_files[{number - 1}]"
            try:
                data = await self.runtime.read_artifact(artifact, field)
                read.append(ContextFile(convert.context_file_name(artifact, number), data.decode("utf-8")))
            except InvalidArgument as exc:
                violations.items.extend(exc.violations)
            except UnicodeDecodeError:
                violations.add(field, "must be UTF-8 text")
        violations.raise_if_any()
        return tuple(read)
