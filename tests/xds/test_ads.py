"""The gateway's Aggregated Discovery Service, spoken to directly: resource shapes, versions and
nonces, ACK and NACK, and pushes that follow the registry; then a real grpcio xDS client that stops
calling a backend the registry marks down while its server still runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from google.rpc import status_pb2

from capmesh.client.xds import ENVOY_ROUTE, MODEL_HEADER, envoy_bootstrap
from capmesh.gateway.server.xds.resources import CLUSTER, ENDPOINTS, LISTENER, ROUTE, ROUTER_FILTER
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.catalog import NAMES
from tests.gateway.backends import LLM_SERVICE, chat_request, instant_models
from tests.gateway.conftest import wait_available, wait_for
from tests.security.support import write_keys
from tests.xds.support import XdsClientProcess, write_bootstrap


class AdsStream:
    """One ADS stream: `send` requests, `next` the responses (with a timeout)."""

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._requests: asyncio.Queue[DiscoveryRequest] = asyncio.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self._call = stub.StreamAggregatedResources(self._outgoing(), metadata=metadata)

    async def _outgoing(self) -> AsyncIterator[DiscoveryRequest]:
        while True:
            yield await self._requests.get()

    def send(self, type_url: str, names: list[str], *, version: str = "", nonce: str = "", error: str = "") -> None:
        request = DiscoveryRequest(type_url=type_url, resource_names=names, version_info=version, response_nonce=nonce)
        request.node.id = "capmesh-test"
        if error:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._requests.put_nowait(request)

    def ack(self, response: DiscoveryResponse, names: list[str]) -> None:
        self.send(response.type_url, names, version=response.version_info, nonce=response.nonce)

    async def next(self) -> DiscoveryResponse:
        return await asyncio.wait_for(self._call.read(), 10)

    def close(self) -> None:
        self._call.cancel()


def _unpack(response: DiscoveryResponse, cls):
    messages = []
    for packed in response.resources:
        message = cls()
        assert packed.Unpack(message), packed.type_url
        messages.append(message)
    return messages


def _health(assignment: endpoint_pb2.ClusterLoadAssignment) -> dict[int, int]:
    return {
        e.endpoint.address.socket_address.port_value: e.health_status
        for locality in assignment.endpoints
        for e in locality.lb_endpoints
    }


async def test_resources_versions_acks_and_pushes(gateways, backends, channel_to) -> None:
    gateway = await gateways()
    first, _ = await backends("A", gateway.grpc_address)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 1)
    ads = AdsStream(channel)
    try:
        ads.send(LISTENER, ["echo"])
        response = await ads.next()
        [listener] = _unpack(response, listener_pb2.Listener)
        assert response.type_url == LISTENER and response.version_info and response.nonce
        manager = hcm_pb2.HttpConnectionManager()
        assert listener.name == "echo" and listener.api_listener.api_listener.Unpack(manager)
        assert manager.rds.route_config_name == "echo" and manager.rds.config_source.HasField("ads")
        assert [f.name for f in manager.http_filters] == [ROUTER_FILTER]

        ads.ack(response, ["echo"])  # an ACK gets no answer: the next response is the clusters'
        ads.send(CLUSTER, [])  # no names: every cluster (Envoy asks that way)
        response = await ads.next()
        clusters = {c.name: c for c in _unpack(response, cluster_pb2.Cluster)}
        assert set(clusters) == {*NAMES, "echo"}
        assert clusters["echo"].type == cluster_pb2.Cluster.EDS
        assert clusters["echo"].eds_cluster_config.eds_config.HasField("ads")
        assert clusters["echo"].lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
        ads.ack(response, [])

        ads.send(ROUTE, ["echo", ENVOY_ROUTE])
        response = await ads.next()
        routes = {r.name: r for r in _unpack(response, route_pb2.RouteConfiguration)}
        [route] = routes["echo"].virtual_hosts[0].routes
        assert route.route.cluster == "echo" and route.match.prefix == "/"
        mesh_routes = routes[ENVOY_ROUTE].virtual_hosts[0].routes
        mesh = {r.match.prefix: r.route.cluster for r in mesh_routes}
        assert mesh[f"/{LLM_SERVICE}/"] in {"llm", "echo"} and mesh["/capmesh.tts.v1.TtsService/"] == "tts"
        for each in mesh_routes:  # no 15 s cut of Envoy's: the caller's grpc-timeout, uncapped, is the deadline
            assert each.route.HasField("timeout") and each.route.timeout.ToNanoseconds() == 0
            assert each.route.max_stream_duration.HasField("grpc_timeout_header_max")
            assert each.route.max_stream_duration.grpc_timeout_header_max.ToNanoseconds() == 0
        ads.ack(response, ["echo", ENVOY_ROUTE])

        ads.send(ENDPOINTS, ["echo"])
        response = await ads.next()
        [assignment] = _unpack(response, endpoint_pb2.ClusterLoadAssignment)
        assert assignment.cluster_name == "echo"
        assert _health(assignment) == {first.port: health_check_pb2.HEALTHY}
        [endpoint] = assignment.endpoints[0].lb_endpoints
        assert endpoint.load_balancing_weight.value == 64  # the backend's max_concurrency
        assert endpoint.endpoint.address.socket_address.address == "127.0.0.1"
        ads.ack(response, ["echo"])
        version = response.version_info

        # A new backend: the endpoints are pushed, with a new version and nonce.
        second, _ = await backends("B", gateway.grpc_address)
        pushed = await ads.next()
        while _health(_unpack(pushed, endpoint_pb2.ClusterLoadAssignment)[0]) != {
            first.port: health_check_pb2.HEALTHY,
            second.port: health_check_pb2.HEALTHY,
        }:  # B appears first unprobed (UNHEALTHY), then HEALTHY
            ads.ack(pushed, ["echo"])
            pushed = await ads.next()
        assert pushed.type_url == ENDPOINTS and pushed.version_info != version and pushed.nonce != response.nonce

        # A NACK is not answered; a request answering an older nonce is ignored.
        ads.send(ENDPOINTS, ["echo"], version=version, nonce=pushed.nonce, error="rejected for the test")
        ads.send(ENDPOINTS, ["tts"], version=version, nonce=response.nonce)
        ads.send(ROUTE, ["tts"], version=routes["echo"].name, nonce="not-the-last-one")
        ads.send(CLUSTER, ["echo"])  # a new subscription set: answered at once
        response = await ads.next()
        assert response.type_url == CLUSTER and [c.name for c in _unpack(response, cluster_pb2.Cluster)] == ["echo"]

        # The registry marks B down while its server runs: B's endpoint becomes UNHEALTHY.
        await second.set_serving(False)
        pushed = await ads.next()
        assert pushed.type_url == ENDPOINTS
        assert _health(_unpack(pushed, endpoint_pb2.ClusterLoadAssignment)[0]) == {
            first.port: health_check_pb2.HEALTHY,
            second.port: health_check_pb2.UNHEALTHY,
        }
    finally:
        ads.close()


async def test_envoy_presents_the_mesh_secret_to_a_gateway_that_requires_api_keys(
    gateways, channel_to, tmp_path
) -> None:
    keys = write_keys(tmp_path / "keys.jsonl", [{"id": "c1", "role": "client", "key": "client-key"}])
    gateway = await gateways(keys_file=str(keys), mesh_secret="s3cret")
    envoy = envoy_bootstrap(gateway.grpc_address, mesh_secret="s3cret")
    [ads_service] = envoy["dynamic_resources"]["ads_config"]["grpc_services"]
    presented = tuple((header["key"], header["value"]) for header in ads_service["initial_metadata"])
    channel = channel_to(gateway.grpc_address)
    for metadata, answered in ((presented, True), ((), False)):
        ads = AdsStream(channel, metadata)
        try:
            ads.send(ROUTE, [ENVOY_ROUTE])
            if answered:
                [route] = _unpack(await ads.next(), route_pb2.RouteConfiguration)
                assert route.name == ENVOY_ROUTE
            else:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await ads.next()
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            ads.close()


async def test_a_proxyless_client_follows_the_registry_state(gateways, backends, channel_to, tmp_path) -> None:
    gateway = await gateways()
    await backends("A", gateway.grpc_address)
    second, _ = await backends("B", gateway.grpc_address)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 2)
    client = XdsClientProcess("echo", write_bootstrap(tmp_path, gateway.grpc_address))
    try:
        start = time.monotonic()
        await wait_for(lambda: {"A", "B"} <= set(client.since(start)), 60, "calls to reach both backends")
        await second.set_serving(False)  # B's server still answers; only the registry says it is down
        down = time.monotonic()
        await wait_for(lambda: len(client.since(down + 2.0)) >= 50, 30, "50 answers 2 s after B went down")
        assert set(client.since(down + 2.0)) == {"A"}
        await second.set_serving(True)
        up = time.monotonic()
        await wait_for(lambda: "B" in client.since(up), 30, "calls to reach B again")
    finally:
        await asyncio.get_running_loop().run_in_executor(None, client.stop)


def _priorities(assignment: endpoint_pb2.ClusterLoadAssignment) -> list[set[int]]:
    ordered = sorted(assignment.endpoints, key=lambda locality: locality.priority)
    return [{e.endpoint.address.socket_address.port_value for e in locality.lb_endpoints} for locality in ordered]


async def test_model_affinity_by_header_and_priorities(gateways, backends, channel_to, tmp_path) -> None:
    gateway = await gateways()
    first, _ = await backends("A", gateway.grpc_address, models=instant_models(("m1", "m2")))
    second, _ = await backends("B", gateway.grpc_address, models=instant_models(("m1", "m2")))
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 2)
    # A loads m1 (a call straight to it); its heartbeat tells the registry.
    await llm_service_pb2_grpc.LlmServiceStub(channel_to(first.address)).Chat(chat_request("hello", "m1"))
    await wait_for(
        lambda: any("m1" in e.loaded for e in gateway.gateway.registry.entries.values()), 10, "A's m1 in the registry"
    )
    ads = AdsStream(channel)
    try:
        ads.send(ROUTE, ["echo"])
        [route] = _unpack(await ads.next(), route_pb2.RouteConfiguration)
        routes = route.virtual_hosts[0].routes
        assert [
            (r.match.headers[0].string_match.exact if r.match.headers else "", r.route.cluster) for r in routes
        ] == [
            ("m1", "echo/m1"),
            ("m2", "echo/m2"),
            ("", "echo"),
        ]
        assert routes[0].match.headers[0].name == MODEL_HEADER
        ads.send(ENDPOINTS, ["echo/m1", "echo/m2", "echo"])
        assignments = {a.cluster_name: a for a in _unpack(await ads.next(), endpoint_pb2.ClusterLoadAssignment)}
        assert _priorities(assignments["echo/m1"]) == [{first.port}, {second.port}]  # loaded first, then the rest
        assert _priorities(assignments["echo/m2"]) == [{first.port, second.port}]  # nobody has it: all at 0
        assert _priorities(assignments["echo"]) == [{first.port, second.port}]
    finally:
        ads.close()

    client = XdsClientProcess("echo", write_bootstrap(tmp_path, gateway.grpc_address), model="m1")
    try:
        start = time.monotonic()
        await wait_for(lambda: len(client.since(start)) >= 40, 60, "40 answers for m1")
        assert set(client.since(start)) == {"A"}  # every call to the backend that has m1 loaded
    finally:
        await asyncio.get_running_loop().run_in_executor(None, client.stop)
