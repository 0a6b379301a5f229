"""Where a diffusers checkpoint is and what it is, read from its config files without loading weights.

A served model name is either `tiny` (the capability's project-built checkpoint), a local folder or a
hub id. `model_index.json` names the pipeline class; the component configs give the geometry rules
(frame and size multiples) that requests are validated against before any weight is loaded.
An optional `capmesh_generation_defaults.json` next to `model_index.json` gives the checkpoint's
defaults for fields a request leaves at 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from capmesh.services.runtime.tiny import TINY, is_random_checkpoint

DEFAULTS_FILE = "capmesh_generation_defaults.json"


@dataclass(frozen=True)
class Checkpoint:
    """A resolved model: what `from_pretrained` gets, and whether it is a random-weight build."""

    name: str
    source: str
    random_weights: bool


@dataclass(frozen=True)
class GenerationDefaults:
    """Defaults for request fields left at 0; 0 here means "the pipeline family's default"."""

    width: int = 0
    height: int = 0
    num_frames: int = 0
    steps: int = 0
    fps: int = 0
    guidance_scale: float = 0.0

    def save(self, folder: Path) -> None:
        (Path(folder) / DEFAULTS_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, source: str) -> GenerationDefaults:
        path = Path(source) / DEFAULTS_FILE
        if not path.is_file():
            return cls()
        known = {key: value for key, value in json.loads(path.read_text()).items() if key in cls.__dataclass_fields__}
        return cls(**known)

    def overridden_by(self, other: GenerationDefaults) -> GenerationDefaults:
        """The fields `other` sets (non-zero) win over this one's."""
        mine, theirs = asdict(self), asdict(other)
        return GenerationDefaults(**{key: theirs[key] or mine[key] for key in mine})


def resolve_checkpoint(name: str, *, tiny_path: Callable[[], Path]) -> Checkpoint:
    """Maps a served model name to what `from_pretrained` loads; `tiny_path()` builds the tiny one on demand."""
    if name == TINY:
        return Checkpoint(name, str(tiny_path()), random_weights=True)
    local = Path(name).expanduser()
    if local.is_dir():
        return Checkpoint(name, str(local), random_weights=is_random_checkpoint(local))
    return Checkpoint(name, name, random_weights=False)


def read_model_index(source: str) -> dict[str, Any]:
    """`model_index.json` of a local folder or hub id (only that file is fetched for a hub id)."""
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.load_config(source)


def read_component_config(source: str, subfolder: str) -> dict[str, Any]:
    """The `config.json` of one pipeline component (`vae`, `transformer`, `unet` ...)."""
    from diffusers.configuration_utils import ConfigMixin

    class _AnyComponent(ConfigMixin):
        config_name = "config.json"  # type: ignore[assignment]  # diffusers declares it `= None`, unannotated

    # diffusers annotates a tuple, but without return_unused_kwargs / return_commit_hash it returns the dict alone.
    return _AnyComponent.load_config(source, subfolder=subfolder)  # type: ignore[return-value]


def pipeline_class_name(model_index: dict[str, Any]) -> str:
    return str(model_index.get("_class_name", ""))


def has_component(model_index: dict[str, Any], name: str) -> bool:
    """True when `model_index.json` lists the component with a class (optional ones are [null, null])."""
    entry = model_index.get(name)
    return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] is not None
