"""API keys on both of the gateway's ports: refused without or with a wrong key, health exempt."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capmesh.client import from_rpc_error
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.v1 import registry_service_pb2, registry_service_pb2_grpc
from tests.http.support import client

KEYS = ("key-one", "key-two")


@pytest.fixture(scope="module")
def keyed_gateway(background_loop, tmp_path_factory):
    from capmesh.gateway.server.app import start_gateway

    settings = GatewaySettings(
        port=0,
        http_port=0,
        api_keys=KEYS,
        files_dir=str(tmp_path_factory.mktemp("files")),
        grace_period_s=0,
        log_level="warning",
    )
    running = background_loop.run(start_gateway(settings))
    yield running
    background_loop.run(running.stop(grace_s=0))


@pytest.fixture
def http(keyed_gateway):
    with client(keyed_gateway.http_url) as session:
        yield session


def test_http_refuses_missing_and_wrong_keys(http):
    missing = http.get("/v1/capabilities")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["details"][0]["reason"] == "API_KEY_MISSING"
    wrong = http.get("/v1/capabilities", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["details"][0]["reason"] == "API_KEY_INVALID"
    assert http.get("/v1/capabilities", headers={"Authorization": "Basic a2V5LW9uZQ=="}).status_code == 401


def test_http_accepts_bearer_and_x_api_key(http):
    assert http.get("/v1/capabilities", headers={"Authorization": "Bearer key-one"}).status_code == 200
    assert http.get("/v1/capabilities", headers={"X-API-Key": "key-two"}).status_code == 200


def test_openai_routes_refuse_in_openai_shape(http):
    refused = http.get("/v1/models")
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    assert refused.json()["error"]["code"] == "missing_api_key"
    assert http.get("/v1/models", headers={"Authorization": "Bearer key-one"}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_health_and_metrics_need_no_key(http, path):
    assert http.get(path).status_code == 200


def _registry(keyed_gateway):
    channel = grpc.insecure_channel(f"127.0.0.1:{keyed_gateway.grpc_port}")
    return channel, registry_service_pb2_grpc.RegistryServiceStub(channel)


def test_grpc_refuses_missing_and_wrong_keys(keyed_gateway):
    channel, registry = _registry(keyed_gateway)
    with channel:
        request = registry_service_pb2.ListCapabilitiesRequest()
        for metadata, reason in [((), "API_KEY_MISSING"), ((("authorization", "Bearer nope"),), "API_KEY_INVALID")]:
            with pytest.raises(grpc.RpcError) as caught:
                registry.ListCapabilities(request, metadata=metadata, timeout=10)
            error = from_rpc_error(caught.value)
            assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
        with pytest.raises(grpc.RpcError) as streaming:
            next(iter(registry.WatchCapabilities(registry_service_pb2.WatchCapabilitiesRequest(), timeout=10)))
        assert streaming.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_accepts_keys_and_leaves_health_open(keyed_gateway):
    channel, registry = _registry(keyed_gateway)
    with channel:
        registry.ListCapabilities(
            registry_service_pb2.ListCapabilitiesRequest(), metadata=(("authorization", "Bearer key-one"),), timeout=10
        )
        registry.ListCapabilities(
            registry_service_pb2.ListCapabilitiesRequest(), metadata=(("x-api-key", "key-two"),), timeout=10
        )
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
