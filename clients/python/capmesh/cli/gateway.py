"""`capmesh gateway`, `capmesh status` and `capmesh up` (the gateway and every service at once).

capmesh gateway --port 50051 --http-port 8080 [--redis redis://...] [--workers N] [--backends-file b.yaml]
capmesh status [--address HOST:PORT] [--watch] [--json]
capmesh up [-f deploy/gpu.yaml] [--only tts --only llm] [--port 50051] [--http-port 8080] [--redis URL --workers N]
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from capmesh.cli.options import address_option

if TYPE_CHECKING:
    import asyncio

    from capmesh.mesh.spec import Component, MeshSpec

STATE_STYLES = {"AVAILABLE": "green", "UNKNOWN": "yellow", "UNAVAILABLE": "red", "ERROR": "red"}


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway)
    app.command("status")(status)
    app.command("up")(up)


def gateway(
    host: str | None = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
    port: int | None = typer.Option(None, help="gRPC port (default 50051); 0 picks a free one."),
    http_port: int | None = typer.Option(None, help="HTTP port (default 8080); 0 picks a free one."),
    redis: str | None = typer.Option(None, "--redis", help="Share the registry and jobs in Redis (redis://...)."),
    workers: int | None = typer.Option(
        None, help="Gateway processes on the same ports (SO_REUSEPORT; default 1); above 1 needs --redis."
    ),
    backends_file: str | None = typer.Option(None, help="YAML or JSON file of static backends."),
    gpu_mode: str | None = typer.Option(None, help="resident, or exclusive (one device-group member at a time)."),
    setting: list[str] = typer.Option([], "--set", help="Any other gateway setting as KEY=VALUE (repeatable)."),
) -> None:
    """Run the gateway: capability proxy, registry, jobs, files and the HTTP bridge."""
    from redis.exceptions import RedisError

    from capmesh.cli.main import parse_assignments
    from capmesh.gateway.server.config import ENV_PREFIX, GatewaySettings
    from capmesh.gateway.server.main import run
    from capmesh.services.runtime.errors import CapmeshError
    from capmesh.services.runtime.settings import SettingsError, load_settings

    overrides = {
        "host": host,
        "port": port,
        "http_port": http_port,
        "redis_url": redis,
        "workers": workers,
        "backends_file": backends_file,
        "gpu_mode": gpu_mode,
        **parse_assignments(setting),
    }
    try:
        settings = load_settings(GatewaySettings, ENV_PREFIX, overrides)
    except SettingsError as exc:
        typer.secho(f"capmesh gateway: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    try:
        run(settings)
    except (CapmeshError, OSError, RedisError, SettingsError) as exc:  # a bad backends or keys file, a port in use
        typer.secho(f"capmesh gateway: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc


def status(
    address: str = address_option(),
    watch: bool = typer.Option(False, "--watch", help="Print the table again after every change."),
    as_json: bool = typer.Option(False, "--json", help="Print the registry's view as JSON (one line per view)."),
) -> None:
    """Show every capability and backend the gateway knows, with its health."""
    import grpc
    from google.protobuf import json_format
    from rich.console import Console

    from capmesh.client import from_rpc_error, sync_channel
    from capmesh.gateway.v1 import registry_service_pb2 as pb
    from capmesh.gateway.v1 import registry_service_pb2_grpc

    console = Console()
    if not console.is_terminal:  # piped or captured: rows stay whole lines rather than 80-column folds
        console = Console(width=10_000)

    def show(view) -> None:
        if as_json:
            typer.echo(json_format.MessageToJson(view, indent=None))
        else:
            console.print(capability_table(view.capabilities, address))

    stub = registry_service_pb2_grpc.RegistryServiceStub(sync_channel(address))
    try:
        if watch:
            for view in stub.WatchCapabilities(pb.WatchCapabilitiesRequest()):
                show(view)
        else:
            show(stub.ListCapabilities(pb.ListCapabilitiesRequest(), timeout=10))
    except grpc.RpcError as exc:
        typer.secho(f"capmesh status: {address}: {from_rpc_error(exc)}", fg="red", err=True)
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def capability_table(capabilities, address: str):
    """The ListCapabilities view as one rich table, a row per backend."""
    from rich.table import Table

    from capmesh.gateway.v1 import registry_service_pb2 as pb

    table = Table(title=f"capmesh at {address}", title_justify="left")
    for column in (
        "capability",
        "state",
        "backend",
        "address",
        "backend state",
        "in flight",
        "loaded models",
        "last success",
        "last error",
        "cooldown",
    ):
        table.add_column(column, overflow="fold")
    if not capabilities:
        table.add_row("-", "no backend registered", "", "", "", "", "", "", "", "")
    for capability in capabilities:
        summary = _state_text(pb.BackendState.Name(capability.state))
        queued = f" ({capability.queued} queued)" if capability.queued else ""
        for index, backend in enumerate(capability.backends):
            table.add_row(
                capability.capability if index == 0 else "",
                summary + queued if index == 0 else "",
                backend.backend.backend_id,
                backend.backend.address,
                _state_text(pb.BackendState.Name(backend.state)),
                str(backend.in_flight),
                _models_text(backend.backend),
                _clock(backend.last_success_time) if backend.HasField("last_success_time") else "-",
                _last_error(backend),
                f"{backend.cooldown_remaining_seconds:.1f}s" if backend.cooldown_remaining_seconds else "-",
            )
    return table


def _models_text(record) -> str:
    """The loaded models, and a warning when the backend's model has random weights (its output is noise)."""
    text = ", ".join(record.loaded_models) or "-"
    if record.labels.get("random_weights") == "true":
        text += " [yellow](random weights: output is noise)[/]"
    return text


