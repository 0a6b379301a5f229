"""Where capmesh keeps its data on a machine: $CAPMESH_HOME, else ~/.cache/capmesh.

Read here, once per call, because it is a property of the machine rather than of one service's
settings; tiny checkpoints and the gateway's default file store live under it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def capmesh_home(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    home = environ.get("CAPMESH_HOME")
    return Path(home) if home else Path.home() / ".cache" / "capmesh"
