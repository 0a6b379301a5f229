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


class GatewayClient:
    """What every client a service keeps to its gateway shares: one channel, opened at the first call
    (a service that never makes one dials nothing) and closed with the service."""

    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings
        self._channel: grpc.aio.Channel | None = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = gateway_channel(self._settings)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
