"""The gRPC server every capability runs: one bootstrap, written once.

A capability describes itself as a `CapabilityService` (its servicers, service names, settings,
model manager and the `Runtime` its servicers call); `create_server` starts a grpc.aio server for
it on the configured port (0 picks a free one) with
- the capability's servicers behind `RequestContextInterceptor` (request ids, logs, error mapping),
- `grpc.health.v1` with one entry per capability service plus the empty name,
- server reflection, so `grpcurl -plaintext HOST:PORT list` and `describe` work,
- `capmesh.admin.v1.AdminService` (status, load, unload),
- when switched on, OpenTelemetry server spans (`telemetry.py`, OTEL_* variables) and Prometheus
  metrics on their own HTTP port (`metrics.py`, the `metrics_port` setting),
- explicit message size limits and keepalive settings;
- the mesh's service credential (`trust.py`): the mesh secret on every RPC but health, and mTLS
  with the mesh CA when configured.
Health follows the models: a served model whose load fails (lazily, on a call, or through
AdminService/LoadModels) turns every health entry NOT_SERVING, so that the gateway routes elsewhere
and shows why; a later successful load turns them SERVING again.
`serve` runs it until SIGTERM or SIGINT, then goes NOT_SERVING, lets in-flight calls finish within
the grace period, unloads the models and exits.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import structlog
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from capmesh import __version__
from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.services.runtime import metrics, telemetry
from capmesh.services.runtime.errors import ModelLoadError
from capmesh.services.runtime.interceptor import RequestContextInterceptor
from capmesh.services.runtime.lifecycle import ModelManager
from capmesh.services.runtime.logging import configure_logging
from capmesh.services.runtime.protoconv import model_info_to_proto
from capmesh.services.runtime.settings import ProcessSettings, ServerSettings
from capmesh.services.runtime.streaming import Runtime
from capmesh.services.runtime.trust import MeshSecretInterceptor, server_credentials

log = structlog.get_logger("capmesh.server")

ADMIN_SERVICE = admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name

AddServicer = Callable[[Any, grpc.aio.Server], None]


class Engine(Protocol):
    """What the runtime needs from every capability's engine, besides the calls its servicer makes."""

    @property
    def name(self) -> str: ...

    @property
    def models(self) -> ModelManager: ...

    def close(self) -> None: ...


