"""The capability services the gateway proxies, read from the generated descriptors.

For each method it knows the call shape (so the proxy serves it with the matching handler) and
the field number of the request's `model` field (so routing can prefer a backend that already has
the model loaded without parsing the request).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor

# The generated modules of every capability contract; importing them also puts their descriptors
# in the default pool, which reflection reads.
CAPABILITY_PROTO_MODULES: dict[str, str] = {
    "tts": "capmesh.tts.v1.tts_service_pb2",
    "llm": "capmesh.llm.v1.llm_service_pb2",
    "videogen": "capmesh.videogen.v1.videogen_service_pb2",
    "imagegen": "capmesh.imagegen.v1.imagegen_service_pb2",
    "talkinghead": "capmesh.talkinghead.v1.talkinghead_service_pb2",
}

# Services a backend may never claim: the gateway serves these itself.
RESERVED_SERVICE_PREFIXES = ("grpc.", "capmesh.gateway.", "capmesh.admin.", "google.longrunning.")


@dataclass(frozen=True)
class MethodInfo:
    """One proxied method: `path` is "/package.Service/Method"."""

    path: str
    service: str
    client_streaming: bool
    server_streaming: bool
    model_field: int = 0  # field number of the request's top-level string `model`; 0 when none


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    capability: str  # the capability whose contract defines the service
    methods: tuple[MethodInfo, ...]


def _model_field_number(message_descriptor) -> int:
    field = message_descriptor.fields_by_name.get("model")
    if field is None or field.type != FieldDescriptor.TYPE_STRING:
        return 0
    return field.number


def load_catalog() -> dict[str, ServiceInfo]:
    """Every service of every capability contract, by full name."""
    catalog: dict[str, ServiceInfo] = {}
    for capability, module_name in CAPABILITY_PROTO_MODULES.items():
        module = importlib.import_module(module_name)
        for service in module.DESCRIPTOR.services_by_name.values():
            methods = tuple(
                MethodInfo(
                    path=f"/{service.full_name}/{m.name}",
                    service=service.full_name,
                    client_streaming=m.client_streaming,
                    server_streaming=m.server_streaming,
                    model_field=_model_field_number(m.input_type),
                )
                for m in service.methods
            )
            catalog[service.full_name] = ServiceInfo(service.full_name, capability, methods)
    return catalog


def service_of(method_path: str) -> str:
    """"/capmesh.tts.v1.TtsService/StreamSynthesize" -> "capmesh.tts.v1.TtsService"."""
    return method_path.lstrip("/").rpartition("/")[0]


def is_reserved(service: str) -> bool:
    return service.startswith(RESERVED_SERVICE_PREFIXES)
