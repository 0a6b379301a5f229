"""capmesh.gateway.v1.RegistryService: registration by backends, the health view for operators."""

from __future__ import annotations

from capmesh.gateway.server.registry.model import (
    REGISTERED,
    BackendRecord,
    backend_id_for,
)
from capmesh.gateway.server.registry.registry import Registry
from capmesh.gateway.server.routing.services import is_reserved
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.services.runtime.errors import NotFound, Violations


class RegistryServicer(registry_service_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry, store) -> None:
        self._registry = registry
        self._store = store
        self._settings = registry.settings

    async def Register(self, request, context):
        backend = request.backend
        violations = Violations()
        violations.check(bool(backend.address), "backend.address", "must be host:port")
        violations.check(bool(backend.capability), "backend.capability", "must name the capability, e.g. tts")
        violations.check(backend.max_concurrency >= 0, "backend.max_concurrency", "must be 0 or more")
        violations.check(backend.max_queue >= 0, "backend.max_queue", "must be 0 or more")
        for index, service in enumerate(backend.services):
            violations.check(
                not is_reserved(service), f"backend.services[{index}]", f"{service} is served by the gateway itself"
            )
        violations.raise_if_any()
        if not backend.backend_id:
            backend = _with_id(backend, backend_id_for(backend.capability, backend.address))
        record = BackendRecord.from_proto(backend, REGISTERED)
        await self._store.put(record)
        interval, lease = self._registry.heartbeat_plan()
        return pb.RegisterResponse(
            backend_id=record.backend_id, heartbeat_interval_seconds=interval, lease_seconds=lease
        )

    async def Heartbeat(self, request, context):
        known = await self._store.renew(request.backend_id, tuple(request.loaded_models))
        interval, _ = self._registry.heartbeat_plan()  # backends follow the registry's growth
        return pb.HeartbeatResponse(known=known, heartbeat_interval_seconds=interval)

    async def Deregister(self, request, context):
        if not await self._store.delete(request.backend_id):
            raise NotFound(f"backend {request.backend_id!r} is not registered", reason="BACKEND_NOT_FOUND")
        return pb.DeregisterResponse()

    async def ListCapabilities(self, request, context):
        return pb.ListCapabilitiesResponse(capabilities=self._registry.capabilities())

    async def GetCapability(self, request, context):
        for status in self._registry.capabilities():
            if status.capability == request.capability:
                return pb.GetCapabilityResponse(capability=status)
        known = sorted({e.record.capability for e in self._registry.entries.values()})
        raise NotFound(
            f"capability {request.capability!r} has no backend; known: {', '.join(known) or 'none'}",
            reason="CAPABILITY_NOT_FOUND",
        )

    async def WatchCapabilities(self, request, context):
        # The whole view now, then after every change; changes that happen while one view is being
        # sent are folded into the next.
        version = self._registry.version
        yield pb.WatchCapabilitiesResponse(capabilities=self._registry.capabilities())
        while True:
            version = await self._registry.wait_changed(version)
            yield pb.WatchCapabilitiesResponse(capabilities=self._registry.capabilities())


def _with_id(backend: pb.Backend, backend_id: str) -> pb.Backend:
    copy = pb.Backend()
    copy.CopyFrom(backend)
    copy.backend_id = backend_id
    return copy
