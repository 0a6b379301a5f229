"""The one place where capmesh.docgen.v1 messages and the DocGen domain meet."""

from __future__ import annotations

from capmesh.common.v1 import artifact_pb2
from capmesh.docgen.v1 import docgen_service_pb2 as pb
from capmesh.services.docgen.domain import (
    ContextFile,
    DocumentFormat,
    DocumentRequest,
    DocumentResult,
    Outline,
    OutlineNode,
    OutlineRequest,
    OutlineResult,
    SectionText,
)
from capmesh.services.runtime.chunks import FileChunk
from capmesh.services.runtime.protoconv import (
    EventFields,
    chunk_to_proto,
    event_response,
    message_from,
    produced_file_to_proto,
)

_FORMATS = {
    pb.DOCUMENT_FORMAT_UNSPECIFIED: DocumentFormat.MARKDOWN,
    pb.DOCUMENT_FORMAT_MARKDOWN: DocumentFormat.MARKDOWN,
    pb.DOCUMENT_FORMAT_DOCX: DocumentFormat.DOCX,
}
_FORMATS_TO_PROTO = {DocumentFormat.MARKDOWN: pb.DOCUMENT_FORMAT_MARKDOWN, DocumentFormat.DOCX: pb.DOCUMENT_FORMAT_DOCX}


def context_file_name(artifact: artifact_pb2.Artifact, number: int) -> str:
    return artifact.name or (artifact.file_id if artifact.HasField("file_id") else "") or f"context file {number}"


def node_from_proto(node: pb.OutlineNode) -> OutlineNode:
    return OutlineNode(
        title=node.title, summary=node.summary, children=tuple(node_from_proto(c) for c in node.children)
    )


def node_to_proto(node: OutlineNode) -> pb.OutlineNode:
    return pb.OutlineNode(title=node.title, summary=node.summary, children=[node_to_proto(c) for c in node.children])


def outline_from_proto(outline: pb.Outline) -> Outline:
    return Outline(title=outline.title, nodes=tuple(node_from_proto(n) for n in outline.nodes))


def outline_to_proto(outline: Outline) -> pb.Outline:
    return pb.Outline(title=outline.title, nodes=[node_to_proto(n) for n in outline.nodes])


def outline_request_from_proto(
    request: pb.StreamGenerateOutlineRequest, context: tuple[ContextFile, ...]
) -> OutlineRequest:
    return OutlineRequest(
        query=request.query,
        context=context,
        language=request.language,
        max_sections=request.max_sections,
        max_depth=request.max_depth,
        model=request.model,
    )


def document_request_from_proto(
    request: pb.StreamGenerateDocumentRequest, context: tuple[ContextFile, ...]
) -> DocumentRequest:
    return DocumentRequest(
        outline=outline_from_proto(request.outline),
        context=context,
        format=_FORMATS.get(request.format, DocumentFormat.MARKDOWN),
        model=request.model,
        max_concurrent_sections=request.max_concurrent_sections,
        language=request.language,
    )


def outline_result_to_proto(result: OutlineResult) -> pb.OutlineResult:
    return pb.OutlineResult(outline=outline_to_proto(result.outline), model=result.model, attempts=result.attempts)


def section_text_to_proto(piece: SectionText) -> artifact_pb2.DataChunk:
    # Section text travels as chunks with index = the section (from 1) and part_index = the attempt;
    # the document file itself is index 0.
    return artifact_pb2.DataChunk(
        data=piece.text.encode(), offset=piece.offset, index=piece.index, part_index=piece.attempt
    )


def document_result_to_proto(result: DocumentResult) -> pb.DocumentResult:
    return pb.DocumentResult(
        document=produced_file_to_proto(result.document),
        sections=[message_from(pb.SectionStats, s) for s in result.sections],
        references=[message_from(pb.Reference, r) for r in result.references],
        model=result.model,
        format=_FORMATS_TO_PROTO[result.format],
    )


_OUTLINE_EVENTS: EventFields = {OutlineResult: ("result", outline_result_to_proto)}
_DOCUMENT_EVENTS: EventFields = {
    SectionText: ("chunk", section_text_to_proto),
    FileChunk: ("chunk", chunk_to_proto),
    DocumentResult: ("result", document_result_to_proto),
}


def outline_response(event: object) -> pb.StreamGenerateOutlineResponse:
    return event_response(pb.StreamGenerateOutlineResponse, event, _OUTLINE_EVENTS)


def document_response(event: object) -> pb.StreamGenerateDocumentResponse:
    return event_response(pb.StreamGenerateDocumentResponse, event, _DOCUMENT_EVENTS)
