"""The liveness probe: one grpc.health.v1 Watch stream per backend.

The Watch stream reports every change of the backend's overall health ("" service) as it happens;
when the backend goes away (killed, restarted) the stream breaks at once, so the gateway learns it
without polling. A broken stream is reopened with a short backoff. A capmesh backend that says
NOT_SERVING because a model failed to load is asked why (AdminService's model status), so that the
registry shows the reason next to the backend rather than the bare status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.gateway.server.registry.model import BackendEntry
from capmesh.services.runtime.tasks import stop_tasks

log = structlog.get_logger("capmesh.gateway.health")

RETRY_INITIAL_S = 0.05
RETRY_MAX_S = 2.0
REASON_TIMEOUT_S = 2.0

ProbeCallback = Callable[[BackendEntry, bool, str], None]


class HealthWatcher:
    def __init__(self, entry: BackendEntry, on_probe: ProbeCallback, credentials: Sequence[tuple[str, str]]) -> None:
        self._entry = entry
        self._on_probe = on_probe
        self._credentials = tuple(credentials)  # the mesh secret (Registry.credentials)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"health:{self._entry.backend_id}")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait_stopped(self) -> None:
        await stop_tasks([self._task])

    async def _run(self) -> None:
        stub = health_pb2_grpc.HealthStub(self._entry.channel)
        delay = RETRY_INITIAL_S
        while True:
            try:
                call = stub.Watch(health_pb2.HealthCheckRequest(service=""), metadata=self._credentials)
                async for response in call:
                    delay = RETRY_INITIAL_S
                    serving = response.status == health_pb2.HealthCheckResponse.SERVING
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                    self._on_probe(self._entry, serving, "" if serving else f"health probe: {status}")
                    if not serving:  # routing has already stopped; the reason follows when there is one
                        reason = await self._load_failures()
                        if reason:
                            self._on_probe(self._entry, False, f"health probe: {status}: {reason}")
                self._on_probe(self._entry, False, "health probe: the watch stream ended")
            except grpc.aio.AioRpcError as exc:
                self._on_probe(self._entry, False, f"health probe: {exc.code().name}: {exc.details()}")
            # Backoff between reconnection attempts to a backend that is down (not a readiness wait).
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _load_failures(self) -> str:
        """The model loads that failed, as the backend reports them; "" when none did (a backend
        shutting down) or it cannot say (a backend that is no capmesh service has no AdminService)."""
        stub = admin_service_pb2_grpc.AdminServiceStub(self._entry.channel)
        try:
            answer = await stub.GetServiceStatus(
                admin_service_pb2.GetServiceStatusRequest(), metadata=self._credentials, timeout=REASON_TIMEOUT_S
            )
        except grpc.aio.AioRpcError:
            return ""
        return "; ".join(f"model {m.name!r} failed to load: {m.last_error}" for m in answer.models if m.last_error)
