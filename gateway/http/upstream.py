"""The loopback gRPC client of the HTTP side: raw calls to any method of a gRPC target.

Requests and responses stay serialized bytes here (identity codecs), so one channel serves every
service in the descriptor pool without generated stubs. The target is resolved lazily because
the gateway learns its own gRPC port only once that server is started.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import grpc

from capmesh.client.channel import CHANNEL_OPTIONS

Metadata = Sequence[tuple[str, str]]

# Headers an HTTP caller sends that travel on as gRPC metadata.
FORWARDED_HEADERS = ("authorization", "x-api-key", "x-request-id")


def forwarded_metadata(headers) -> tuple[tuple[str, str], ...]:
    return tuple((name, headers[name]) for name in FORWARDED_HEADERS if headers.get(name))


def loopback_tls(cert_file: str) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]]:
    """Credentials that trust the gateway's own certificate, and the name to verify it by: the
    loopback address is rarely in the certificate, its first DNS name (or CN) is."""
    pem = Path(cert_file).read_bytes()
    decoded = ssl._ssl._test_decode_cert(cert_file)  # noqa: SLF001 - the stdlib's only PEM reader
    names = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    names += [value for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"]
    options = [("grpc.ssl_target_name_override", names[0])] if names else []
    return grpc.ssl_channel_credentials(root_certificates=pem), options


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
            if self._tls_cert_file:
                credentials, options = loopback_tls(self._tls_cert_file)
                self._channel = grpc.aio.secure_channel(self._target(), credentials, options=CHANNEL_OPTIONS + options)
            else:
                self._channel = grpc.aio.insecure_channel(self._target(), options=CHANNEL_OPTIONS)
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
