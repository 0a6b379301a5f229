"""Every call the gateway makes to a backend presents the mesh secret, in the call's own metadata:
the health probe's Watch, the reason it asks for when a backend says NOT_SERVING, and the unload of
an exclusive device group's member (relayed calls: test_trust_boundary.py). In-process: a backend
that records the metadata of every call."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.common.v1 import model_pb2
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.registry.model import BackendRecord
from capmesh.gateway.server.registry.registry import Registry
from capmesh.gateway.server.routing.router import Router
from capmesh.services.runtime.trust import MESH_SECRET_HEADER
from tests.jobs.support import eventually

SECRET = "mesh-secret-for-the-probe"


class _Recorder(health_pb2_grpc.HealthServicer, admin_service_pb2_grpc.AdminServiceServicer):
    """Says NOT_SERVING (a model failed to load) and records each call's metadata by method."""

    def __init__(self) -> None:
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self._held = asyncio.Event()  # never set: the Watch stream stays open until the probe ends

    def _see(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.seen.setdefault(method, []).append(dict(context.invocation_metadata() or ()))

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> Any:
        self._see("Watch", context)
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._held.wait()

    async def GetServiceStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._see("GetServiceStatus", context)
        failed = model_pb2.ModelInfo(name="m", last_error="no weights")
        return admin_service_pb2.GetServiceStatusResponse(models=[failed])

    async def UnloadModels(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._see("UnloadModels", context)
        return admin_service_pb2.UnloadModelsResponse()


async def test_the_gateway_presents_the_mesh_secret_on_its_probe_and_unload_calls() -> None:
    recorder = _Recorder()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(recorder, server)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = GatewaySettings(mesh_secret=SECRET)
    registry = Registry(settings)
    try:
        entry = registry.upsert(BackendRecord("b", f"127.0.0.1:{port}", "llm", device_group="gpu0"))
        # NOT_SERVING makes the probe ask the backend why: the answer reaches the registry.
        await eventually(lambda: "no weights" in entry.last_error, timeout_s=10, what="the reason of NOT_SERVING")
        await Router(registry, settings)._unload("gpu0", entry, timeout=10)
        assert set(recorder.seen) == {"Watch", "GetServiceStatus", "UnloadModels"}
        for method, calls in recorder.seen.items():
            assert all(metadata.get(MESH_SECRET_HEADER) == SECRET for metadata in calls), method
    finally:
        await registry.close()
        await server.stop(0)
