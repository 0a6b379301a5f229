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

    `contract` is the generated module of its proto (`capmesh.<name>.v1.<name>_service_pb2`);
    `server` is the module with `ENV_PREFIX`, `Settings` and `build_service`; `cli` the module whose
    `register(app)` adds the capability's own `capmesh` commands; `tiny_checkpoint` says whether
    `capmesh.services.<name>.tiny` builds a random-weight checkpoint for offline use.
    `model_slot_methods` names the methods that run a model (generation): only those count against
    a backend's `max_concurrency` in the gateway; listing and status calls pass straight through.
    """

    name: str
    contract: str
    server: str
    cli: str = ""
    tiny_checkpoint: bool = False
    model_slot_methods: tuple[str, ...] = ()

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


CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        "tts",
        contract="capmesh.tts.v1.tts_service_pb2",
        server="capmesh.services.tts.main",
        cli="capmesh.cli.tts",
        tiny_checkpoint=True,
        model_slot_methods=("StreamSynthesize", "StreamSynthesizeScene"),
    ),
    Capability(
        "llm",
        contract="capmesh.llm.v1.llm_service_pb2",
        server="capmesh.services.llm.main",
        cli="capmesh.cli.llm",
        tiny_checkpoint=True,
        model_slot_methods=("Chat", "StreamChat"),
    ),
    Capability(
        "videogen",
        contract="capmesh.videogen.v1.videogen_service_pb2",
        server="capmesh.services.videogen.main",
        cli="capmesh.cli.video",
        tiny_checkpoint=True,
        model_slot_methods=("StreamGenerateVideo",),
    ),
    Capability(
        "imagegen",
        contract="capmesh.imagegen.v1.imagegen_service_pb2",
        server="capmesh.services.imagegen.main",
        cli="capmesh.cli.image",
        tiny_checkpoint=True,
        model_slot_methods=("StreamGenerateImages",),
    ),
    Capability(
        "talkinghead",
        contract="capmesh.talkinghead.v1.talkinghead_service_pb2",
        server="capmesh.services.talkinghead.main",
        cli="capmesh.cli.talk",
        model_slot_methods=("StreamGenerateTalkingHead",),
        tiny_checkpoint=True,
    ),
    Capability(
        "docgen",
        contract="capmesh.docgen.v1.docgen_service_pb2",
        server="capmesh.services.docgen.main",
        cli="capmesh.cli.doc",
        model_slot_methods=("StreamGenerateOutline", "StreamGenerateDocument"),
    ),
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
