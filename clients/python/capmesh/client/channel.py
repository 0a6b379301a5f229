"""Channels to capmesh servers and the gateway, with capmesh's message limits and credentials.

A gateway that requires API keys reads `authorization: Bearer <key>` from every call. Channels made
here send it on every call they carry: the key given as `api_key=`, else the process default — what
the CLI's `--api-key` set (`use_api_key`), else the `CAPMESH_API_KEY` variable — so the typed
clients, which take a channel, need no key argument of their own:

    with sync_channel("127.0.0.1:50051", api_key="sk-...") as channel:
        TtsClient(channel).synthesize("Hello.")
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from capmesh.client.failover import channel_target
from capmesh.client.xds import is_xds, xds_metadata

MAX_MESSAGE_BYTES = 5 * 1024 * 1024
API_KEY_ENV = "CAPMESH_API_KEY"

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # A gateway whose host drops off the network sends no FIN: without a ping answered within a
    # second, in-flight calls would wait for their deadlines and the channel would not move on to
    # the next gateway address. capmesh servers accept pings every 200 ms (`server_options`).
    ("grpc.keepalive_time_ms", 2_000),
    ("grpc.keepalive_timeout_ms", 1_000),
    ("grpc.keepalive_permit_without_calls", 1),
]

Metadata = Sequence[tuple[str, str]]

_default_api_key: str | None = None


def use_api_key(key: str | None) -> None:
    """Makes `key` the key of every channel this process makes without an explicit `api_key`
    (the CLI calls it with its `--api-key`); None goes back to `CAPMESH_API_KEY`."""
    global _default_api_key
    _default_api_key = key


def default_api_key() -> str:
    """The key channels send when the caller names none: `use_api_key`'s, else `$CAPMESH_API_KEY`."""
    return _default_api_key if _default_api_key is not None else os.environ.get(API_KEY_ENV, "")


def api_key_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata that presents `api_key` (None: the default key; empty: none)."""
    key = default_api_key() if api_key is None else api_key
    return (("authorization", f"Bearer {key}"),) if key else ()


def _with(details: Any, pairs: Metadata) -> Any:
    return details._replace(metadata=[*(details.metadata or ()), *pairs])


class _AddsMetadata:
    def __init__(self, pairs: Metadata) -> None:
        self._pairs = tuple(pairs)


# grpc.aio files an interceptor under the first call shape it implements, so each shape has its own.
class _UnaryUnary(_AddsMetadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with(client_call_details, self._pairs), request)


class _UnaryStream(_AddsMetadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_with(client_call_details, self._pairs), request)


class _StreamUnary(_AddsMetadata, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(_with(client_call_details, self._pairs), request_iterator)


class _StreamStream(_AddsMetadata, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(_with(client_call_details, self._pairs), request_iterator)


def metadata_interceptors(pairs: Metadata) -> list[grpc.aio.ClientInterceptor] | None:
    """Interceptors that add fixed metadata (a credential) to every call of an asyncio channel,
    whatever its shape; None when there is nothing to add."""
    if not pairs:
        return None
    return [kind(pairs) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


class SyncMetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata to every call of a blocking channel (which asks each interceptor about
    every call shape)."""

    def __init__(self, pairs: Metadata) -> None:
        self._pairs = tuple(pairs)

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(_with(client_call_details, self._pairs), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(_with(client_call_details, self._pairs), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(_with(client_call_details, self._pairs), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(_with(client_call_details, self._pairs), request_iterator)


def aio_channel(address: str, *, api_key: str | None = None) -> grpc.aio.Channel:
    """An insecure asyncio channel to `address` (host:port, or several comma-separated: see
    failover.py) that sends the API key (see the module); `xds:///<capability>` goes straight to
    the backends, with the mesh secret instead (see xds.py)."""
    metadata = xds_metadata() if is_xds(address) else api_key_metadata(api_key)
    interceptors = metadata_interceptors(metadata)
    target, failover = channel_target(address)
    return grpc.aio.insecure_channel(target, options=[*CHANNEL_OPTIONS, *failover], interceptors=interceptors)


def sync_channel(address: str, *, api_key: str | None = None) -> grpc.Channel:
    """An insecure blocking channel to `address` (host:port, or several comma-separated: see
    failover.py), for scripts and the CLI, that sends the API key (see the module); `xds:///<capability>`
    goes straight to the backends, with the mesh secret instead (see xds.py)."""
    target, failover = channel_target(address)
    channel = grpc.insecure_channel(target, options=[*CHANNEL_OPTIONS, *failover])
    metadata = xds_metadata() if is_xds(address) else api_key_metadata(api_key)
    return grpc.intercept_channel(channel, SyncMetadataInterceptor(metadata)) if metadata else channel


def tls_trusting(cert_file: str) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]]:
    """Credentials that trust `cert_file` (a server's own certificate or a CA), and the channel
    option that verifies the server by the certificate's first DNS name (or CN): services usually
    dial the gateway by a loopback or private address that the certificate does not name."""
    pem = Path(cert_file).read_bytes()
    decoded = ssl._ssl._test_decode_cert(cert_file)  # type: ignore[attr-defined]  # the stdlib's only PEM reader
    names = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    names += [value for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"]
    options = [("grpc.ssl_target_name_override", names[0])] if names else []
    return grpc.ssl_channel_credentials(root_certificates=pem), options


def aio_channel_to(
    address: str, *, tls_cert_file: str = "", metadata: Metadata = (), options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """An asyncio channel to `address`, over TLS trusting `tls_cert_file` when one is given, that
    sends `metadata` (a service's credentials) on every call; no default key is added."""
    interceptors = metadata_interceptors(metadata)
    target, failover = channel_target(address)
    options = [*CHANNEL_OPTIONS, *options, *failover]
    if not tls_cert_file:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    credentials, names = tls_trusting(tls_cert_file)
    return grpc.aio.secure_channel(target, credentials, options=[*options, *names], interceptors=interceptors)
