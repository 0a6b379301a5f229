"""The one catalogue of capabilities: a row per capability, read by everything that needs the list.

The runtime (`capmesh serve`), `capmesh up`, `capmesh models make-tiny`, the gateway's routing,
its jobs and HTTP bindings, and the CLI's jobs commands all learn which capabilities exist, where
their contract lives and how their server is built from `CAPABILITIES` below, and from nowhere else.

Adding a capability means: a folder `services/<name>/` whose `main.py` defines `ENV_PREFIX`,
`Settings` and `build_service(settings) -> CapabilityService`, a proto under
`protos/capmesh/<name>/v1/`, and one row here (plus, if it has its own CLI commands, a module in
`clients/python/capmesh/cli/` with `register(app)`, named in the row).

This module imports no engine code (torch and friends load only when a server is built), so the
gateway and the CLI can read it cheaply.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

    from capmesh.services.runtime.server import CapabilityService
    from capmesh.services.runtime.settings import ServerSettings


@dataclass(frozen=True)
class Capability:
    """One row: a capability's name, its contract and its server.

    Where its code lives follows from the name: `contract` is the generated module of its proto
    (`capmesh.<name>.v1.<name>_service_pb2`), `server` the module with `ENV_PREFIX`, `Settings` and
    `build_service` (`capmesh.services.<name>.main`). `cli` is the module whose `register(app)`
    adds the capability's own `capmesh` commands; `tiny_checkpoint` says whether
    `capmesh.services.<name>.tiny` builds a random-weight checkpoint for offline use.
    `model_slot_methods` names the methods that run a model (generation): only those count against
    a backend's `max_concurrency` in the gateway; listing and status calls pass straight through.
    """

    name: str
    cli: str = ""
    tiny_checkpoint: bool = False
    model_slot_methods: tuple[str, ...] = ()

    @property
    def contract(self) -> str:
        return f"capmesh.{self.name}.v1.{self.name}_service_pb2"

    @property
    def server(self) -> str:
        return f"capmesh.services.{self.name}.main"

    def contract_module(self) -> ModuleType:
        """The generated module; importing it puts the contract's descriptors in the default pool."""
        return importlib.import_module(self.contract)

    def services(self) -> tuple[ServiceDescriptor, ...]:
        return tuple(self.contract_module().DESCRIPTOR.services_by_name.values())

    def server_module(self) -> ModuleType:
        return importlib.import_module(self.server)

    @property
    def settings_class(self) -> type[ServerSettings]:
        return self.server_module().Settings

    @property
    def env_prefix(self) -> str:
        return self.server_module().ENV_PREFIX

    @property
    def default_engine(self) -> str:
        """The engine the service runs when none is set (the settings class's default), or ""."""
        for field in dataclasses.fields(self.settings_class):
            if field.name == "engine":
                return str(field.default)
        return ""

    def build_service(self, settings: Any) -> CapabilityService:
        return self.server_module().build_service(settings)

    def tiny_module(self) -> ModuleType:
        """`capmesh.services.<name>.tiny`: `TINY_NAME`, `build_tiny(dest)` and `tiny_path()`."""
        if not self.tiny_checkpoint:
            raise KeyError(f"capability {self.name!r} has no tiny checkpoint")
        return importlib.import_module(f"capmesh.services.{self.name}.tiny")


# Columns: name, cli, tiny_checkpoint, model_slot_methods (see `Capability`).
CAPABILITIES: tuple[Capability, ...] = (
    Capability("tts", "capmesh.cli.tts", True, ("StreamSynthesize", "StreamSynthesizeScene")),
    Capability("llm", "capmesh.cli.llm", True, ("Chat", "StreamChat")),
    Capability("videogen", "capmesh.cli.video", True, ("StreamGenerateVideo",)),
    Capability("imagegen", "capmesh.cli.image", True, ("StreamGenerateImages",)),
    Capability("talkinghead", "capmesh.cli.talk", True, ("StreamGenerateTalkingHead",)),
    Capability("docgen", "capmesh.cli.doc", False, ("StreamGenerateOutline", "StreamGenerateDocument")),
)

NAMES: tuple[str, ...] = tuple(c.name for c in CAPABILITIES)
_BY_NAME: dict[str, Capability] = {c.name: c for c in CAPABILITIES}


def capability(name: str) -> Capability:
    """The row named `name`; KeyError naming the known capabilities otherwise."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown capability {name!r}; known: {', '.join(NAMES)}") from None


@cache
def load_contracts() -> tuple[ModuleType, ...]:
    """Imports every capability's generated module, so their messages and services can be found
    by name in the default descriptor pool (jobs, the HTTP bindings, the CLI and reflection do)."""
    return tuple(c.contract_module() for c in CAPABILITIES)


def find_method(path: str) -> MethodDescriptor | None:
    """ "/capmesh.tts.v1.TtsService/StreamSynthesize" -> its descriptor, if a capability defines it."""
    service_name, _, method_name = path.lstrip("/").rpartition("/")
    for row in CAPABILITIES:
        for service in row.services():
            if service.full_name == service_name:
                return service.methods_by_name.get(method_name)
    return None
