"""The mesh's service credential: backends trust only callers that hold it (in practice the gateway).

Two forms, either or both:
- a shared secret (`mesh_secret`, also read from `CAPMESH_MESH_SECRET`): every call must carry it
  as metadata `x-capmesh-mesh-secret`, compared in constant time; `capmesh up` makes one for the
  processes it starts, so this minimum is on without any set-up;
- mTLS (`tls_cert_file`, `tls_key_file`, `tls_client_ca_file`, files that `capmesh certs init`
  writes): the service's port speaks TLS and the handshake refuses a client whose certificate the
  mesh CA did not sign, before any RPC is read.
`grpc.health.v1.Health` stays open on the secret's rule (probes and load balancers hold no secret);
everything else — the capability, AdminService, reflection — answers UNAUTHENTICATED without it.

The gateway dials backends with `mesh_channel` (mTLS) and adds `mesh_metadata` (the secret) to the
metadata of each call it makes, next to the caller's identity as `x-capmesh-key-id` (a key's id,
never the key).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from capmesh.client.channel import CHANNEL_OPTIONS
from capmesh.services.runtime.errors import CapmeshError, Unauthenticated
from capmesh.services.runtime.interceptor import HandlerInterceptor, rebuild_handler
from capmesh.services.runtime.settings import MESH_SECRET_ENV, env_name
from capmesh.services.runtime.status import abort_with_error

MESH_SECRET_HEADER = "x-capmesh-mesh-secret"
KEY_ID_HEADER = "x-capmesh-key-id"  # the caller's key id, set by the gateway (non-secret)
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def secret_matches(presented: str | bytes | None, secret: str) -> bool:
    """Whether `presented` is the mesh secret, compared in constant time."""
    if not presented or not secret:
        return False
    candidate = presented if isinstance(presented, bytes) else presented.encode()
    return hmac.compare_digest(candidate, secret.encode())


def metadata_value(metadata: Any, key: str) -> str | bytes | None:
    """The first value of `key` in a call's invocation metadata."""
    for name, value in metadata or ():
        if name == key:
            return value
    return None


def refusing_handler(handler: grpc.RpcMethodHandler, error: CapmeshError) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that ends every call with `error`."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await abort_with_error(context, error)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort_with_error(context, error)
        yield  # pragma: no cover - never reached; makes this an async generator

    def unary(_: Callable[..., Any]) -> Callable[..., Any]:
        return refuse

    def stream(_: Callable[..., Any]) -> Callable[..., Any]:
        return refuse_stream

    return rebuild_handler(handler, unary, stream)


class MeshSecretInterceptor(HandlerInterceptor):
    """A backend's server interceptor: UNAUTHENTICATED unless the call carries the mesh secret."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def wrap(self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if details.method.startswith(OPEN_PREFIXES):
            return handler
        presented = metadata_value(details.invocation_metadata, MESH_SECRET_HEADER)
        if secret_matches(presented, self._secret):
            return handler
        reason = "MESH_CREDENTIAL_INVALID" if presented else "MESH_CREDENTIAL_MISSING"
        return refusing_handler(
            handler, Unauthenticated("this service answers only the mesh's gateway (service credential)", reason=reason)
        )


def server_credentials(cert_file: str, key_file: str, client_ca_file: str = "") -> grpc.ServerCredentials:
    """TLS for a server's port; with `client_ca_file`, callers must present a certificate it signed."""
    pair = [(Path(key_file).read_bytes(), Path(cert_file).read_bytes())]
    if not client_ca_file:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(
        pair, root_certificates=Path(client_ca_file).read_bytes(), require_client_auth=True
    )


# The name the gateway expects in every service certificate of the mesh (`capmesh certs init` puts
# it there): backends are dialled by whatever address they registered, which no certificate names.
MESH_SERVICE_NAME = "capmesh-service"


def mesh_channel(
    address: str,
    *,
    ca_file: str = "",
    cert_file: str = "",
    key_file: str = "",
    options: list[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """The gateway's channel to a backend: TLS trusting the mesh CA (presenting the gateway's own
    certificate for mTLS) when `ca_file` is set. The secret is not the channel's: each call carries
    `mesh_metadata` in its own metadata, which costs nothing, where channel interceptors that add it
    cost the gateway ~10 % more CPU per relayed call (benchmarks/bench_gateway.py)."""
    options = list(options or CHANNEL_OPTIONS)
    if not ca_file:
        return grpc.aio.insecure_channel(address, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(ca_file).read_bytes(),
        private_key=Path(key_file).read_bytes() if key_file else None,
        certificate_chain=Path(cert_file).read_bytes() if cert_file else None,
    )
    options.append(("grpc.ssl_target_name_override", MESH_SERVICE_NAME))
    return grpc.aio.secure_channel(address, credentials, options=options)


def secret_of(environ: Mapping[str, str], prefix: str) -> str:
    """The mesh secret a process with settings prefix `prefix` would read from `environ`."""
    return environ.get(env_name(prefix, "mesh_secret")) or environ.get(MESH_SECRET_ENV, "")


def new_mesh_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What `capmesh up` adds to its processes' environment so the mesh is never open: a fresh
    random mesh secret, unless one is set already."""
    if environ.get(MESH_SECRET_ENV):
        return {}
    return {MESH_SECRET_ENV: secrets.token_urlsafe(32)}


def mesh_metadata(secret: str) -> tuple[tuple[str, str], ...]:
    """The metadata that presents the mesh secret (nothing when there is none)."""
    return ((MESH_SECRET_HEADER, secret),) if secret else ()