class CapabilityService:
    """Everything the runtime needs to serve one capability.

    `servicers` pairs each generated `add_<X>Servicer_to_server` with the servicer object;
    `service_names` are the fully qualified names for health and reflection. `runtime` is the one the
    servicers were built with; a service whose servicers need none gets its own.
    """

    def __init__(
        self,
        capability: str,
        settings: ServerSettings,
        servicers: list[tuple[AddServicer, Any]],
        service_names: list[str],
        *,
        runtime: Runtime | None = None,
        models: ModelManager | None = None,
        engine_name: str = "",
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.capability = capability
        self.settings = settings
        self.servicers = servicers
        self.service_names = service_names
        self.runtime = runtime or Runtime(capability, settings)
        self.models = models
        self.engine_name = engine_name
        self.on_stop = on_stop

    @classmethod
    def of_engine(
        cls,
        engine: Engine,
        runtime: Runtime,
        servicer: Any,
        also_close: Callable[[], Awaitable[None]] | None = None,
    ) -> CapabilityService:
        """The shape every capability has: one engine behind one servicer of one proto service
        (found from the servicer's generated base class); the engine is closed (in a thread) when the
        server stops, after `also_close` ends whatever else the service holds (a channel to another
        capability)."""
        add_servicer, service = generated_service(servicer)

        async def close_engine() -> None:
            if also_close is not None:
                await also_close()
            await asyncio.to_thread(engine.close)

        return cls(
            runtime.capability,
            runtime.settings,
            [(add_servicer, servicer)],
            [service.full_name],
            runtime=runtime,
            models=engine.models,
            engine_name=engine.name,
            on_stop=close_engine,
        )


def generated_service(servicer: Any) -> tuple[AddServicer, ServiceDescriptor]:
    """The `add_<X>Servicer_to_server` function and the descriptor of service `<X>` for a servicer.

    grpc's code generator names both after the service: a servicer subclasses `<X>Servicer` from
    `<file>_pb2_grpc`, which also defines `add_<X>Servicer_to_server`, and `<file>_pb2.DESCRIPTOR`
    describes service `<X>`.
    """
    for base in type(servicer).__mro__:
        if base.__module__.endswith("_pb2_grpc") and base.__name__.endswith("Servicer"):
            stubs = importlib.import_module(base.__module__)
            messages = importlib.import_module(base.__module__.removesuffix("_grpc"))
            service = messages.DESCRIPTOR.services_by_name[base.__name__.removesuffix("Servicer")]
            return getattr(stubs, f"add_{base.__name__}_to_server"), service
    raise TypeError(f"{type(servicer).__name__} does not subclass a generated <Service>Servicer")


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, service: CapabilityService) -> None:
        self._service = service

    def _models(self):
        models = self._service.models
        return [model_info_to_proto(s) for s in models.status()] if models else []

    async def GetServiceStatus(
        self, request: admin_service_pb2.GetServiceStatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.GetServiceStatusResponse:
        s = self._service
        return admin_service_pb2.GetServiceStatusResponse(
            capability=s.capability,
            services=s.service_names,
            version=__version__,
            engine=s.engine_name,
            models=self._models(),
            in_flight=s.runtime.admission.in_flight,
            queued=s.runtime.admission.queued,
            max_concurrency=s.settings.max_concurrency,
            residency=s.settings.residency.value,
            device_group=s.settings.device_group,
        )

    async def LoadModels(
        self, request: admin_service_pb2.LoadModelsRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.LoadModelsResponse:
        models = self._service.models
        if models is not None:
            names = list(request.models) or [models.default_model]
            for name in names:
                await asyncio.get_running_loop().run_in_executor(None, models.ensure_loaded, name)
        return admin_service_pb2.LoadModelsResponse(models=self._models())

    async def UnloadModels(
        self, request: admin_service_pb2.UnloadModelsRequest, context: grpc.aio.ServicerContext
    ) -> admin_service_pb2.UnloadModelsResponse:
        models = self._service.models
        unloaded: list[str] = []
        if models is not None:
            names = list(request.models) or None
            unloaded = await asyncio.get_running_loop().run_in_executor(None, models.unload, names)
        return admin_service_pb2.UnloadModelsResponse(unloaded=unloaded, models=self._models())


@dataclass
class RunningServer:
    """A started server."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service: CapabilityService
    extra: list[Any] = field(default_factory=list)  # e.g. the gateway registration

    @property
    def address(self) -> str:
        return f"{self.service.settings.host}:{self.port}"

    @property
    def log(self) -> Any:
        """The server's log lines all name its capability: `capmesh up` interleaves several servers."""
        return log.bind(capability=self.service.capability)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.service.service_names]:
            await self.health.set(name, status)

    async def shutdown(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first (so routers stop sending), then let in-flight calls finish."""
        grace = self.service.settings.grace_period_s if grace_s is None else grace_s
        self.log.info("server.stopping", grace_s=grace)
        for hook in reversed(self.extra):
            await hook.stop()
        # Watchers (the gateway) learn NOT_SERVING at once; health watch streams never end by
        # themselves, so wait for the capability calls to drain rather than for every RPC.
        await self.health.enter_graceful_shutdown()
        admission = self.service.runtime.admission
        if not await admission.wait_idle(grace):
            self.log.warning("server.grace_expired", in_flight=admission.in_flight)
        await self.server.stop(min(grace, 1.0))
        if self.service.on_stop is not None:
            await self.service.on_stop()
        if self.service.models is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.service.models.close)
        await self.service.runtime.close()
        self.log.info("server.stopped")


def bind_port(
    server: grpc.aio.Server, host: str, port: int, cert_file: str = "", key_file: str = "", client_ca_file: str = ""
) -> int:
    """Opens the server's port, with TLS when a certificate is given (mTLS with a client CA); the port bound."""
    address = f"{host}:{port}"
    if cert_file:
        bound = server.add_secure_port(address, server_credentials(cert_file, key_file, client_ca_file))
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind {address}")
    return bound


def server_options(settings: ProcessSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Gateways ping each backend twice a second to notice a silent host within 2 s
        # (gateway/registry/model.py); a stricter limit would answer their pings with GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", 200),
        ("grpc.http2.max_pings_without_data", 0),
    ]


async def create_server(service: CapabilityService) -> RunningServer:
    settings = service.settings
    if service.models is not None:
        service.models.check_sources()  # a model that can never load stops the start, naming it
    # The mesh secret is checked first: a call without it never reaches logs, admission or the engine.
    interceptors: list[grpc.aio.ServerInterceptor] = (
        [MeshSecretInterceptor(settings.mesh_secret)] if settings.mesh_secret else []
    )
    # Tracing and metrics only when switched on (OTEL_* variables, metrics_port): off, no interceptor.
    if telemetry.enabled():
        interceptors.append(telemetry.TracingInterceptor())
    if settings.metrics_port >= 0:
        interceptors.append(metrics.MetricsInterceptor(service.capability, service.service_names))
    interceptors.append(RequestContextInterceptor())
    server = grpc.aio.server(interceptors=interceptors, options=server_options(settings))
    for add, servicer in service.servicers:
        add(servicer, server)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service.service_names, ADMIN_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    # mTLS when tls_client_ca_file names the mesh CA
    port = bind_port(
        server, settings.host, settings.port, settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    )
    await server.start()
    running = RunningServer(server, port, health_servicer, service)
    if service.models is not None:
        service.models.on_health(_health_follows_models(running, asyncio.get_running_loop()))
    if settings.metrics_port >= 0:
        endpoint = metrics.MetricsEndpoint(
            service.capability, service.runtime, service.models, settings.host, settings.metrics_port
        )
        running.extra.append(endpoint)
        running.log.info("metrics.serving", url=f"http://{settings.host}:{endpoint.port}/metrics")
    if settings.eager_load and service.models is not None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, service.models.ensure_loaded, "")
        except BaseException:
            # Stopped here, on its loop: a server left to the garbage collector would try to stop
            # itself on a closed loop and bury the reason under a page of tracebacks.
            for hook in reversed(running.extra):
                await hook.stop()
            await server.stop(0)
            raise
    await running.set_serving(service.models is None or service.models.healthy())
    if settings.gateway:
        from capmesh.services.runtime.registration import GatewayRegistration

        registration = GatewayRegistration(running)
        await registration.start()
        running.extra.append(registration)
    running.log.info(
        "server.started", address=running.address, services=service.service_names, engine=service.engine_name
    )
    return running


def _health_follows_models(running: RunningServer, loop: asyncio.AbstractEventLoop) -> Callable[[bool], None]:
    """The model manager's health listener: it runs in the thread that loaded, so the health
    change is handed to the server's loop."""

    def follow(healthy: bool) -> None:
        if healthy:
            running.log.info("server.serving_again")
        else:
            failures = running.service.models.load_failures() if running.service.models else {}
            running.log.error("server.not_serving", load_failures=failures)
        asyncio.run_coroutine_threadsafe(running.set_serving(healthy), loop)

    return follow


async def serve(service: CapabilityService) -> None:
    """Runs the service until SIGTERM or SIGINT, then shuts down gracefully."""
    telemetry.setup_tracing(service.capability)
    configure_logging(service.settings.log_level, service.settings.log_json)
    running = await create_server(service)
    # One line on stdout that scripts (and `capmesh up`) read to learn the bound port.
    print(f"capmesh {service.capability} listening on {running.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.shutdown()
    telemetry.shutdown_tracing()


def run(service: CapabilityService) -> None:
    try:
        asyncio.run(serve(service))
    except KeyboardInterrupt:
        sys.exit(130)
    except ModelLoadError as exc:  # a model that cannot load: one line, as a bad setting gets
        print(f"capmesh {service.capability}: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
