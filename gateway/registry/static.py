"""Static backends from a YAML or JSON file (settings.backends_file).

backends:                      # or a bare list
  - address: 10.0.0.5:7001
    capability: tts
    max_concurrency: 4         # optional: services, models, device, device_group, version,
    device_group: gpu0         #           labels, backend_id, max_queue
"""

from __future__ import annotations

from pathlib import Path

import yaml

from capmesh.gateway.server.registry.model import STATIC, BackendRecord, backend_id_for
from capmesh.services.runtime.errors import FieldViolation, InvalidArgument

_FIELDS = {
    "backend_id",
    "address",
    "capability",
    "services",
    "models",
    "loaded_models",
    "max_concurrency",
    "max_queue",
    "device",
    "device_group",
    "version",
    "labels",
}


def load_static_backends(path: str | Path) -> list[BackendRecord]:
    """Reads and validates the file; every problem is reported with the entry's position."""
    data = yaml.safe_load(Path(path).read_text())  # JSON is YAML too
    items = data.get("backends", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InvalidArgument.single("backends", f"{path}: expected a list of backends")
    violations: list[FieldViolation] = []
    records = []
    for index, item in enumerate(items):
        where = f"backends[{index}]"
        if not isinstance(item, dict):
            violations.append(FieldViolation(where, "must be a mapping"))
            continue
        for name in sorted(set(item) - _FIELDS):
            violations.append(FieldViolation(f"{where}.{name}", "is not a backend field"))
        for name in ("address", "capability"):
            if not item.get(name):
                violations.append(FieldViolation(f"{where}.{name}", "is required"))
        if violations:
            continue
        records.append(
            BackendRecord(
                backend_id=str(item.get("backend_id") or backend_id_for(item["capability"], item["address"])),
                address=str(item["address"]),
                capability=str(item["capability"]),
                services=tuple(item.get("services") or ()),
                models=tuple(item.get("models") or ()),
                loaded_models=tuple(item.get("loaded_models") or ()),
                max_concurrency=int(item.get("max_concurrency") or 0),
                max_queue=int(item.get("max_queue") or 0),
                device=str(item.get("device") or ""),
                device_group=str(item.get("device_group") or ""),
                version=str(item.get("version") or ""),
                labels={str(k): str(v) for k, v in (item.get("labels") or {}).items()},
                source=STATIC,
            )
        )
    if violations:
        listed = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(violations, message=f"{path}: {listed}")
    return records
