"""How a capability service reaches its gateway: TLS when configured, and its credentials — the
mesh secret (the backend credential that registration needs) and an API key when one is set."""

from __future__ import annotations

import grpc

from capmesh.client.channel import aio_channel_to
from capmesh.services.runtime import telemetry
from capmesh.services.runtime.settings import ServerSettings
from capmesh.services.runtime.trust import MESH_SECRET_HEADER


def gateway_channel(settings: ServerSettings) -> grpc.aio.Channel:
    return aio_channel_to(settings.gateway, tls_cert_file=settings.gateway_tls_cert_file)


def gateway_metadata(settings: ServerSettings) -> tuple[tuple[str, str], ...]:
    metadata: list[tuple[str, str]] = []
    if settings.mesh_secret:
        metadata.append((MESH_SECRET_HEADER, settings.mesh_secret))
    if settings.gateway_api_key:
        metadata.append(("authorization", f"Bearer {settings.gateway_api_key}"))
    if telemetry.enabled():  # a call made while serving one (talking head -> TTS) joins its trace
        metadata.extend(telemetry.trace_headers())
    return tuple(metadata)
