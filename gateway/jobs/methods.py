"""The capability methods a job may call, with their request and response types."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import message_factory
from google.protobuf.message import Message

from capmesh.services.catalog import find_method
from capmesh.services.runtime.errors import InvalidArgument


@dataclass(frozen=True)
class JobMethod:
    path: str
    request_type: str  # full name, matched against the Any's type
    response_class: type[Message]
    server_streaming: bool


def resolve_method(path: str) -> JobMethod:
    """ "/capmesh.tts.v1.TtsService/StreamSynthesize" -> its types; INVALID_ARGUMENT otherwise."""
    service, _, method = path.lstrip("/").rpartition("/")
    if not path.startswith("/") or not service.startswith("capmesh.") or not method:
        raise InvalidArgument.single(
            "method",
            'must be a capability method like "/capmesh.tts.v1.TtsService/StreamSynthesize"',
            reason="UNKNOWN_METHOD",
        )
    descriptor = find_method(path)
    if descriptor is None:
        raise InvalidArgument.single("method", f"{path} is not a capability method", reason="UNKNOWN_METHOD")
    if descriptor.client_streaming:
        raise InvalidArgument.single(
            "method", f"{path} takes a request stream; jobs carry one request", reason="UNSUPPORTED_METHOD"
        )
    return JobMethod(
        path,
        descriptor.input_type.full_name,
        message_factory.GetMessageClass(descriptor.output_type),
        descriptor.server_streaming,
    )
