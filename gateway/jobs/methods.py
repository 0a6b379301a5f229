"""The capability methods a job may call, with their request and response types."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache

from google.protobuf import descriptor_pool, message_factory

from capmesh.services.runtime.errors import InvalidArgument

# Importing the generated modules registers their descriptors in the default pool.
_CONTRACT_MODULES = (
    "capmesh.tts.v1.tts_service_pb2",
    "capmesh.llm.v1.llm_service_pb2",
    "capmesh.videogen.v1.videogen_service_pb2",
    "capmesh.imagegen.v1.imagegen_service_pb2",
    "capmesh.talkinghead.v1.talkinghead_service_pb2",
)


@dataclass(frozen=True)
class JobMethod:
    path: str
    request_type: str  # full name, matched against the Any's type
    response_class: type
    server_streaming: bool


@cache
def _load_contracts() -> None:
    for name in _CONTRACT_MODULES:
        importlib.import_module(name)


def resolve_method(path: str) -> JobMethod:
    """"/capmesh.tts.v1.TtsService/StreamSynthesize" -> its types; INVALID_ARGUMENT otherwise."""
    _load_contracts()
    service, _, method = path.lstrip("/").rpartition("/")
    if not path.startswith("/") or not service.startswith("capmesh.") or not method:
        raise InvalidArgument.single("method", 'must be a capability method like "/capmesh.tts.v1.TtsService/StreamSynthesize"',
                                     reason="UNKNOWN_METHOD")
    try:
        descriptor = descriptor_pool.Default().FindServiceByName(service).methods_by_name[method]
    except KeyError:
        raise InvalidArgument.single("method", f"{path} is not a capability method", reason="UNKNOWN_METHOD") from None
    if descriptor.client_streaming:
        raise InvalidArgument.single("method", f"{path} takes a request stream; jobs carry one request",
                                     reason="UNSUPPORTED_METHOD")
    return JobMethod(path, descriptor.input_type.full_name, message_factory.GetMessageClass(descriptor.output_type),
                     descriptor.server_streaming)
