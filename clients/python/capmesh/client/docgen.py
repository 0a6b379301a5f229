"""A typed helper over `capmesh.docgen.v1.DocGenService`: an outline from a query, a document from an outline.

from capmesh.client import sync_channel
from capmesh.client.docgen import DocGenClient

with sync_channel("127.0.0.1:50051") as channel:
    client = DocGenClient(channel)
    outline = client.outline("A short guide to sourdough baking", max_sections=4).outline
    document = client.write(outline)
    open(document.result.document.name, "wb").write(document.data)

An outline is saved and read as the proto's JSON (`outline_to_json` / `outline_from_json`):
{"title": "...", "nodes": [{"title": "...", "summary": "...", "children": [...]}]}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, Unpack

import grpc
from google.protobuf import json_format

from capmesh.client.streams import StreamedFile, receive
from capmesh.common.v1 import artifact_pb2, progress_pb2
from capmesh.docgen.v1 import docgen_service_pb2 as pb
from capmesh.docgen.v1 import docgen_service_pb2_grpc as pb_grpc

__all__ = [
    "DocGenClient",
    "DocGenOptions",
    "GeneratedDocument",
    "context_artifact",
    "document_format",
    "outline_from_json",
    "outline_to_json",
]

FORMATS = {"markdown": pb.DOCUMENT_FORMAT_MARKDOWN, "md": pb.DOCUMENT_FORMAT_MARKDOWN, "docx": pb.DOCUMENT_FORMAT_DOCX}


@dataclass(frozen=True)
class GeneratedDocument:
    """The document file (checked against the result's size and sha256), each section's text as
    streamed (by section number from 1), and the result."""

    data: bytes
    section_texts: dict[int, str]
    result: pb.DocumentResult


def document_format(name: str) -> pb.DocumentFormat:
    """ "markdown" (or "md") or "docx"; ValueError otherwise."""
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown document format {name!r}: use markdown or docx") from None


def outline_to_json(outline: pb.Outline) -> str:
    return json_format.MessageToJson(outline, indent=2, ensure_ascii=False)


def outline_from_json(text: str) -> pb.Outline:
    """An Outline from its JSON, or from an OutlineResult's / a job response's JSON that holds one."""
    import json

    data = json.loads(text)
    if isinstance(data, dict) and "outline" in data:
        data = data["outline"]
    return json_format.ParseDict(data, pb.Outline())


def context_artifact(path: Path) -> artifact_pb2.Artifact:
    """A local text file as an inline context artifact named after the file."""
    return artifact_pb2.Artifact(inline_data=path.read_bytes(), mime_type="text/plain", name=path.name)


class DocGenOptions(TypedDict, total=False):
    """The keywords both calls take: what the service draws on, and the call's options."""

    context_files: Sequence[artifact_pb2.Artifact]  # text files to draw on (see `context_artifact`)
    language: str  # empty: the service decides
    model: str  # the LLM model; empty: the service's default
    on_progress: Callable[[progress_pb2.Progress], None] | None
    timeout: float | None
    metadata: Sequence[tuple[str, str]] | None


class DocGenClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.DocGenServiceStub(channel)

    def outline(
        self, query: str, *, max_sections: int = 0, max_depth: int = 0, **options: Unpack[DocGenOptions]
    ) -> pb.OutlineResult:
        """The outline for `query` (0 limits: the service's defaults); raises a CapmeshClientError on failure."""
        fields = dict(query=query, max_sections=max_sections, max_depth=max_depth)
        return self._stream(
            self._stub.StreamGenerateOutline, pb.StreamGenerateOutlineRequest, fields, options, lambda _chunk: None
        )

    def write(
        self,
        outline: pb.Outline,
        *,
        format: pb.DocumentFormat = pb.DOCUMENT_FORMAT_MARKDOWN,
        max_concurrent_sections: int = 0,
        on_section_text: Callable[[int, str], None] | None = None,
        **options: Unpack[DocGenOptions],
    ) -> GeneratedDocument:
        """Writes the document, passing each piece of section text to `on_section_text(section, text)`
        as it is written; raises a CapmeshClientError on failure."""
        fields = dict(outline=outline, format=format, max_concurrent_sections=max_concurrent_sections)
        document = StreamedFile("docgen", "document")
        texts: dict[int, str] = {}

        def on_chunk(chunk: artifact_pb2.DataChunk) -> None:
            if chunk.index == 0:
                document.add(chunk.offset, chunk.data)
                return
            text = chunk.data.decode("utf-8", errors="replace")
            texts[chunk.index] = texts.get(chunk.index, "") + text
            if on_section_text is not None:
                on_section_text(chunk.index, text)

        result = self._stream(
            self._stub.StreamGenerateDocument, pb.StreamGenerateDocumentRequest, fields, options, on_chunk
        )
        return GeneratedDocument(document.verified(result.document), texts, result)

    def _stream(
        self,
        rpc: Callable[..., Any],
        request_type: Callable[..., Any],
        fields: dict[str, Any],
        options: DocGenOptions,
        on_chunk: Callable[[artifact_pb2.DataChunk], None],
    ) -> Any:
        """The call's result message, for the request of `fields` and the shared `options`."""
        request = request_type(
            **fields,
            context_files=options.get("context_files", ()),
            language=options.get("language", ""),
            model=options.get("model", ""),
        )
        responses = rpc(request, timeout=options.get("timeout"), metadata=options.get("metadata"))
        return receive(responses, "docgen", on_chunk, options.get("on_progress"))
