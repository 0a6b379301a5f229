"""In-process gateways and echo backends (the gateway tests' fixtures)."""

from tests.gateway.conftest import backends, channel_to, gateways

__all__ = ["backends", "channel_to", "gateways"]
