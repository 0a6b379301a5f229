"""Channels to capmesh servers and the gateway, with capmesh's message limits."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

MAX_MESSAGE_BYTES = 5 * 1024 * 1024

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


def aio_channel(address: str) -> grpc.aio.Channel:
    """An insecure asyncio channel to `address` (host:port)."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


def sync_channel(address: str) -> grpc.Channel:
    """An insecure blocking channel to `address` (host:port), for scripts and the CLI."""
    return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)


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


def aio_channel_to(address: str, *, tls_cert_file: str = "") -> grpc.aio.Channel:
    """An asyncio channel to `address`, over TLS trusting `tls_cert_file` when one is given."""
    if not tls_cert_file:
        return aio_channel(address)
    credentials, options = tls_trusting(tls_cert_file)
    return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS + options)
