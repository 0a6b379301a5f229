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

Envoy can be the data plane instead, on the same resources: `envoy_bootstrap` (`capmesh
xds-bootstrap --envoy`) gives it one listener that routes every capability's gRPC services by the
gateway's RouteConfiguration `capmesh` (`ENVOY_ROUTE`) and presents the mesh secret to the backends
and to the gateway's ADS. Whoever reaches that listener calls backends as the mesh does, with no
API key: it belongs inside the trust boundary (loopback by default).
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
ENVOY_ROUTE = "capmesh"  # the gateway's RouteConfiguration for Envoy: every service of every capability
ENVOY_ADS_CLUSTER = "capmesh_ads"  # Envoy's static cluster of gateways, its ADS server
DEFAULT_ENVOY_LISTEN = "127.0.0.1:10000"
_ENVOY_TYPES = "type.googleapis.com/envoy.extensions."
_ADS = {"ads": {}, "resource_api_version": "V3"}


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


def envoy_bootstrap(
    gateway: str, listen: str = DEFAULT_ENVOY_LISTEN, mesh_secret: str = "", node_id: str = ""
) -> dict[str, Any]:
    """An Envoy (v3) bootstrap: clusters by CDS and routes by RDS from `gateway` over ADS (several
    gateways comma-separated: one ADS stream to whichever answers), one HTTP/2 listener on `listen`
    (host:port) serving the whole mesh, and the mesh secret, when there is one, sent with every call
    to a backend and on the ADS stream. ValueError for an address that is not host:port."""
    from capmesh.services.runtime.trust import mesh_metadata  # as in xds_metadata

    gateways = [_socket_address(address, "a gateway address") for address in split_addresses(gateway)]
    if not gateways:
        raise ValueError("no gateway address for the Envoy bootstrap")
    credentials = [{"key": key, "value": value} for key, value in mesh_metadata(mesh_secret)]
    http_filters: list[dict[str, Any]] = []
    if credentials:
        # Set, not appended: a caller's own copy of the header never reaches a backend.
        mutations = [
            {"append": {"header": header, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}} for header in credentials
        ]
        http_filters.append(
            {
                "name": "envoy.filters.http.header_mutation",
                "typed_config": {
                    "@type": _ENVOY_TYPES + "filters.http.header_mutation.v3.HeaderMutation",
                    "mutations": {"request_mutations": mutations},
                },
            }
        )
    http_filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": _ENVOY_TYPES + "filters.http.router.v3.Router"},
        }
    )
    connection_manager = {
        "@type": _ENVOY_TYPES + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "capmesh",
        "codec_type": "HTTP2",
        "rds": {"route_config_name": ENVOY_ROUTE, "config_source": _ADS},
        "http_filters": http_filters,
        # No idle limit of Envoy's own (5 min by default): a long unary generation stays as quiet as
        # it needs to; the caller's deadline ends calls, as through the gateway.
        "stream_idle_timeout": "0s",
    }
    ads_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": ENVOY_ADS_CLUSTER}}
    if credentials:
        ads_service["initial_metadata"] = credentials
    ads_cluster = {
        "name": ENVOY_ADS_CLUSTER,
        "type": "STRICT_DNS",  # host names and IP literals alike
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _ENVOY_TYPES + "upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": ENVOY_ADS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}} for address in gateways]}],
        },
    }
    return {
        "node": {"id": node_id or f"capmesh-envoy-{socket.gethostname()}", "cluster": "capmesh"},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [ads_service]},
            "cds_config": _ADS,
        },
        "static_resources": {
            "clusters": [ads_cluster],
            "listeners": [
                {
                    "name": "capmesh",
                    "address": _socket_address(listen, "the listen address"),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": connection_manager,
                                }
                            ]
                        }
                    ],
                }
            ],
        },
    }


def _socket_address(address: str, what: str) -> dict[str, Any]:
    host, _, port = address.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {address!r} is not host:port")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}


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
