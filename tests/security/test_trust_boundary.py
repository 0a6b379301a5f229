"""The trust boundary on real processes: a gateway with client and admin keys and a mesh secret,
and a backend that records what reaches it.

- a client key cannot register, heartbeat or deregister a backend (PERMISSION_DENIED, on gRPC and
  HTTP); the mesh secret can register; an admin key can delete a backend;
- no client credential reaches a backend (gRPC proxy and HTTP bridge): it sees the key's id;
- a backend answers nothing but health without the mesh secret: the capability, AdminService and
  reflection are UNAUTHENTICATED.
"""

from __future__ import annotations

import json

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.client import from_rpc_error, sync_channel
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.llm.v1 import llm_service_pb2 as llm
from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.security.support import GatewayProcess, RecorderProcess, wait_available, write_keys

pytestmark = pytest.mark.e2e

SECRET = "mesh-secret-for-the-test"
CLIENT_KEY, ADMIN_KEY, LEGACY_KEY = "alice-key-1", "root-key-1", "legacy-key-1"
CREDENTIALS = {"authorization", "x-api-key", "cookie"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    keys = write_keys(
        tmp_path_factory.mktemp("keys") / "keys.jsonl",
        [{"id": "alice", "role": "client", "key": CLIENT_KEY}, {"id": "root", "role": "admin", "key": ADMIN_KEY}],
    )
    env = {
        "CAPMESH_GATEWAY_KEYS_FILE": str(keys),
        "CAPMESH_GATEWAY_API_KEYS": LEGACY_KEY,
        "CAPMESH_MESH_SECRET": SECRET,
        "CAPMESH_GATEWAY_FILES_DIR": str(tmp_path_factory.mktemp("files")),
    }
    with GatewayProcess(env) as gateway:
        recorder_env = {"CAPMESH_MESH_SECRET": SECRET, "CAPMESH_RECORDER_GATEWAY": gateway.address}
        with RecorderProcess(recorder_env) as backend:
            wait_available(gateway.address, "llm", metadata=(("authorization", f"Bearer {CLIENT_KEY}"),))
            yield gateway, backend


def _backend(address: str = "10.9.9.9:1") -> pb.Backend:
    return pb.Backend(address=address, capability="llm")


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = from_rpc_error(caught.value)
    return error.code, error.reason


def test_a_client_key_cannot_register_heartbeat_or_deregister(mesh):
    gateway, _ = mesh
    with sync_channel(gateway.address, api_key=CLIENT_KEY) as channel:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        denied = (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED")
        assert _code(lambda: registry.Register(pb.RegisterRequest(backend=_backend()), timeout=10)) == denied
        assert _code(lambda: registry.Heartbeat(pb.HeartbeatRequest(backend_id="x"), timeout=10)) == denied
        assert _code(lambda: registry.Deregister(pb.DeregisterRequest(backend_id="x"), timeout=10)) == denied
        # what a client key is for still works
        assert registry.ListCapabilities(pb.ListCapabilitiesRequest(), timeout=10).capabilities
    with sync_channel(gateway.address, api_key=LEGACY_KEY) as channel:  # CAPMESH_GATEWAY_API_KEYS: client keys
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        assert _code(lambda: registry.Register(pb.RegisterRequest(backend=_backend()), timeout=10))[0] == (
            grpc.StatusCode.PERMISSION_DENIED
        )


def test_http_backend_routes_refuse_a_client_key(mesh):
    gateway, _ = mesh
    with httpx.Client(base_url=gateway.http_url, timeout=30) as http:
        alice = {"Authorization": f"Bearer {CLIENT_KEY}"}
        register = http.post(
            "/v1/backends", json={"backend": {"address": "10.9.9.9:1", "capability": "llm"}}, headers=alice
        )
        assert register.status_code == 403, register.text
        assert register.json()["details"][0]["reason"] == "ROLE_NOT_ALLOWED"
        assert http.delete("/v1/backends/llm-10-9-9-9-1", headers=alice).status_code == 403
        assert http.post("/v1/backends", json={}).status_code == 401  # no credential at all
        assert http.get("/v1/capabilities", headers=alice).status_code == 200


def test_the_mesh_secret_registers_and_an_admin_deletes(mesh):
    gateway, _ = mesh
    secret = (("x-capmesh-mesh-secret", SECRET),)
    with grpc.insecure_channel(gateway.address) as channel:
        registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
        registered = registry.Register(pb.RegisterRequest(backend=_backend("10.9.9.8:1")), metadata=secret, timeout=10)
        wrong = (("x-capmesh-mesh-secret", "not-it"),)
        assert _code(lambda: registry.Register(pb.RegisterRequest(backend=_backend()), metadata=wrong, timeout=10)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "MESH_CREDENTIAL_INVALID",
        )
    with httpx.Client(base_url=gateway.http_url, timeout=30) as http:
        deleted = http.delete(f"/v1/backends/{registered.backend_id}", headers={"X-API-Key": ADMIN_KEY})
        assert deleted.status_code == 200, deleted.text


def _seen(content: str) -> dict[str, str]:
    return dict(json.loads(content))


def test_no_client_credential_reaches_a_backend(mesh):
    gateway, _ = mesh
    with grpc.insecure_channel(gateway.address) as channel:
        stub = llm_service_pb2_grpc.LlmServiceStub(channel)
        metadata = (("authorization", f"Bearer {CLIENT_KEY}"), ("cookie", "session=abc"), ("x-capmesh-key-id", "root"))
        answer = stub.Chat(llm.ChatRequest(messages=[llm.ChatMessage(content="hi")]), metadata=metadata, timeout=30)
        seen = _seen(answer.message.content)
        answer = stub.Chat(
            llm.ChatRequest(messages=[llm.ChatMessage(content="hi")]), metadata=(("x-api-key", ADMIN_KEY),), timeout=30
        )
        seen_admin = _seen(answer.message.content)
    assert not CREDENTIALS & set(seen) and not CREDENTIALS & set(seen_admin)
    assert seen["x-capmesh-key-id"] == "alice"  # not the "root" the caller claimed
    assert seen_admin["x-capmesh-key-id"] == "root"
    assert CLIENT_KEY not in json.dumps(seen) and ADMIN_KEY not in json.dumps(seen_admin)
    with httpx.Client(base_url=gateway.http_url, timeout=30) as http:
        reply = http.post(
            "/v1/llm:chat",
            json={"messages": [{"role": "ROLE_USER", "content": "hi"}]},
            headers={"Authorization": f"Bearer {CLIENT_KEY}", "Cookie": "session=abc", "X-Request-Id": "r-1"},
        )
        assert reply.status_code == 200, reply.text
        seen_http = _seen(reply.json()["message"]["content"])
    assert not CREDENTIALS & set(seen_http)
    assert seen_http["x-capmesh-key-id"] == "alice" and seen_http["x-request-id"] == "r-1"


def test_a_backend_answers_only_health_without_the_mesh_secret(mesh):
    _, backend = mesh
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(backend.address) as channel:
        chat = llm_service_pb2_grpc.LlmServiceStub(channel).Chat
        request = llm.ChatRequest(messages=[llm.ChatMessage(content="hi")])
        assert _code(lambda: chat(request, timeout=10)) == (unauthenticated, "MESH_CREDENTIAL_MISSING")
        client_key = (("authorization", f"Bearer {CLIENT_KEY}"),)
        assert _code(lambda: chat(request, metadata=client_key, timeout=10))[0] == unauthenticated
        wrong = (("x-capmesh-mesh-secret", "guess"),)
        assert _code(lambda: chat(request, metadata=wrong, timeout=10)) == (unauthenticated, "MESH_CREDENTIAL_INVALID")
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        assert _code(lambda: admin.UnloadModels(admin_service_pb2.UnloadModelsRequest(), timeout=10))[0] == (
            unauthenticated
        )
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as listed:
            list(
                reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
                )
            )
        assert listed.value.code() == unauthenticated
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # with the secret, the same call is answered
        secret = (("x-capmesh-mesh-secret", SECRET),)
        assert chat(request, metadata=secret, timeout=10).message.content