def _last_error(backend) -> str:
    """The last error while it still explains the state: an AVAILABLE backend has recovered from it
    (a probe or a call since succeeded), so an old "Connection refused" would only mislead."""
    from capmesh.gateway.v1 import registry_service_pb2 as pb

    if not backend.last_error or backend.state == pb.BACKEND_STATE_AVAILABLE:
        return "-"
    when = f" (at {_clock(backend.last_error_time)})" if backend.HasField("last_error_time") else ""
    return backend.last_error + when


def _clock(timestamp) -> str:
    return timestamp.ToDatetime().strftime("%H:%M:%S")


def _state_text(name: str) -> str:
    short = name.removeprefix("BACKEND_STATE_")
    return f"[{STATE_STYLES.get(short, 'white')}]{short}[/]"


def up(
    file: Path | None = typer.Option(None, "-f", "--file", help="A mesh file (deploy/*.yaml); default offline."),
    only: list[str] = typer.Option([], "--only", help="Start only these capabilities (repeatable)."),
    host: str = typer.Option("127.0.0.1", help="Address every process binds."),
    port: int | None = typer.Option(None, help="The gateway's gRPC port (default 50051); 0 picks a free one."),
    http_port: int | None = typer.Option(None, help="The gateway's HTTP port (default 8080); 0 picks a free one."),
    redis: str | None = typer.Option(None, "--redis", help="Give the gateway a Redis (redis://...)."),
    workers: int | None = typer.Option(
        None, help="Gateway processes on the same ports (default 1); above 1 needs --redis (or the file's)."
    ),
    timeout: float = typer.Option(300.0, help="Seconds to wait for every service to be SERVING."),
    log_dir: Path | None = typer.Option(None, help="Where each process writes its log (default a temp folder)."),
) -> None:
    """Start the gateway and every capability service, each its own process, on the offline
    profile or as a mesh file describes (settings, replicas); wait until all serve; Ctrl-C stops
    them all."""
    import asyncio

    from capmesh.gateway.server.config import GATEWAY_GRPC_PORT, GATEWAY_HTTP_PORT

    if file is None:
        plan = offline_plan(chosen_capabilities(only))
        port = GATEWAY_GRPC_PORT if port is None else port
        http_port = GATEWAY_HTTP_PORT if http_port is None else http_port
    else:
        from capmesh.cli.deploy import read_mesh

        try:
            plan = mesh_plan(read_mesh(file, "up"), only)
        except MeshError as exc:
            typer.secho(f"capmesh up: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc
    mesh = Mesh(
        plan,
        host=host,
        port=port,
        http_port=http_port,
        redis_url=redis or "",
        workers=workers,
        timeout_s=timeout,
        log_dir=log_dir,
    )
    try:
        code = asyncio.run(mesh.run())
    except MeshError as exc:
        typer.secho(f"capmesh up: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


# -- capmesh up -------------------------------------------------------------------------------------

STOP_TIMEOUT_S = 20.0


class MeshError(RuntimeError):
    """The mesh could not start; the message says which process and where its log is."""


@dataclass(frozen=True)
class Plan:
    """What `capmesh up` starts: the gateway's environment and, per capability, its environment
    and how many processes (replicas) serve it."""

    gateway_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, tuple[dict[str, str], int]] = field(default_factory=dict)


def offline_plan(capabilities: list[str]) -> Plan:
    """`capmesh up` without a file: one process per capability on its defaults, the hub offline."""
    from capmesh.mesh.spec import OFFLINE_ENV

    return Plan(OFFLINE_ENV, {name: (OFFLINE_ENV, 1) for name in capabilities})


def mesh_plan(spec: MeshSpec, only: list[str]) -> Plan:
    """A mesh file's settings as each process's `CAPMESH_<PREFIX>_<FIELD>` variables; secrets are
    read from the variables the file names. One machine runs one gateway: the gateway's
    `replicas` (and the `kubernetes` section) are for `capmesh deploy kubernetes`."""
    from capmesh.mesh.spec import OFFLINE_ENV

    missing = [name for name in only if name not in {c.name for c in spec.capabilities}]
    if missing:
        raise MeshError(f"{spec.path} does not describe {', '.join(missing)} (--only)")
    base = dict(OFFLINE_ENV) if spec.offline else {}

    def env_of(component: Component) -> dict[str, str]:
        env = {**base, **component.env()}
        for name, ref in component.secret_env().items():
            if ref.env not in os.environ:
                raise MeshError(f"{spec.path}: {component.name} reads its {name} from ${ref.env}, which is not set")
            env[name] = os.environ[ref.env]
        return env

    return Plan(
        env_of(spec.gateway),
        {c.name: (env_of(c), c.replicas) for c in spec.capabilities if not only or c.name in only},
    )


def chosen_capabilities(only: list[str]) -> list[str]:
    """The capabilities to start: those named with --only, else every row of the catalogue."""
    from capmesh.services.catalog import NAMES

    unknown = [name for name in only if name not in NAMES]
    if unknown:
        raise typer.BadParameter(
            f"unknown capabilities {', '.join(unknown)}; known: {', '.join(NAMES)}", param_hint="--only"
        )
    return list(only) or list(NAMES)


class _Child:
    """One process of the mesh: its log file and the address it printed when it started."""

    def __init__(self, name: str, args: list[str], log_path: Path, capability: str = "") -> None:
        self.name = name
        self.capability = capability or name
        self.args = args
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.address = ""
        self.banner = ""
        self._drain: asyncio.Task[None] | None = None

    @property
    def proc(self) -> asyncio.subprocess.Process:
        if self.process is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self.process

    @property
    def stdout(self) -> asyncio.StreamReader:
        stdout = self.proc.stdout
        if stdout is None:
            raise RuntimeError(f"{self.name} was started without a stdout pipe")
        return stdout

    async def start(self, env: dict[str, str], timeout_s: float) -> None:
        import asyncio

        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=log, env=env, start_new_session=True
        )
        log.close()
        try:
            line = await asyncio.wait_for(self._listening_line(), timeout_s)
        except TimeoutError:
            raise MeshError(f"{self.name} did not start within {timeout_s:.0f}s; log: {self.log_path}") from None
        self.banner = line
        self.address = (
            line.split(" listening on ", 1)[1].split()[-1]
            if self.name != "gateway"
            else line.split(" grpc ", 1)[1].split()[0]
        )
        self._drain = asyncio.get_running_loop().create_task(self._copy_rest())

    async def _listening_line(self) -> str:
        while True:
            raw = await self.stdout.readline()
            if not raw:
                await self.proc.wait()
                raise MeshError(
                    f"{self.name} exited with code {self.proc.returncode} during start-up; "
                    f"log: {self.log_path}\n{_tail(self.log_path)}"
                )
            line = raw.decode(errors="replace").strip()
            if " listening on " in line:
                return line

    async def _copy_rest(self) -> None:
        with self.log_path.open("ab") as log:
            while raw := await self.stdout.readline():
                log.write(raw)

    def running(self) -> bool:
        return self.process is not None and self.proc.returncode is None

    async def stop(self) -> None:
        import asyncio
        import signal

        if not self.running():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._drain is not None:
            self._drain.cancel()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Mesh:
    """The gateway plus the processes of each capability, each registering itself with the gateway."""

    def __init__(
        self,
        plan: Plan,
        *,
        host: str,
        port: int | None,
        http_port: int | None,
        redis_url: str,
        timeout_s: float,
        log_dir: Path | None,
        workers: int | None = None,
    ) -> None:
        import tempfile

        from capmesh.services.runtime.trust import new_mesh_env

        self.plan = plan
        self.capabilities = list(plan.services)
        self.host = host
        self.port = port
        self.http_port = http_port
        self.redis_url = redis_url
        self.workers = workers
        self.timeout_s = timeout_s
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="capmesh-up-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: list[_Child] = []
        # Every process of this mesh shares one mesh secret (the backend credential), made here
        # unless CAPMESH_MESH_SECRET is set: services register with it, the gateway sends it to them.
        self.mesh_env = new_mesh_env(os.environ)

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "capmesh.cli.main", *args]

    async def run(self) -> int:
        import asyncio
        import signal

        from rich.console import Console

        console = Console()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            # Flags override the file's settings (they arrive as variables); without either, the
            # gateway's own defaults (50051, 8080) apply.
            gateway_args = ["gateway", "--host", self.host]
            if self.port is not None:
                gateway_args += ["--port", str(self.port)]
            if self.http_port is not None:
                gateway_args += ["--http-port", str(self.http_port)]
            if self.redis_url:
                gateway_args += ["--redis", self.redis_url]
            if self.workers is not None:
                gateway_args += ["--workers", str(self.workers)]
            gateway = _Child("gateway", self._command(*gateway_args), self.log_dir / "gateway.log")
            self.children.append(gateway)
            with console.status("starting the gateway"):
                await gateway.start(self.env_of(gateway), self.timeout_s)
            self.pin_gateway_ports(gateway)
            services = [
                _Child(
                    name if index == 0 else f"{name}-{index + 1}",
                    self._command("serve", name, "--host", self.host, "--port", "0", "--gateway", gateway.address),
                    self.log_dir / (f"{name}.log" if index == 0 else f"{name}-{index + 1}.log"),
                    capability=name,
                )
                for name, (_, replicas) in self.plan.services.items()
                for index in range(replicas)
            ]
            self.children.extend(services)
            with console.status(f"starting {', '.join(self.capabilities) or 'no services'}"):
                await asyncio.gather(*(child.start(self.env_of(child), self.timeout_s) for child in services))
                view = await self._wait_serving(gateway.address, stop)
            if view is None:
                return 130
            console.print(self._table(gateway, services, view))
            console.print(f"logs: {self.log_dir}    stop: Ctrl-C")
            return await self._watch(stop, console)
        finally:
            await self._stop_all(console)

    async def _wait_serving(self, gateway_address: str, stop):
        """Polls ListCapabilities until each started capability has an AVAILABLE backend per replica."""
        import asyncio
        import time

        from capmesh.client.channel import aio_channel_to
        from capmesh.gateway.v1 import registry_service_pb2 as pb
        from capmesh.gateway.v1 import registry_service_pb2_grpc
        from capmesh.services.runtime.trust import mesh_metadata, secret_of

        deadline = time.monotonic() + self.timeout_s
        # The gateway's own credential: its view answers whatever keys clients need.
        secret = secret_of({**os.environ, **self.mesh_env, **self.plan.gateway_env}, "gateway")
        async with aio_channel_to(gateway_address, metadata=mesh_metadata(secret)) as channel:
            stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
            while not stop.is_set():
                view = (await stub.ListCapabilities(pb.ListCapabilitiesRequest(), timeout=10)).capabilities
                available = {c.capability: sum(b.state == pb.BACKEND_STATE_AVAILABLE for b in c.backends) for c in view}
                serving = {
                    name for name, (_, replicas) in self.plan.services.items() if available.get(name, 0) >= replicas
                }
                if serving >= set(self.capabilities):
                    return view
                for child in self.children:
                    if not child.running():
                        raise MeshError(
                            f"{child.name} exited with code {child.proc.returncode}; "
                            f"log: {child.log_path}\n{_tail(child.log_path)}"
                        )
                if time.monotonic() > deadline:
                    waiting = sorted(set(self.capabilities) - serving)
                    raise MeshError(
                        f"not SERVING after {self.timeout_s:.0f}s: {', '.join(waiting)}; logs: {self.log_dir}"
                    )
                await asyncio.sleep(0.1)  # polling the registry until every service registered
        return None

    def _table(self, gateway: _Child, services: list[_Child], view):
        from rich.table import Table

        from capmesh.gateway.v1 import registry_service_pb2 as pb

        http = gateway.banner.split(" http ", 1)[1].strip() if " http " in gateway.banner else "-"
        states = {c.capability: pb.BackendState.Name(c.state).removeprefix("BACKEND_STATE_") for c in view}
        table = Table(title="capmesh is up", title_justify="left")
        for column in ("process", "address", "state", "log"):
            table.add_column(column, overflow="fold")
        table.add_row("gateway (gRPC)", gateway.address, "SERVING", str(gateway.log_path))
        table.add_row("gateway (HTTP)", http, "SERVING" if http != "-" else "-", "")
        for child in services:
            table.add_row(child.name, child.address, states.get(child.capability, "?"), str(child.log_path))
        return table

    async def _watch(self, stop, console) -> int:
        """Supervises until Ctrl-C / SIGTERM (0) or until a process crash-loops (1): a process that
        exits on its own is restarted after a backoff while every other one keeps serving."""
        import asyncio

        supervisor = _Supervisor(self, stop, console)
        keepers = [asyncio.ensure_future(supervisor.keep(child)) for child in self.children]
        try:
            await stop.wait()
        finally:
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
        if supervisor.crash_loop:
            console.print(supervisor.crash_loop, style="red", markup=False)
            return 1
        return 0

    def env_of(self, child: _Child) -> dict[str, str]:
        if child.name == "gateway":
            return {**os.environ, **self.mesh_env, **self.plan.gateway_env}
        return {**os.environ, **self.mesh_env, **self.plan.services[child.capability][0]}

    @staticmethod
    def pin_gateway_ports(gateway: _Child) -> None:
        """A restarted gateway must come back where the services and clients look for it: on the ports
        it bound first (free ones, when it was asked for port 0)."""
        http = gateway.banner.split(" http ", 1)[1].strip() if " http " in gateway.banner else "-"
        pinned = {"--port": gateway.address.rsplit(":", 1)[1]}
        if http != "-":
            pinned["--http-port"] = http.rstrip("/").rsplit(":", 1)[1]
        args: list[str] = []
        flags = iter(gateway.args)
        for arg in flags:
            if arg in pinned:
                next(flags, None)  # the flag's old value
            else:
                args.append(arg)
        gateway.args = [*args, *(part for flag, value in pinned.items() for part in (flag, value))]

    async def _stop_all(self, console) -> None:
        """Services first (they deregister from the gateway), then the gateway."""
        import asyncio

        services = [c for c in self.children if c.name != "gateway"]
        gateways = [c for c in self.children if c.name == "gateway"]
        if any(c.running() for c in self.children):
            console.print("stopping ...")
        await asyncio.gather(*(c.stop() for c in services))
        await asyncio.gather(*(c.stop() for c in gateways))


