"""The typed Python client for capmesh.

    from capmesh.client import errors, sync_channel
    from capmesh.tts.v1 import tts_service_pb2, tts_service_pb2_grpc

The generated stubs live in `capmesh.<area>.v1`; this package adds channels with capmesh's limits,
an exception hierarchy mapped from status codes (`capmesh.client.errors`), and per-capability
helpers.
"""

from capmesh.client.channel import aio_channel, sync_channel
from capmesh.client.errors import (
    AuthError,
    BusyError,
    CancelledError,
    CapmeshClientError,
    InvalidRequestError,
    NotFoundError,
    RefusedError,
    ServerError,
    UnavailableError,
    from_rpc_error,
)

__all__ = [
    "AuthError",
    "BusyError",
    "CancelledError",
    "CapmeshClientError",
    "InvalidRequestError",
    "NotFoundError",
    "RefusedError",
    "ServerError",
    "UnavailableError",
    "aio_channel",
    "from_rpc_error",
    "sync_channel",
]
