"""The registry's live state as envoy v3 xDS resources, one set per capability.

For a capability `<cap>` (each catalogue name, and each capability a backend registered):
- Listener `<cap>`: an API listener (what gRPC's `xds:///<cap>` asks for) whose HttpConnectionManager
  takes its routes by RDS from RouteConfiguration `<cap>`, with the router filter gRPC requires;
- RouteConfiguration `<cap>`: every call to Cluster `<cap>` (after the model routes below);
- Cluster `<cap>`: EDS over the same ADS stream, round robin, HTTP/2 upstream (Envoy needs that said;
  gRPC ignores it);
- ClusterLoadAssignment `<cap>`: one endpoint per backend, HEALTHY while the gateway itself would
  route to it (AVAILABLE, or ERROR past its cooldown), UNHEALTHY otherwise, weighted by its
  max_concurrency.
Model affinity, as far as xDS can say it: the request's `model` field is inside the message, which
no xDS client reads, so a client names the model in metadata (`x-capmesh-model: <model>`). For each
model a backend of `<cap>` offers or holds, RouteConfiguration `<cap>` sends calls with that header to
Cluster `<cap>/<model>`, whose endpoints come in two priorities: the backends that have the model
loaded first, every other backend as the fallback (priority failover: the fallback takes calls only
while no loaded backend is healthy). Calls without the header go to Cluster `<cap>`.
One more RouteConfiguration, `capmesh` (`ENVOY_ROUTE`), is for Envoy: one virtual host whose routes
send each gRPC service's path prefix (`/capmesh.tts.v1.TtsService/`) to its capability's cluster, so
one Envoy listener serves the whole mesh (`capmesh xds-bootstrap --envoy` writes that Envoy's
bootstrap). Its routes lift Envoy's default 15 s route timeout, which would cut every generation
stream that runs longer, and take the caller's `grpc-timeout` as the call's deadline instead, as
the gateway does.

Endpoint addresses must be IP literals (gRPC's xDS client resolves no host names from EDS): a
backend registered by host name is resolved here, when the snapshot is built.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message

from capmesh.client.xds import ENVOY_ROUTE, MODEL_HEADER
from capmesh.gateway.server.registry.model import BackendEntry
from capmesh.gateway.server.registry.registry import Registry
from capmesh.services.catalog import NAMES

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINTS)

ROUTER_FILTER = "envoy.filters.http.router"
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# 0: no limit of Envoy's own; the caller's grpc-timeout header is the deadline, uncapped.
_NO_LIMITS = {
    "timeout": duration_pb2.Duration(),
    "max_stream_duration": route_components_pb2.RouteAction.MaxStreamDuration(
        grpc_timeout_header_max=duration_pb2.Duration()
    ),
}
_ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
)


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def listener(capability: str) -> listener_pb2.Listener:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=capability,
        rds=hcm_pb2.Rds(config_source=_ADS, route_config_name=capability),
        http_filters=[hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=_packed(router_pb2.Router()))],
    )
    return listener_pb2.Listener(
        name=capability, api_listener=api_listener_pb2.ApiListener(api_listener=_packed(manager))
    )


def _route_to(cluster: str, prefix: str, **action: Message) -> route_components_pb2.Route:
    return route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix=prefix),
        route=route_components_pb2.RouteAction(cluster=cluster, **action),
    )


def model_cluster(capability: str, model: str) -> str:
    return f"{capability}/{model}"


def route(capability: str, models: Iterable[str] = ()) -> route_pb2.RouteConfiguration:
    routes = []
    for model in sorted(models):
        affine = _route_to(model_cluster(capability, model), "/")
        affine.match.headers.append(
            route_components_pb2.HeaderMatcher(name=MODEL_HEADER, string_match=string_pb2.StringMatcher(exact=model))
        )
        routes.append(affine)
    routes.append(_route_to(capability, "/"))  # the last route: every call without a model header
    host = route_components_pb2.VirtualHost(name=capability, domains=["*"], routes=routes)
    return route_pb2.RouteConfiguration(name=capability, virtual_hosts=[host])


def mesh_route(services: dict[str, str]) -> route_pb2.RouteConfiguration:
    """`services`: gRPC service full name -> its capability (the cluster)."""
    routes = [_route_to(capability, f"/{service}/", **_NO_LIMITS) for service, capability in sorted(services.items())]
    host = route_components_pb2.VirtualHost(name=ENVOY_ROUTE, domains=["*"], routes=routes)
    return route_pb2.RouteConfiguration(name=ENVOY_ROUTE, virtual_hosts=[host])


def cluster(name: str) -> cluster_pb2.Cluster:
    http2 = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
        )
    )
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ADS),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        connect_timeout=duration_pb2.Duration(seconds=1),
        typed_extension_protocol_options={_HTTP_OPTIONS: _packed(http2)},
    )


@dataclass(frozen=True)
class Endpoint:
    host: str  # an IP literal
    port: int
    healthy: bool
    weight: int
    backend_id: str
    loaded: frozenset[str]  # the models it has loaded


def _locality(endpoints: list[Endpoint], priority: int) -> endpoint_components_pb2.LocalityLbEndpoints:
    lb_endpoints = [
        endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(
                address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=e.host, port_value=e.port)
                ),
                hostname=e.backend_id,
            ),
            health_status=health_check_pb2.HEALTHY if e.healthy else health_check_pb2.UNHEALTHY,
            load_balancing_weight={"value": e.weight},
        )
        for e in sorted(endpoints, key=lambda e: e.backend_id)
    ]
    # One locality per priority; gRPC ignores a locality without a weight.
    return endpoint_components_pb2.LocalityLbEndpoints(
        locality=base_pb2.Locality(region="capmesh", zone=f"priority-{priority}"),
        lb_endpoints=lb_endpoints,
        load_balancing_weight={"value": 1},
        priority=priority,
    )


def load_assignment(name: str, endpoints: list[Endpoint], model: str = "") -> endpoint_pb2.ClusterLoadAssignment:
    """Every endpoint at priority 0; with `model`, those that have it loaded at 0 and the rest at 1
    (priorities must start at 0: when none has it loaded, all are at 0)."""
    loaded = [e for e in endpoints if model in e.loaded] if model else endpoints
    others = [e for e in endpoints if model not in e.loaded] if model and loaded else []
    groups = [group for group in (loaded or endpoints, others) if group]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name, endpoints=[_locality(group, priority) for priority, group in enumerate(groups)]
    )


def _split(address: str) -> tuple[str, int] | None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


async def _ip_of(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None
    ips = sorted({ipaddress.ip_address(info[4][0]) for info in infos}, key=lambda ip: ip.version)
    return str(ips[0]) if ips else None


@dataclass
class Snapshot:
    """Every resource by type and name, and when the snapshot next changes by itself (an ERROR
    backend's cooldown ending), monotonic."""

    resources: dict[str, dict[str, any_pb2.Any]]
    expires_at: float | None


def version_of(resources: dict[str, any_pb2.Any]) -> str:
    """A digest of the resources: every gateway serving the same registry gives the same version."""
    digest = hashlib.sha256()
    for name in sorted(resources):
        digest.update(name.encode())
        digest.update(resources[name].SerializeToString(deterministic=True))
    return digest.hexdigest()[:16]


async def _endpoint(entry: BackendEntry, now: float) -> Endpoint | None:
    split = _split(entry.record.address)
    ip = await _ip_of(split[0]) if split else None
    if split is None or ip is None:
        return None
    return Endpoint(
        host=ip,
        port=split[1],
        healthy=entry.routable(now),
        weight=max(1, entry.record.max_concurrency),
        backend_id=entry.backend_id,
        loaded=frozenset(entry.loaded),
    )


async def build_snapshot(registry: Registry) -> Snapshot:
    now = time.monotonic()
    by_capability: dict[str, list[BackendEntry]] = {name: [] for name in NAMES}
    for entry in registry.entries.values():
        by_capability.setdefault(entry.record.capability, []).append(entry)
    services = {name: info.capability for name, info in registry.catalog.items()}
    for entry in registry.entries.values():
        for service in registry.services_of(entry.record):
            services.setdefault(service, entry.record.capability)

    resources: dict[str, dict[str, any_pb2.Any]] = {kind: {} for kind in TYPES}
    expires_at: float | None = None
    for capability, entries in by_capability.items():
        models = {model for entry in entries for model in (*entry.record.models, *entry.loaded) if model}
        resources[LISTENER][capability] = _packed(listener(capability))
        resources[ROUTE][capability] = _packed(route(capability, models))
        endpoints = [e for e in await asyncio.gather(*(_endpoint(entry, now) for entry in entries)) if e]
        for name, model in [(capability, ""), *((model_cluster(capability, m), m) for m in sorted(models))]:
            resources[CLUSTER][name] = _packed(cluster(name))
            resources[ENDPOINTS][name] = _packed(load_assignment(name, endpoints, model))
        for entry in entries:
            if not entry.routable(now) and entry.cooldown_remaining(now) > 0:
                ends = entry.cooldown_until
                expires_at = ends if expires_at is None else min(expires_at, ends)
    resources[ROUTE][ENVOY_ROUTE] = _packed(mesh_route(services))
    return Snapshot(resources, expires_at)
