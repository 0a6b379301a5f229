"""The gateway process: registry, router, transparent proxy, extensions and the HTTP side.

`start_gateway(settings)` builds a `Gateway` and starts, in one event loop,
- the gRPC server: the RegistryService, health, reflection for every service it serves, every
  capability service (proxied as raw bytes to a healthy backend) and the extensions' services;
- the extensions (files, then jobs) and the HTTP app, each found by module path and skipped only
  when its module does not exist yet;
- the HTTP app with uvicorn on `settings.http_port`.
`await running.stop()` undoes it in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.registry.model import State
from capmesh.gateway.server.registry.registry import Registry
from capmesh.gateway.server.registry.servicer import RegistryServicer
from capmesh.gateway.server.registry.static import load_static_backends
from capmesh.gateway.server.registry.store import MemoryStore, RedisStore
from capmesh.gateway.server.routing.proxy import Proxy
from capmesh.gateway.server.routing.router import Router
from capmesh.gateway.v1 import registry_service_pb2, registry_service_pb2_grpc
from capmesh.services.runtime.interceptor import RequestContextInterceptor
from capmesh.services.runtime.server import server_options
from capmesh.services.runtime.tasks import stop_tasks

log = structlog.get_logger("capmesh.gateway")

REGISTRY_SERVICE = registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name

# Extensions by module path, in start order (jobs store their outputs as files).
EXTENSIONS: tuple[tuple[str, str, str], ...] = (
    ("files", "capmesh.gateway.server.files.service", "build_file_extension"),
    ("jobs", "capmesh.gateway.server.jobs.service", "build_job_extension"),
)
HTTP_APP = ("capmesh.gateway.server.http.app", "build_http_app")


async def _nothing() -> None:
    return None


@dataclass
class Extension:
    """A part of the gateway another module builds: gRPC servicers plus start/stop hooks.
    Extensions may carry more attributes (the files extension carries `store`)."""

    servicers: list[tuple[Callable[[Any, grpc.aio.Server], None], Any]] = field(default_factory=list)
    service_names: list[str] = field(default_factory=list)
    start: Callable[[], Awaitable[None]] = _nothing
    stop: Callable[[], Awaitable[None]] = _nothing


@dataclass
class Gateway:
    settings: GatewaySettings
    registry: Registry
    router: Router
    redis: Any  # redis.asyncio.Redis | None
    grpc_port: int = 0
    http_port: int = 0
    extensions: dict[str, Extension] = field(default_factory=dict)
    instance_id: str = ""


def optional_module(path: str):
    """The module, or None when it (or its package) does not exist yet; any other import error raises."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name and (path == exc.name or path.startswith(exc.name + ".")) and exc.name.startswith("capmesh."):
            log.warning("gateway.module_missing", module=path)
            return None
        raise


class _HandlerCallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def _intercepted(interceptor: grpc.aio.ServerInterceptor, method: str, handler):
    """The handler as `interceptor` would wrap it, computed once when the service is added.
    The interceptor only wraps (its continuation never suspends), so its coroutine completes on
    the first step."""
    async def continuation(_details):
        return handler

    step = interceptor.intercept_service(continuation, _HandlerCallDetails(method))
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise RuntimeError(f"{type(interceptor).__name__} suspended while wrapping {method}")


class _OwnServices:
    """Stands in for the gRPC server when the gateway adds its own servicers: each handler gets
    the request-context wrapping (request ids, logs, error mapping) as it is added. Proxied calls
    thus pay for no server interceptor (the backend's own does that work, and the proxy relays
    what it says)."""

    def __init__(self, server: grpc.aio.Server, interceptor: grpc.aio.ServerInterceptor) -> None:
        self._server = server
        self._interceptor = interceptor

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self._server.add_registered_method_handlers(
            service, {name: _intercepted(self._interceptor, f"/{service}/{name}", h) for name, h in handlers.items()})

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers([_InterceptedGeneric(h, self._interceptor) for h in handlers])


