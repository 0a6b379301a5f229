"""Channels to capmesh servers and the gateway, with capmesh's message limits."""

from __future__ import annotations

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
