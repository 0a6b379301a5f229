"""The gateway process: registry, router, transparent proxy, files, jobs and the HTTP side.

`start_gateway(settings)` builds every part with what it needs and starts, in one event loop,
- the gRPC server: the RegistryService, health, reflection for every service it serves, every
  capability service (proxied as raw bytes to a healthy backend), FileService, JobService and
  google.longrunning.Operations;
- the file sweeper, the job runner and the capability health publisher;
- the HTTP app with uvicorn on `settings.http_port`, calling the same services in-process.
`await running.stop()` undoes it in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc
from google.longrunning import operations_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from starlette.applications import Starlette

from capmesh.gateway.server.auth.guard import AuthInterceptor, Guard
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.files.service import SERVICE_NAME as FILE_SERVICE
from capmesh.gateway.server.files.service import FileServicer, Sweeper, build_file_store, sweep_interval_s
from capmesh.gateway.server.files.store import FileStore
from capmesh.gateway.server.http.app import build_http_app
from capmesh.gateway.server.http.calls import GatewayCalls
from capmesh.gateway.server.jobs.scheduler import JobScheduler
from capmesh.gateway.server.jobs.service import (
    JOB_SERVICE,
    OPERATIONS_SERVICE,
    JobServicer,
    OperationsServicer,
    build_scheduler,
)
from capmesh.gateway.server.own_services import OwnServices
from capmesh.gateway.server.registry.model import State
from capmesh.gateway.server.registry.registry import Registry
from capmesh.gateway.server.registry.servicer import RegistryServicer
from capmesh.gateway.server.registry.static import load_static_backends
from capmesh.gateway.server.registry.store import MemoryRegistrations, RedisRegistrations
from capmesh.gateway.server.routing.proxy import Proxy
from capmesh.gateway.server.routing.router import Router
from capmesh.gateway.server.sockets import bound_tcp_socket
from capmesh.gateway.server.xds.ads import AggregatedDiscovery
from capmesh.gateway.v1 import (
    file_service_pb2_grpc,
    job_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
)
from capmesh.services.runtime import telemetry
from capmesh.services.runtime.interceptor import RequestContextInterceptor
from capmesh.services.runtime.server import bind_port, server_options
from capmesh.services.runtime.tasks import stop_tasks
from capmesh.services.runtime.telemetry import TracingInterceptor

log = structlog.get_logger("capmesh.gateway")

REGISTRY_SERVICE = registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name
OWN_SERVICES = (REGISTRY_SERVICE, FILE_SERVICE, JOB_SERVICE, OPERATIONS_SERVICE)


@dataclass
class Gateway:
    """The parts of one gateway, each built once and handed to those that use it."""

    settings: GatewaySettings
    registry: Registry
    router: Router
    files: FileStore
    scheduler: JobScheduler
    redis: Any  # redis.asyncio.Redis | None
    instance_id: str
    grpc_port: int = 0
    http_port: int = 0


class _EmbeddedUvicorn:
    """uvicorn in this event loop, on a socket bound here (so the port is known and a bind error
    raises here), without uvicorn taking over the process's signal handlers."""

    def __init__(self, app, settings: GatewaySettings) -> None:
        import uvicorn

        class Server(uvicorn.Server):
            def __init__(self, config, ready: asyncio.Event) -> None:
                super().__init__(config)
                self._ready = ready

            @contextlib.contextmanager
            def capture_signals(self):
                yield

            async def startup(self, sockets=None) -> None:
                await super().startup(sockets)
                self._ready.set()

        self._ready = asyncio.Event()
        self._server = Server(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.http_port,
                log_level="warning",
                lifespan="on",
                access_log=False,
                # open SSE streams and kept-alive connections get the
                # grace period (whole seconds), not forever
                timeout_graceful_shutdown=max(1, math.ceil(settings.grace_period_s)),
                ssl_certfile=settings.tls_cert_file or None,
                ssl_keyfile=settings.tls_key_file or None,
            ),
            self._ready,
        )
        # with several workers, every one binds this port (gateway/workers.py)
        self._socket = bound_tcp_socket(settings.host, settings.http_port, reuse_port=settings.workers > 1)
        self._socket.set_inheritable(True)
        self.port = self._socket.getsockname()[1]
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[self._socket]))
        ready = asyncio.get_running_loop().create_task(self._ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not self._ready.is_set():
            ready.cancel()
            await self._task  # raises what stopped it
            raise RuntimeError("the HTTP server stopped during start-up")

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)
        self._socket.close()