class _InterceptedGeneric(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, interceptor: grpc.aio.ServerInterceptor) -> None:
        self._inner = inner
        self._interceptor = interceptor
        self._wrapped: dict[str, Any] = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        if method not in self._wrapped:
            handler = self._inner.service(handler_call_details)
            self._wrapped[method] = None if handler is None else _intercepted(self._interceptor, method, handler)
        return self._wrapped[method]


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

        ssl = {"ssl_certfile": settings.tls_cert_file, "ssl_keyfile": settings.tls_key_file} \
            if settings.tls_cert_file else {}
        self._ready = asyncio.Event()
        self._server = Server(uvicorn.Config(app, host=settings.host, port=settings.http_port, log_level="warning",
                                             lifespan="on", access_log=False,
                                             # open SSE streams and kept-alive connections get the
                                             # grace period, not forever
                                             timeout_graceful_shutdown=max(1.0, settings.grace_period_s),
                                             **ssl), self._ready)
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they
        # are TCP; without it every response on a kept-alive connection waits ~40 ms for an ACK.
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((settings.host, settings.http_port))
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
    """The gateway's health for each proxied service: SERVING while a backend is routable."""

    def __init__(self, servicer: health.aio.HealthServicer, registry: Registry) -> None:
        self._servicer = servicer
        self._registry = registry
        self._task: asyncio.Task | None = None

    async def _publish(self) -> None:
        for name in self._registry.catalog:
            entries = self._registry.backends_for(name)
            serving = any(e.state in (State.AVAILABLE, State.ERROR) for e in entries)
            await self._servicer.set(name, health_pb2.HealthCheckResponse.SERVING if serving
                                     else health_pb2.HealthCheckResponse.NOT_SERVING)

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
    store: Any
    _stops: list[Callable[[], Awaitable[None]]]  # extensions and helpers, stopped in reverse order
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
        # NOT_SERVING and no new HTTP requests first; then the extensions (the job runner hands its
        # running jobs back); then the gRPC server lets the calls in flight finish.
        await self.health.enter_graceful_shutdown()
        if self._http is not None:
            await self._http.stop()
        for stop in reversed(self._stops):
            try:
                await stop()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                log.exception("gateway.stop_failed", step=getattr(stop, "__qualname__", str(stop)))
        await self.server.stop(grace)
        await self.store.stop()
        await self.gateway.registry.close()
        if self.gateway.redis is not None:
            await self.gateway.redis.aclose()
        log.info("gateway.stopped")


async def start_gateway(settings: GatewaySettings) -> RunningGateway:
    redis = None
    if settings.redis_url:
        import redis.asyncio as redis_asyncio

        redis = redis_asyncio.Redis.from_url(settings.redis_url)
    registry = Registry(settings)
    router = Router(registry, settings)
    gateway = Gateway(settings=settings, registry=registry, router=router, redis=redis,
                      instance_id=settings.instance_id or f"{socket.gethostname()}:{settings.port}:{os.getpid()}")
    store = RedisStore(registry, redis) if redis is not None else MemoryStore(registry)
    await store.start()
    for record in load_static_backends(settings.backends_file) if settings.backends_file else ():
        registry.upsert(record)

    interceptors: list[grpc.aio.ServerInterceptor] = []
    if settings.api_keys:
        from capmesh.gateway.server.auth import ApiKeyInterceptor

        interceptors.append(ApiKeyInterceptor(settings.api_keys))
    server = grpc.aio.server(interceptors=interceptors or None, options=server_options(settings))
    own = _OwnServices(server, RequestContextInterceptor(echo_request_id=False))

    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(registry, store), own)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    own_services = [REGISTRY_SERVICE]

    for name, module_path, builder in EXTENSIONS:
        module = optional_module(module_path)
        if module is None:
            continue
        extension = getattr(module, builder)(gateway)
        gateway.extensions[name] = extension
        for add, servicer in extension.servicers:
            add(servicer, own)
        own_services.extend(extension.service_names)

    proxy = Proxy(router)
    for service in registry.catalog.values():
        server.add_registered_method_handlers(service.name, proxy.service_handlers(service))
    server.add_generic_rpc_handlers([proxy.dynamic_handler()])
    reflection.enable_server_reflection(
        [*own_services, *registry.catalog, health.SERVICE_NAME, reflection.SERVICE_NAME], server)

    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert_file:
        credentials = grpc.ssl_server_credentials(
            [(Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes())])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}")
    await server.start()
    gateway.grpc_port = port
    stops: list[Callable[[], Awaitable[None]]] = []
    running = RunningGateway(gateway, server, health_servicer, store, stops)
    try:
        for name in gateway.extensions:
            await gateway.extensions[name].start()
            stops.append(gateway.extensions[name].stop)
        capability_health = _CapabilityHealth(health_servicer, registry)
        capability_health.start()
        stops.append(capability_health.stop)
        http_module = optional_module(HTTP_APP[0])
        if http_module is not None:
            running._http = _EmbeddedUvicorn(getattr(http_module, HTTP_APP[1])(gateway), settings)
            gateway.http_port = running._http.port
            await running._http.start()
        for name in ["", *own_services]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        await running.stop(grace_s=0)
        raise
    log.info("gateway.started", grpc=running.grpc_address, http=running.http_url,
             extensions=sorted(gateway.extensions), redis=bool(redis), instance=gateway.instance_id)
    return running
