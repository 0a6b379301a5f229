"""Reading and checking a mesh file, and the JSON Schema it is checked against.

The settings classes stay the one source of truth: the schema is derived from their dataclass
fields (names, types, enums, defaults, and the trailing comment of each field as its description),
and after the schema, each capability's settings object is built from the file through the same
`load_settings` path `capmesh serve` uses, so every rule its `__post_init__` enforces applies
here too, before anything starts. Every error names the file, the line and the field: the YAML
is composed to nodes first, which keep their line numbers.

A few keys exist only in the mesh file: `replicas`, `gpus`, `cpu` and `memory` per component;
`name`, `offline` and `kubernetes` at the top. Settings that name a secret (API keys, the
backend's gateway credential) are never written in the file: they are given as
`{env: VARIABLE}` (optionally `secret: NAME` for Kubernetes), a reference to where the value lives.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import re
import sys
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from capmesh.services.catalog import CAPABILITIES, NAMES, capability
from capmesh.services.runtime.settings import ProcessSettings, SettingsError, env_name, load_settings

GATEWAY = "gateway"
DEFAULT_NAME = "capmesh"
DEFAULT_IMAGE = "capmesh:0.1.0"

# Where each process binds and whom it registers with is decided by whoever runs the mesh
# (`capmesh up` on one machine, the manifests on Kubernetes), so the file may not set them.
RUNNER_SETTINGS = {
    GATEWAY: frozenset({"host"}),
    "capability": frozenset({"host", "port", "gateway", "advertise_address"}),
}
# Keys of a component that are not settings: how many processes, and what each may use.
DEPLOY_KEYS: dict[str, dict[str, Any]] = {
    "replicas": {"type": "integer", "minimum": 1, "default": 1, "description": "processes (pods) of this component"},
    "gpus": {
        "type": "integer",
        "minimum": 0,
        "description": "GPUs each process needs (Kubernetes nvidia.com/gpu); default 1 when device is cuda*, else 0",
    },
    "cpu": {"type": "string", "description": "CPU each process requests on Kubernetes, e.g. '2' or '500m'"},
    "memory": {"type": "string", "description": "memory each process requests on Kubernetes, e.g. '24Gi'"},
}
# The hub switched off in every process of an offline mesh: nothing is downloaded.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
DNS_LABEL = "^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$"
ENV_VARIABLE = "^[A-Za-z_][A-Za-z0-9_]*$"


class MeshFileError(ValueError):
    """A mesh file that cannot be used; one line per problem, each `FILE:LINE: field: reason`."""


@dataclass(frozen=True)
class SecretRef:
    """A secret setting's value: the environment variable holding it (and, on Kubernetes, the Secret)."""

    env: str
    secret: str = ""  # the Kubernetes Secret holding key `env`; empty: `<mesh name>-secrets`


@dataclass(frozen=True)
class Component:
    """The gateway or one capability, as the mesh file describes it."""

    name: str  # "gateway" or the capability's name
    env_prefix: str
    settings: ProcessSettings  # built and checked from the file (secrets left at their defaults)
    given: Mapping[str, Any]  # the settings the file sets (not secrets), as parsed from YAML
    secrets: Mapping[str, SecretRef]
    replicas: int = 1
    gpus: int = 0
    cpu: str = ""
    memory: str = ""

    def env(self) -> dict[str, str]:
        """The settings the file gives, as the `CAPMESH_<PREFIX>_<FIELD>` variables the process reads."""
        return {env_name(self.env_prefix, key): env_value(value) for key, value in self.given.items()}

    def secret_env(self) -> dict[str, SecretRef]:
        return {env_name(self.env_prefix, key): ref for key, ref in self.secrets.items()}


@dataclass(frozen=True)
class MeshSpec:
    """A checked mesh file."""

    path: Path
    name: str
    offline: bool  # every process runs with the hub offline (HF_HUB_OFFLINE=1)
    gateway: Component
    capabilities: tuple[Component, ...]
    image: str = DEFAULT_IMAGE
    redis: str = "url"  # url: the gateway's redis_url (if any); statefulset: a Redis in the cluster
    secret_name: str = ""  # the Secret that {env: NAME} references read from, unless they name one

    def component(self, name: str) -> Component:
        for item in self.capabilities:
            if item.name == name:
                return item
        raise KeyError(name)


