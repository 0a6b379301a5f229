"""The capability services the gateway proxies, read from the generated descriptors.

For each method it knows the call shape (so the proxy serves it with the matching handler) and
the field number of the request's `model` field (so routing can prefer a backend that already has
the model loaded without parsing the request).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor

from capmesh.services.catalog import CAPABILITIES

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
    # Runs a model (the catalogue's `model_slot_methods`), so it counts against a backend's
    # max_concurrency; methods only registered backends name are assumed to.
    model_slot: bool = True


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
    for capability in CAPABILITIES:
        for service in capability.services():
            methods = tuple(
                MethodInfo(
                    path=f"/{service.full_name}/{m.name}",
                    service=service.full_name,
                    client_streaming=m.client_streaming,
                    server_streaming=m.server_streaming,
                    model_field=_model_field_number(m.input_type),
                    model_slot=m.name in capability.model_slot_methods,
                )
                for m in service.methods
            )
            catalog[service.full_name] = ServiceInfo(service.full_name, capability.name, methods)
    return catalog


def service_of(method_path: str) -> str:
    """ "/capmesh.tts.v1.TtsService/StreamSynthesize" -> "capmesh.tts.v1.TtsService"."""
    return method_path.lstrip("/").rpartition("/")[0]


def is_reserved(service: str) -> bool:
    return service.startswith(RESERVED_SERVICE_PREFIXES)
