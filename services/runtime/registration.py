"""Self-registration with a gateway: register at start, heartbeat, deregister on graceful shutdown.

`create_server` starts a `GatewayRegistration` when the service's `gateway` setting is set. The
service never waits for the gateway: if it is not up yet (or restarts and forgets the backend),
the registration is retried in the background, so services and gateway can start in any order.
"""

from __future__ import annotations

import asyncio
import socket

import grpc
import structlog

from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.services.runtime.gateway_channel import gateway_channel, gateway_metadata
from capmesh.services.runtime.tasks import stop_tasks

log = structlog.get_logger("capmesh.registration")

CALL_TIMEOUT_S = 5.0
RETRY_INITIAL_S = 0.2
RETRY_MAX_S = 5.0
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


def backend_of(running) -> pb.Backend:
    """The backend record of a running server, as the gateway should see it."""
    service, settings = running.service, running.service.settings
    address = settings.advertise_address
    if not address:
        host = socket.gethostname() if settings.host in WILDCARD_HOSTS else settings.host
        address = f"{host}:{running.port}"
    models = service.models
    device = str(getattr(settings, "device", "") or "")
    if models is not None:
        device = next((s.device for s in models.status() if s.device), device)
    from capmesh import __version__

    return pb.Backend(
        backend_id=f"{service.capability}-{address}".replace(":", "-").replace("/", "-"),
        address=address,
        capability=service.capability,
        services=service.service_names,
        models=models.served_models if models is not None else [],
        loaded_models=models.loaded_models() if models is not None else [],
        max_concurrency=settings.max_concurrency,
        max_queue=settings.max_queue,
        device=device or "cpu",
        device_group=settings.device_group,
        version=__version__,
        labels=backend_labels(service),
    )


RANDOM_WEIGHTS_LABEL = "random_weights"  # "true" on a backend whose model has random weights (noise)


def backend_labels(service) -> dict[str, str]:
    """What the registry shows of a backend beyond its record: its engine, and whether its model
    has random weights (so that `capmesh status`, the console and the OpenAI routes can say so)."""
    labels = {"engine": service.engine_name} if service.engine_name else {}
    if service.models is not None and service.models.random_weights():
        labels[RANDOM_WEIGHTS_LABEL] = "true"
    return labels


class GatewayRegistration:
    def __init__(self, running) -> None:
        self._running = running
        self._address = running.service.settings.gateway
        self._channel = gateway_channel(running.service.settings)
        self._metadata = gateway_metadata(running.service.settings)
        self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)
        self._backend_id = ""
        self._interval_s = 2.0
        self._task: asyncio.Task | None = None

    @property
    def backend_id(self) -> str:
        return self._backend_id

    async def start(self) -> None:
        await self._try_register()
        self._task = asyncio.get_running_loop().create_task(self._keep_registered())

    async def stop(self) -> None:
        await stop_tasks([self._task])
        if self._backend_id:
            try:
                await self._stub.Deregister(
                    pb.DeregisterRequest(backend_id=self._backend_id), timeout=CALL_TIMEOUT_S, metadata=self._metadata
                )
                log.info("registration.deregistered", gateway=self._address, backend=self._backend_id)
            except grpc.aio.AioRpcError as exc:
                log.warning("registration.deregister_failed", gateway=self._address, code=exc.code().name)
            self._backend_id = ""
        await self._channel.close()

    async def _try_register(self) -> bool:
        backend = backend_of(self._running)
        try:
            response = await self._stub.Register(
                pb.RegisterRequest(backend=backend), timeout=CALL_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("registration.failed", gateway=self._address, code=exc.code().name, error=exc.details())
            self._backend_id = ""
            return False
        self._backend_id = response.backend_id
        if response.heartbeat_interval_seconds > 0:
            self._interval_s = response.heartbeat_interval_seconds
        log.info("registration.registered", gateway=self._address, backend=self._backend_id, address=backend.address)
        return True

    async def _heartbeat(self) -> bool:
        """False when the gateway no longer knows this backend (or cannot be reached)."""
        service = self._running.service
        request = pb.HeartbeatRequest(
            backend_id=self._backend_id,
            loaded_models=service.models.loaded_models() if service.models is not None else [],
            in_flight=service.runtime.admission.in_flight,
        )
        try:
            # A heartbeat still unanswered when the next one is due counts as failed: waiting longer
            # (CALL_TIMEOUT_S) could outlast the lease, which the gateway sizes from this period.
            timeout = min(CALL_TIMEOUT_S, self._interval_s)
            response = await self._stub.Heartbeat(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            log.warning("registration.heartbeat_failed", gateway=self._address, code=exc.code().name)
            return False
        if response.heartbeat_interval_seconds > 0:  # the gateway's registry grew or shrank
            self._interval_s = response.heartbeat_interval_seconds
        return response.known

    async def _keep_registered(self) -> None:
        retry = RETRY_INITIAL_S
        while True:
            if self._backend_id:
                await asyncio.sleep(self._interval_s)  # the heartbeat period the gateway asked for
                if await self._heartbeat():
                    continue
                self._backend_id = ""
            if await self._try_register():
                retry = RETRY_INITIAL_S
            else:
                await asyncio.sleep(retry)  # backoff while the gateway is unreachable
                retry = min(retry * 2, RETRY_MAX_S)