class _Supervisor:
    """Restarts the processes of `capmesh up` that exit on their own, one keeper task per process,
    after the backoff of `services/runtime/restarts.py`; a crash loop stops the mesh, saying which
    process and why. A restarted service registers itself again; a restarted gateway comes back on
    its first ports, where the services' heartbeats find it and register again."""

    def __init__(self, mesh: Mesh, stop: asyncio.Event, console) -> None:
        self._mesh = mesh
        self._stop = stop
        self._console = console
        self.crash_loop = ""  # set when the mesh stops because of a crash loop: which process, why

    async def keep(self, child: _Child) -> None:
        import asyncio

        from capmesh.services.runtime.restarts import CrashHistory

        crashes = CrashHistory()
        while True:
            code = await child.proc.wait()
            if self._stop.is_set():
                return
            delay = crashes.exited()
            if delay is None:
                self.crash_loop = (
                    f"{crashes.crash_loop(child.name, code)}; stopping the mesh; log: {child.log_path}\n"
                    + _tail(child.log_path)
                )
                self._stop.set()
                return
            self._console.print(
                f"[yellow]{child.name} exited with code {code}; restarting it in {delay:.1f}s "
                f"(the others keep serving); log: {child.log_path}[/]"
            )
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
                return  # Ctrl-C during the backoff
            except TimeoutError:
                pass
            try:
                await child.start(self._mesh.env_of(child), self._mesh.timeout_s)
            except MeshError as exc:
                if child.running():  # it did not print its address in time: end it, count it as a crash
                    child.proc.kill()
                self._console.print(f"{child.name} did not come back: {exc}", style="red", markup=False)
                continue
            self._console.print(f"[green]{child.name} is back on {child.address}[/]")