def env_value(value: Any) -> str:
    """A YAML value as the string `parse_value` reads back: lists comma-joined, booleans lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(env_value(item) for item in value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def is_secret(field_name: str) -> bool:
    """API keys, the backend's gateway credential and the mesh secret: values that must not sit in
    a versioned file."""
    return field_name.endswith(("api_key", "api_keys", "secret"))


# -- the schema -------------------------------------------------------------------------------------


def settings_schema(cls: type[ProcessSettings], runner_set: frozenset[str]) -> dict[str, Any]:
    """The JSON Schema of one component: its settings fields (minus those the runner sets) and the deploy keys."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    # The engine names, where the settings declare them (a class attribute or the module's ENGINES);
    # either way `__post_init__` checks the engine when the settings object is built.
    engines = getattr(cls, "engines", None) or getattr(sys.modules[cls.__module__], "ENGINES", None)
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in runner_set:
            continue
        if is_secret(f.name):
            prop: dict[str, Any] = {"$ref": "#/$defs/secretRef"}
        else:
            prop = type_schema(hints[f.name])
            if f.name == "engine" and isinstance(engines, tuple):
                prop["enum"] = list(engines)
            if f.default is not dataclasses.MISSING:
                prop["default"] = json_default(f.default)
        if f.name in comments:
            prop["description"] = comments[f.name]
        properties[f.name] = prop
    properties.update(DEPLOY_KEYS)
    return {"type": ["object", "null"], "additionalProperties": False, "properties": properties}


def type_schema(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return {"type": "array", "items": type_schema(args[0] if args else str)}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"type": "string", "enum": [str(m.value) for m in annotation]}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    return {"type": simple.get(annotation, "string")}


def json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [json_default(item) for item in value]
    return value