class _CapabilityHealth:
    """The gateway's health for each proxied service, and for each capability by its short name
    ("tts", as `capmesh status` and the catalogue call it): SERVING while a backend is routable."""

    def __init__(self, servicer: health.aio.HealthServicer, registry: Registry) -> None:
        self._servicer = servicer
        self._registry = registry
        self._capabilities: set[str] = set()  # the short names published so far
        self._task: asyncio.Task | None = None

    async def _publish(self) -> None:
        capabilities: dict[str, bool] = {info.capability: False for info in self._registry.catalog.values()}
        for name, info in self._registry.catalog.items():
            entries = self._registry.backends_for(name)
            serving = any(e.state in (State.AVAILABLE, State.ERROR) for e in entries)
            capabilities[info.capability] = capabilities[info.capability] or serving
            await self._set(name, serving)
        for entry in self._registry.entries.values():  # capabilities outside the catalogue, too
            serving = entry.state in (State.AVAILABLE, State.ERROR)
            capabilities[entry.record.capability] = capabilities.get(entry.record.capability, False) or serving
        for gone in self._capabilities - capabilities.keys():  # its last backend left
            capabilities[gone] = False
        self._capabilities = set(capabilities)
        for capability, serving in capabilities.items():
            await self._set(capability, serving)

    async def _set(self, name: str, serving: bool) -> None:
        await self._servicer.set(
            name, health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    async def _follow(self) -> None:
        version = -1
        while True:
            version = self._registry.version if version == -1 else await self._registry.wait_changed(version)
            await self._publish()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        await stop_tasks([self._task])


@dataclass
class RunningGateway:
    gateway: Gateway
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    registrations: MemoryRegistrations | RedisRegistrations
    _stops: list[Callable[[], Awaitable[None]]]  # background parts, stopped in reverse order
    _http: _EmbeddedUvicorn | None = None

    @property
    def grpc_port(self) -> int:
        return self.gateway.grpc_port

    @property
    def http_port(self) -> int:
        return self.gateway.http_port

    @property
    def grpc_address(self) -> str:
        return f"{self.gateway.settings.host}:{self.gateway.grpc_port}"

    @property
    def http_url(self) -> str:
        if not self.gateway.http_port:
            return ""
        scheme = "https" if self.gateway.settings.tls_cert_file else "http"
        return f"{scheme}://{self.gateway.settings.host}:{self.gateway.http_port}"

    async def stop(self, grace_s: float | None = None) -> None:
        grace = self.gateway.settings.grace_period_s if grace_s is None else grace_s
        log.info("gateway.stopping", grace_s=grace)
        # NOT_SERVING and no new HTTP requests first; then the background parts (the job runner
        # hands its running jobs back); then the gRPC server lets the calls in flight finish.
        await self.health.enter_graceful_shutdown()
        if self._http is not None:
            await self._http.stop()
        for stop in reversed(self._stops):
            try:
                await stop()
            except Exception:
                log.exception("gateway.stop_failed", step=getattr(stop, "__qualname__", str(stop)))
        await self.server.stop(grace)
        await self.registrations.stop()
        await self.gateway.registry.close()
        if self.gateway.redis is not None:
            await self.gateway.redis.aclose()
        log.info("gateway.stopped")


Registrations = MemoryRegistrations | RedisRegistrations


def _serve_own_services(own: OwnServices, gateway: Gateway, registrations: Registrations) -> None:
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
        RegistryServicer(gateway.registry, registrations), own.wrapped
    )
    file_service_pb2_grpc.add_FileServiceServicer_to_server(FileServicer(gateway.files), own.wrapped)
    job_service_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(gateway.scheduler), own.wrapped)
    operations_pb2_grpc.add_OperationsServicer_to_server(OperationsServicer(gateway.scheduler), own.wrapped)
    # xDS for proxyless clients and Envoy (gateway/xds); plain: a long-lived stream, no request context
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AggregatedDiscovery(gateway.registry), own.plain)


