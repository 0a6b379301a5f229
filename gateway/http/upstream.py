"""The loopback gRPC client of the HTTP side: raw calls to any method of a gRPC target.

Requests and responses stay serialized bytes here (identity codecs), so one channel serves every
service in the descriptor pool without generated stubs. The target is resolved lazily because
the gateway learns its own gRPC port only once that server is started.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from capmesh.client.channel import aio_channel_to

Metadata = Sequence[tuple[str, str]]

# Headers an HTTP caller sends that travel on as gRPC metadata.
FORWARDED_HEADERS = ("authorization", "x-api-key", "x-request-id")


def forwarded_metadata(headers) -> tuple[tuple[str, str], ...]:
    return tuple((name, headers[name]) for name in FORWARDED_HEADERS if headers.get(name))


class Upstream:
    """A lazily opened grpc.aio channel to `target()` (a callable so the port can come later);
    over TLS, trusting `tls_cert_file`, when the gateway's gRPC port uses one."""

    def __init__(self, target: Callable[[], str], tls_cert_file: str = "") -> None:
        self._target = target
        self._tls_cert_file = tls_cert_file
        self._channel: grpc.aio.Channel | None = None

    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = aio_channel_to(self._target(), tls_cert_file=self._tls_cert_file)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def unary(self, path: str, request: bytes, *, metadata: Metadata = (), timeout: float | None = None) -> bytes:
        call = self.channel.unary_unary(path)
        return await call(request, metadata=tuple(metadata), timeout=timeout)

    def stream(self, path: str, request: bytes, *, metadata: Metadata = (),
               timeout: float | None = None) -> grpc.aio.UnaryStreamCall:
        """The call object: iterate it for response bytes; `cancel()` stops the upstream call."""
        call = self.channel.unary_stream(path)
        return call(request, metadata=tuple(metadata), timeout=timeout)

    async def client_stream(self, path: str, requests: AsyncIterator[bytes], *, metadata: Metadata = (),
                            timeout: float | None = None) -> bytes:
        call = self.channel.stream_unary(path)
        return await call(requests, metadata=tuple(metadata), timeout=timeout)
