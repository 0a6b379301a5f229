"""The capabilities capmesh serves, by name: where each one's service module lives.

Each module named here defines `ENV_PREFIX` (its settings read `CAPMESH_<ENV_PREFIX>_*`),
`Settings` (its frozen settings class) and `build_service(settings) -> CapabilityService`.
Modules with a `tiny` submodule build a tiny random checkpoint for offline use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

CAPABILITIES: dict[str, str] = {
    "tts": "capmesh.services.tts.main",
    "llm": "capmesh.services.llm.main",
    "videogen": "capmesh.services.videogen.main",
    "imagegen": "capmesh.services.imagegen.main",
    "talkinghead": "capmesh.services.talkinghead.main",
}

# Capabilities whose engines load checkpoints; each has `capmesh.services.<name>.tiny` with
# `TINY_NAME`, `build_tiny(dest)` and `tiny_path()`.
TINY_CHECKPOINTS: tuple[str, ...] = ("llm", "tts", "videogen", "imagegen")


def service_module(capability: str) -> ModuleType:
    if capability not in CAPABILITIES:
        raise KeyError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
    return importlib.import_module(CAPABILITIES[capability])


def tiny_module(capability: str) -> ModuleType:
    return importlib.import_module(f"capmesh.services.{capability}.tiny")
