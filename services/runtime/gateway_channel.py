"""How a capability service reaches its gateway: TLS when configured, and the API key."""

from __future__ import annotations

import grpc

from capmesh.client.channel import aio_channel_to
from capmesh.services.runtime.settings import ServerSettings


def gateway_channel(settings: ServerSettings) -> grpc.aio.Channel:
    return aio_channel_to(settings.gateway, tls_cert_file=settings.gateway_tls_cert_file)


def gateway_metadata(settings: ServerSettings) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {settings.gateway_api_key}"),) if settings.gateway_api_key else ()
