"""A cheap look at a local checkpoint folder before the service says SERVING.

Loading is lazy by default, so a broken checkpoint would otherwise show only when the first call
loads it. What can be known without loading is checked at start, in well under a second even for
a multi-gigabyte model, because only file listings, JSON files and safetensors headers are read:
- every JSON file of the checkpoint (configs, model_index.json, shard indexes) parses;
- every model component (a folder with a config.json) has a weights file;
- every shard a `*.index.json` names exists;
- every safetensors file is as long as its header says (a truncated copy is the usual breakage).
What only loading can show (weights of the wrong shape, a missing tokenizer) is left to the load;
a load that fails marks the service NOT_SERVING (lifecycle.py, server.py).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# The safetensors format: an 8-byte little-endian header length, the JSON header, then the data.
_SAFETENSORS_LENGTH = struct.Struct("<Q")
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit


def checkpoint_problem(folder: Path) -> str:
    """What is wrong with the checkpoint files under `folder` ("" when nothing visible is)."""
    # Components of diffusers pipelines sit one level down (unet/, vae/, text_encoder/ ...).
    folders = [folder, *sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))]
    for current in folders:
        for path in sorted(current.glob("*.json")):
            problem = _json_problem(path)
            if problem:
                return problem
        if (current / "config.json").is_file() and not any(
            p.suffix in WEIGHT_SUFFIXES for p in current.iterdir() if p.is_file()
        ):
            return f"{current} has a config.json but no weights file ({', '.join(WEIGHT_SUFFIXES)})"
        for path in sorted(current.glob("*.safetensors")):
            problem = _safetensors_problem(path)
            if problem:
                return problem
    return ""


def _json_problem(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{path} is not readable JSON ({exc})"
    if path.name.endswith(".index.json") and isinstance(data, dict):
        shards = sorted(set((data.get("weight_map") or {}).values()))
        missing = [name for name in shards if not (path.parent / name).is_file()]
        if missing:
            return f"{path} names shards that are missing: {', '.join(missing[:3])}"
    return ""


def _safetensors_problem(path: Path) -> str:
    size = path.stat().st_size
    try:
        with path.open("rb") as file:
            head = file.read(_SAFETENSORS_LENGTH.size)
            if len(head) < _SAFETENSORS_LENGTH.size:
                return f"{path} is truncated ({size} bytes, not even a safetensors header)"
            (length,) = _SAFETENSORS_LENGTH.unpack(head)
            if length > min(_MAX_HEADER_BYTES, size - _SAFETENSORS_LENGTH.size):
                return f"{path} is truncated or not a safetensors file (header of {length} bytes in {size})"
            header = json.loads(file.read(length))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{path} has an unreadable safetensors header ({exc})"
    tensors = [entry for entry in header.values() if isinstance(entry, dict) and "data_offsets" in entry]
    end = max((int(entry["data_offsets"][1]) for entry in tensors), default=0)
    expected = _SAFETENSORS_LENGTH.size + length + end
    if size < expected:
        return f"{path} is truncated: {size} bytes, its header describes {expected}"
    return ""