async def start_gateway(settings: GatewaySettings) -> RunningGateway:
    redis = None
    if settings.redis_url:
        import redis.asyncio as redis_asyncio

        redis = redis_asyncio.Redis.from_url(settings.redis_url)
    registry = Registry(settings)
    router = Router(registry, settings)
    instance_id = settings.instance_id or f"{socket.gethostname()}:{settings.port}:{os.getpid()}"
    files = build_file_store(settings, redis)  # jobs store their outputs here too
    gateway = Gateway(
        settings=settings,
        registry=registry,
        router=router,
        files=files,
        scheduler=build_scheduler(settings, registry, router, files, redis, instance_id),
        redis=redis,
        instance_id=instance_id,
    )
    registrations = RedisRegistrations(registry, redis) if redis is not None else MemoryRegistrations(registry)
    await registrations.start()
    for record in load_static_backends(settings.backends_file) if settings.backends_file else ():
        registry.upsert(record)

    guard = Guard(settings, redis)  # keys (a bad keys file stops the start here), roles, quotas
    interceptors: list[grpc.aio.ServerInterceptor] = [TracingInterceptor()] if telemetry.enabled() else []
    if guard.enforcing:
        interceptors.append(AuthInterceptor(guard))
    options = server_options(settings)
    if settings.workers > 1:  # as for HTTP: every worker listens on the one gRPC port
        options.append(("grpc.so_reuseport", 1))
    server = grpc.aio.server(interceptors=interceptors or None, options=options)
    own = OwnServices(server, RequestContextInterceptor(echo_request_id=False))
    _serve_own_services(own, gateway, registrations)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, own.plain)

    proxy = Proxy(router)
    for service in registry.catalog.values():
        server.add_registered_method_handlers(service.name, proxy.service_handlers(service))
    server.add_generic_rpc_handlers([proxy.dynamic_handler()])
    reflection.enable_server_reflection(
        [*OWN_SERVICES, *registry.catalog, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )

    port = bind_port(server, settings.host, settings.port, settings.tls_cert_file, settings.tls_key_file)
    await server.start()
    gateway.grpc_port = port
    stops: list[Callable[[], Awaitable[None]]] = []
    running = RunningGateway(gateway, server, health_servicer, registrations, stops)
    try:
        await guard.start()
        stops.append(guard.stop)
        sweeper = Sweeper(files, sweep_interval_s(settings.file_ttl_s))
        await sweeper.start()
        stops.append(sweeper.stop)
        await gateway.scheduler.start()
        stops.append(gateway.scheduler.stop)
        capability_health = _CapabilityHealth(health_servicer, registry)
        capability_health.start()
        stops.append(capability_health.stop)
        http_app: Starlette = build_http_app(
            settings, GatewayCalls(router, own), file_store=files, redis=redis, guard=guard, registry=registry
        )
        running._http = _EmbeddedUvicorn(http_app, settings)
        gateway.http_port = running._http.port
        await running._http.start()
        for name in ["", *OWN_SERVICES]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        await running.stop(grace_s=0)
        raise
    log.info(
        "gateway.started",
        grpc=running.grpc_address,
        http=running.http_url,
        redis=bool(redis),
        instance=gateway.instance_id,
    )
    return running