def field_comments(cls: type) -> dict[str, str]:
    """`name: type = default  # comment` -> {name: comment}, over the class and its dataclass bases."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        for line in inspect.getsource(klass).splitlines():
            match = re.match(r"^    (\w+): [^#]*?#\s*(.+)$", line)
            if match:
                comments[match.group(1)] = match.group(2).strip()
    return comments


def gateway_settings_class() -> tuple[type[ProcessSettings], str]:
    from capmesh.gateway.server.config import ENV_PREFIX, GatewaySettings

    return GatewaySettings, ENV_PREFIX


def mesh_schema() -> dict[str, Any]:
    """The JSON Schema of a mesh file, derived from the gateway's and every capability's settings class."""
    gateway_cls, _ = gateway_settings_class()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "capmesh mesh file",
        "description": "The gateway and every capability of one mesh. Generated from the settings classes: "
        "`capmesh deploy schema`.",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {
                "type": "string",
                "pattern": DNS_LABEL,
                "default": DEFAULT_NAME,
                "description": "names the mesh; prefixes every Kubernetes object",
            },
            "offline": {
                "type": "boolean",
                "default": False,
                "description": "run every process with the model hub offline (HF_HUB_OFFLINE=1)",
            },
            "kubernetes": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "image": {"type": "string", "default": DEFAULT_IMAGE, "description": "the capmesh image"},
                    "redis": {
                        "enum": ["url", "statefulset"],
                        "default": "url",
                        "description": "url: use gateway.redis_url as given; statefulset: run a small Redis",
                    },
                    "secret": {
                        "type": "string",
                        "pattern": DNS_LABEL,
                        "description": "the Secret holding every {env: NAME} value under key NAME; "
                        "default <name>-secrets",
                    },
                },
            },
            GATEWAY: settings_schema(gateway_cls, RUNNER_SETTINGS[GATEWAY]),
            "capabilities": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    row.name: settings_schema(row.settings_class, RUNNER_SETTINGS["capability"]) for row in CAPABILITIES
                },
            },
        },
        "$defs": {
            "secretRef": {
                "type": "object",
                "additionalProperties": False,
                "required": ["env"],
                "description": "a secret: the environment variable that holds it (capmesh up) and, on Kubernetes, "
                "the key of that name in a Secret",
                "properties": {
                    "env": {"type": "string", "pattern": ENV_VARIABLE},
                    "secret": {"type": "string", "pattern": DNS_LABEL},
                },
            }
        },
    }


def schema_text() -> str:
    return json.dumps(mesh_schema(), indent=2) + "\n"


# -- reading a file ---------------------------------------------------------------------------------


def _lines(node: yaml.Node, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], int]]:
    """(path, line) for everything under a YAML node; a mapping entry's line is where its key is."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            yield key_path, key_node.start_mark.line + 1
            yield from _lines(value_node, key_path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield (*path, index), item.start_mark.line + 1
            yield from _lines(item, (*path, index))


class _Problems:
    def __init__(self, path: Path, lines: dict[tuple[Any, ...], int]) -> None:
        self.path = path
        self.lines = lines
        self.items: list[tuple[int, str]] = []

    def add(self, where: tuple[Any, ...], message: str) -> None:
        line = next((self.lines[where[:n]] for n in range(len(where), -1, -1) if where[:n] in self.lines), 1)
        dotted = ".".join(str(part) for part in where) or "(top)"
        self.items.append((line, f"{self.path}:{line}: {dotted}: {message}"))

    def raise_any(self) -> None:
        if self.items:
            raise MeshFileError("\n".join(text for _, text in sorted(self.items)))


def load_mesh(path: str | Path) -> MeshSpec:
    """Reads and checks a mesh file; MeshFileError lists every problem with its file, line and field."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MeshFileError(f"{path}: {exc.strerror or exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise MeshFileError(f"{path}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    problems = _Problems(path, dict(_lines(root)) if root is not None else {})
    if not isinstance(data, dict):
        problems.add((), "a mesh file is a mapping with gateway and capabilities")
        problems.raise_any()
    _check_schema(data, problems)
    problems.raise_any()
    spec = _build(path, data, problems)
    problems.raise_any()
    assert spec is not None
    return spec


def _check_schema(data: dict[str, Any], problems: _Problems) -> None:
    import jsonschema

    schema = mesh_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for error in validator.iter_errors(data):
        where = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - known, key=str):
                problems.add((*where, key), _unknown_key_message(where, key))
        else:
            problems.add(where, error.message)


def _unknown_key_message(where: tuple[Any, ...], key: str) -> str:
    if where == ("capabilities",):
        return f"unknown capability {key!r}; known: {', '.join(NAMES)}"
    if where in ((GATEWAY,), *(("capabilities", name) for name in NAMES)):
        role = GATEWAY if where == (GATEWAY,) else "capability"
        if key in RUNNER_SETTINGS[role]:
            return f"{key!r} is set by whoever runs the mesh (capmesh up, the Kubernetes manifests), not in the file"
        return f"unknown setting {key!r} for {where[-1]} (the settings are listed by `capmesh deploy schema`)"
    return f"unknown key {key!r}"


def _build(path: Path, data: dict[str, Any], problems: _Problems) -> MeshSpec | None:
    name = data.get("name", DEFAULT_NAME)
    gateway_cls, gateway_prefix = gateway_settings_class()
    gateway = _component(GATEWAY, gateway_cls, gateway_prefix, (GATEWAY,), data.get(GATEWAY) or {}, problems)
    caps = []
    for cap_name, body in (data.get("capabilities") or {}).items():
        row = capability(cap_name)
        caps.append(
            _component(cap_name, row.settings_class, row.env_prefix, ("capabilities", cap_name), body or {}, problems)
        )
    kube = data.get("kubernetes") or {}
    redis = kube.get("redis", "url")
    shared_registry = redis == "statefulset" or bool(data.get(GATEWAY, {}) and data[GATEWAY].get("redis_url"))
    if gateway is not None and gateway.replicas > 1 and not shared_registry:
        problems.add(
            (GATEWAY, "replicas"),
            "more than one gateway needs a shared registry: set redis_url (or kubernetes.redis: statefulset)",
        )
    if gateway is None or any(c is None for c in caps):
        return None
    return MeshSpec(
        path=path,
        name=name,
        offline=bool(data.get("offline", False)),
        gateway=gateway,
        capabilities=tuple(c for c in caps if c is not None),
        image=kube.get("image", DEFAULT_IMAGE),
        redis=redis,
        secret_name=kube.get("secret", f"{name}-secrets"),
    )


def _component(
    name: str,
    cls: type[ProcessSettings],
    prefix: str,
    where: tuple[str, ...],
    body: dict[str, Any],
    problems: _Problems,
) -> Component | None:
    given = {k: v for k, v in body.items() if k not in DEPLOY_KEYS and not is_secret(k)}
    secrets = {k: SecretRef(v["env"], v.get("secret", "")) for k, v in body.items() if is_secret(k)}
    try:
        # The same parsing and checks `capmesh serve` applies to its environment, with none of
        # this machine's environment mixed in.
        settings = load_settings(cls, prefix, {k: env_value(v) for k, v in given.items()}, environ={})
    except SettingsError as exc:
        field_name = _setting_named(str(exc), given)
        problems.add((*where, field_name) if field_name else where, str(exc))
        return None
    device = str(given.get("device", ""))
    return Component(
        name=name,
        env_prefix=prefix,
        settings=settings,
        given=given,
        secrets=secrets,
        replicas=body.get("replicas", 1),
        gpus=body.get("gpus", 1 if device.startswith("cuda") else 0),
        cpu=body.get("cpu", ""),
        memory=body.get("memory", ""),
    )


def _setting_named(message: str, given: Mapping[str, Any]) -> str:
    """The field a SettingsError is about: `setting NAME=...` (a rule) or `--NAME=...` (a parse error)."""
    match = re.match(r"setting (\w+)=", message) or re.match(r"--([\w-]+)=", message)
    if match:
        return match.group(1).replace("-", "_")
    return next((key for key in given if key in message), "")
