"""One frozen settings object per service, read once from `CAPMESH_<SERVICE>_*` and CLI flags.

`ProcessSettings` holds what every gRPC process of the mesh has (its address, message and file size
limits, keepalive, shutdown grace, logging). A capability declares its settings as a frozen
dataclass deriving from `ServerSettings` (adding concurrency, models and gateway registration);
the gateway's own class derives from `ProcessSettings` directly. Each field
is read from the environment variable `CAPMESH_<PREFIX>_<FIELD>` (upper case), and CLI flags
override it. Values are parsed by the field's type and checked at start: a bad value stops the
service with a `SettingsError` that names the variable and the value. Engines receive the object;
nothing outside this module reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from capmesh.services.runtime.lifecycle import Residency

S = TypeVar("S", bound="ProcessSettings")

# A setting the gateway and every service share, read from one variable as well as their own.
MESH_SECRET_ENV = "CAPMESH_MESH_SECRET"

MiB = 1024 * 1024
GiB = 1024 * MiB


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the setting and the value."""


@dataclass(frozen=True)
class ProcessSettings:
    """Settings every gRPC process of the mesh has: capability servers and the gateway alike."""

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port; the bound port is logged and printed
    grace_period_s: float = 10.0  # SIGTERM: in-flight calls get this long to finish
    max_message_bytes: int = 5 * MiB  # payloads stay under 4 MiB; headroom for framing
    max_file_bytes: int = GiB  # the largest file the gateway stores and a service fetches from it
    keepalive_time_s: float = 30.0
    keepalive_timeout_s: float = 10.0
    log_level: str = "info"
    log_json: bool = True

    def __post_init__(self) -> None:
        check(0 <= self.port <= 65535, "port", self.port, "must be between 0 and 65535")
        check(self.grace_period_s >= 0, "grace_period_s", self.grace_period_s, "must be 0 or more")
        check(
            self.max_message_bytes >= 4 * MiB,
            "max_message_bytes",
            self.max_message_bytes,
            "must be at least 4 MiB (4194304), the largest chunk capmesh sends",
        )
        check(self.max_file_bytes >= 1, "max_file_bytes", self.max_file_bytes, "must be at least 1")
        check(
            self.log_level.lower() in {"debug", "info", "warning", "error"},
            "log_level",
            self.log_level,
            "must be one of debug, info, warning, error",
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerSettings(ProcessSettings):
    """Settings every capability server has; each capability's settings derive from this."""

    gateway: str = ""  # host:port of a gateway to register with; empty: no registration
    gateway_api_key: str = ""  # sent to the gateway when it requires API keys
    gateway_tls_cert_file: str = ""  # the gateway's certificate (or its CA) when its gRPC port uses TLS
    # The mesh's service credential: when set, every RPC but grpc.health must carry it (the gateway
    # sends it), and registration with the gateway presents it. Also read from CAPMESH_MESH_SECRET.
    mesh_secret: str = field(default="", metadata={"env": MESH_SECRET_ENV})  # shared by the gateway and every service
    tls_cert_file: str = ""  # this service's certificate (capmesh certs init): its gRPC port uses TLS
    tls_key_file: str = ""  # the certificate's private key
    tls_client_ca_file: str = ""  # the mesh CA: callers must present a certificate it signed (mTLS)
    advertise_address: str = ""  # the address the gateway should dial; default host:port
    max_concurrency: int = 4  # calls running at once; more wait in the queue
    max_queue: int = 32  # calls waiting for a slot; beyond it RESOURCE_EXHAUSTED
    residency: Residency = Residency.RESIDENT
    idle_unload_s: float = 300.0
    eager_load: bool = False  # load the models at start instead of on first use
    device_group: str = ""  # backends sharing one GPU declare the same group
    # Prometheus /metrics over HTTP (services/runtime/metrics.py): -1 off, 0 a free port (logged), else that port
    metrics_port: int = -1

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_concurrency >= 1, "max_concurrency", self.max_concurrency, "must be at least 1")
        check(self.max_queue >= 0, "max_queue", self.max_queue, "must be 0 or more")
        check(self.idle_unload_s > 0, "idle_unload_s", self.idle_unload_s, "must be greater than 0")
        check(-1 <= self.metrics_port <= 65535, "metrics_port", self.metrics_port, "must be -1 (off) or 0 to 65535")
        check(
            bool(self.tls_cert_file) == bool(self.tls_key_file),
            "tls_cert_file",
            self.tls_cert_file,
            "and tls_key_file must be set together",
        )
        check(
            not self.tls_client_ca_file or bool(self.tls_cert_file),
            "tls_client_ca_file",
            self.tls_client_ca_file,
            "needs tls_cert_file and tls_key_file (mTLS runs over TLS)",
        )


def check(ok: bool, name: str, value: Any, rule: str) -> None:
    """Raises SettingsError naming the setting and its bad value unless `ok`."""
    if not ok:
        raise SettingsError(f"setting {name}={value!r} {rule}")


def env_name(prefix: str, field_name: str) -> str:
    return f"CAPMESH_{prefix.upper()}_{field_name.upper()}"


def load_settings(
    cls: type[S],
    prefix: str,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> S:
    """Builds `cls` from the environment (`CAPMESH_<PREFIX>_<FIELD>`) and `overrides` (CLI flags).

    Overrides whose value is None are ignored, so CLI options can default to None.
    """
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        name = env_name(prefix, f.name)
        if name not in environ:
            name = f.metadata.get("env", name)  # a mesh-wide variable, e.g. CAPMESH_MESH_SECRET
        if name in environ:
            values[f.name] = parse_value(hints[f.name], environ[name], name)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in hints:
            raise SettingsError(f"unknown setting {key!r} for {cls.__name__}")
        values[key] = parse_value(hints[key], value, f"--{key.replace('_', '-')}") if isinstance(value, str) else value
    try:
        return cls(**values)
    except SettingsError:
        raise
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{cls.__name__}: {exc}") from exc


def parse_value(annotation: Any, raw: str, source: str) -> Any:
    """Parses one raw string by the field's annotation; errors name the variable and the value."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if raw == "" and len(inner) < len(args):
            return None
        return parse_value(inner[0], raw, source)
    if origin in (tuple, list):
        item_type = args[0] if args else str
        items = [parse_value(item_type, part.strip(), source) for part in raw.split(",") if part.strip()]
        return tuple(items) if origin is tuple else items
    try:
        if annotation is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError("expected true or false")
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            choices = {str(m.value).lower(): m for m in annotation}
            if raw.lower() not in choices:
                raise ValueError(f"expected one of {', '.join(choices)}")
            return choices[raw.lower()]
        if annotation in (int, float, str):
            return annotation(raw)
    except ValueError as exc:
        raise SettingsError(f"{source}={raw!r} is not valid: {exc}") from exc
    return raw
