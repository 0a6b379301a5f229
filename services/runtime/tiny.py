"""Tiny randomly-initialised checkpoints, built by the project itself for offline use and tests.

No weights can be downloaded on our machines, so every model-backed engine has a `tiny.py` with a
builder that writes a small random checkpoint with `save_pretrained`; engines then load it through
their real `from_pretrained` code. A model setting of `tiny` means "this capability's tiny
checkpoint": it is built once into the cache folder and reused. Anything served from it has random
weights, and status and logs say so.
"""

from __future__ import annotations

import fcntl
import shutil
from collections.abc import Callable
from pathlib import Path

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
