"""Tiny randomly-initialised checkpoints, built by the project itself for offline use and tests.

No weights can be downloaded on our machines, so every model-backed engine has a `tiny.py` with a
builder that writes a small random checkpoint with `save_pretrained`; engines then load it through
their real `from_pretrained` code. A model setting of `tiny` means "this capability's tiny
checkpoint": it is built once into the cache folder and reused. Anything served from it has random
weights, and status and logs say so.

What a tiny checkpoint is made of is data, not code: a capability's `tiny.json` names each component's
class and its (tiny) config, after the sizes the libraries' own fast tests use. `build_component`
turns one entry into a seeded, randomly initialised model; `build_pipeline` assembles a diffusers
pipeline from them. The capability's `tiny.py` adds only what is special to it (its tokenizer, a
tweak to some weights).
"""

from __future__ import annotations

import fcntl
import importlib
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from capmesh.services.runtime.paths import capmesh_home

TINY = "tiny"  # the model setting that selects the project-built checkpoint
BUILD_VERSION = "1"  # bump to rebuild every cached checkpoint


def default_cache_dir() -> Path:
    """Where tiny checkpoints live: $CAPMESH_HOME/tiny, else ~/.cache/capmesh/tiny."""
    return capmesh_home() / "tiny"


def ensure_tiny(name: str, builder: Callable[[Path], None], cache_dir: Path | None = None) -> Path:
    """Returns the folder of the tiny checkpoint `name`, building it with `builder(folder)` if absent.

    Safe across processes: a file lock serialises builders, and a checkpoint counts only once its
    builder returned (it is built in a temporary folder and renamed into place).
    """
    root = cache_dir or default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}-v{BUILD_VERSION}"
    if (target / ".complete").exists():
        return target
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        staging = root / f".{name}.building"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        builder(staging)
        (staging / ".complete").write_text("random weights, built by capmesh for tests and offline demos\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def is_random_checkpoint(path: str | Path) -> bool:
    """True for a folder that capmesh built with random weights."""
    return (Path(path) / ".complete").exists() and "random weights" in (Path(path) / ".complete").read_text()


def read_recipe(folder: Path, name: str) -> dict[str, Any]:
    """The recipe of tiny checkpoint `name`, from the `tiny.json` in `folder` (the capability's own folder)."""
    return json.loads((Path(folder) / "tiny.json").read_text())[name]


def build_component(spec: Mapping[str, Any], **config_overrides: Any) -> Any:
    """One component from its recipe entry `{"class": "module.Class", "config": {...}}`, seeded with 0.

    transformers models take a config object (their `config_class`); diffusers models, schedulers and
    image processors take the config's fields as keyword arguments. `config_overrides` fills what is
    known only at build time, such as a vocabulary size taken from the tokenizer.
    """
    import torch

    module_name, _, class_name = spec["class"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    config = {**spec.get("config", {}), **config_overrides}
    torch.manual_seed(0)  # the same checkpoint every time it is built
    config_class = getattr(cls, "config_class", None)
    if config_class is not None and hasattr(config_class, "model_type"):  # a transformers model
        return cls(config_class(**config))
    return cls(**config)


def build_pipeline(
    recipe: Mapping[str, Any],
    dest: Path,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    **given: Any,
) -> None:
    """Builds the diffusers pipeline `recipe["pipeline"]` from its components and saves it to `dest`.

    `given` are components built elsewhere (a tokenizer); `overrides` maps a component's name to
    config fields filled at build time. The recipe's `arguments` go to the pipeline as they are.
    """
    overrides = overrides or {}
    components = {name: build_component(spec, **overrides.get(name, {})) for name, spec in recipe["components"].items()}
    module_name, _, class_name = recipe["pipeline"].rpartition(".")
    pipeline_class = getattr(importlib.import_module(module_name), class_name)
    pipeline = pipeline_class(**components, **given, **recipe.get("arguments", {}))
    pipeline.save_pretrained(dest)
