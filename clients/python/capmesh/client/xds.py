"""Proxyless clients: dial `xds:///<capability>` and call healthy backends directly, no gateway hop.

The gateway serves xDS (envoy v3 ADS) from its registry: for `xds:///tts`, gRPC's own xDS client
learns the TTS backends, which are healthy and their weights, and balances calls over them round
robin, following every change the registry sees. gRPC finds the gateway through a bootstrap:
`GRPC_XDS_BOOTSTRAP` (a file, `capmesh xds-bootstrap -o FILE` writes one) or
`GRPC_XDS_BOOTSTRAP_CONFIG` (the JSON itself), read when the process's first xDS channel is made.

    use_gateway_xds("127.0.0.1:50051")  # or export GRPC_XDS_BOOTSTRAP=...
    with sync_channel("xds:///tts") as channel:
        TtsClient(channel).synthesize("Hello.")

A call that names its model in metadata (`MODEL_HEADER`, as well as in the request) goes to a backend
that has that model loaded while one is healthy, as the gateway's own routing prefers.

Backends answer only callers that hold the mesh's service credential: channels to `xds:` targets
send the mesh secret (`mesh_secret=`, else `CAPMESH_MESH_SECRET`) on every call instead of an API
key. (A mesh that uses mTLS between gateway and backends is not reachable this way.)
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from capmesh.client.failover import split_addresses

BOOTSTRAP_FILE_ENV = "GRPC_XDS_BOOTSTRAP"
BOOTSTRAP_CONFIG_ENV = "GRPC_XDS_BOOTSTRAP_CONFIG"
XDS_SCHEME = "xds:"
# Metadata naming the model a call asks for: xDS routes it to the backends that have it loaded.
MODEL_HEADER = "x-capmesh-model"


def is_xds(address: str) -> bool:
    return address.strip().startswith(XDS_SCHEME)


def bootstrap(gateway: str, node_id: str = "") -> dict[str, Any]:
    """The bootstrap that points gRPC's xDS client at `gateway` (host:port, or several
    comma-separated: the first that answers serves, the others are fallbacks)."""
    servers = [
        {"server_uri": address, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}
        for address in split_addresses(gateway)
    ]
    if not servers:
        raise ValueError("no gateway address for the xDS bootstrap")
    return {
        "xds_servers": servers,
        "node": {"id": node_id or f"capmesh-client-{socket.gethostname()}", "cluster": "capmesh", "locality": {}},
    }


def use_gateway_xds(gateway: str, node_id: str = "") -> None:
    """Makes `gateway` this process's xDS server, unless a bootstrap is set already; call it before
    the first `xds:` channel (gRPC reads the bootstrap once)."""
    if not os.environ.get(BOOTSTRAP_FILE_ENV) and not os.environ.get(BOOTSTRAP_CONFIG_ENV):
        os.environ[BOOTSTRAP_CONFIG_ENV] = json.dumps(bootstrap(gateway, node_id or f"capmesh-client-{os.getpid()}"))


def xds_metadata(mesh_secret: str | None = None) -> tuple[tuple[str, str], ...]:
    """What every call on an `xds:` channel carries: the mesh secret (None: `CAPMESH_MESH_SECRET`).
    ValueError when gRPC has no bootstrap to find the gateway with."""
    # Imported here: the runtime's trust module itself builds on the client's channels.
    from capmesh.services.runtime.settings import MESH_SECRET_ENV
    from capmesh.services.runtime.trust import mesh_metadata

    if not os.environ.get(BOOTSTRAP_FILE_ENV) and not os.environ.get(BOOTSTRAP_CONFIG_ENV):
        raise ValueError(
            f"an xds: target needs an xDS bootstrap: set {BOOTSTRAP_FILE_ENV} (capmesh xds-bootstrap -o FILE) "
            "or call capmesh.client.xds.use_gateway_xds(gateway) first"
        )
    return mesh_metadata(os.environ.get(MESH_SECRET_ENV, "") if mesh_secret is None else mesh_secret)
