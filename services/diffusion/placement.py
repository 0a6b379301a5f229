"""Where and how a pipeline runs: device, dtype (with an optional separate VAE dtype) and CPU offload.

Settings carry plain names (`auto`, `cuda:1`, `bfloat16`, `model`) so they can come from the environment;
`resolve_placement` turns them into torch objects when a model loads. `auto` picks CUDA when present,
and bfloat16 on CUDA, float32 on CPU (half precision on CPU is slow and lossy). Offload `model` keeps
one component at a time on the GPU (for GPUs smaller than the model); `sequential` streams
sub-modules (slowest, smallest).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import torch

from capmesh.services.runtime.settings import check

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class Offload(str, enum.Enum):
    NONE = "none"
    MODEL = "model"
    SEQUENTIAL = "sequential"


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    offload: Offload

    @property
    def torch_dtype_argument(self) -> torch.dtype | dict[str, torch.dtype]:
        """What `from_pretrained(dtype=...)` gets: one dtype, or a per-component map."""
        if self.vae_dtype == self.dtype:
            return self.dtype
        return {"default": self.dtype, "vae": self.vae_dtype}

    def describe(self) -> str:
        where = str(self.device)
        if self.offload is not Offload.NONE:
            where += f" ({self.offload.value} cpu offload)"
        return where


def check_placement_settings(device: str, dtype: str, vae_dtype: str, cpu_offload: Any) -> None:
    """Validates the placement fields of a settings object; raises SettingsError naming the bad one."""
    check(
        device == "auto" or device == "cpu" or device.startswith("cuda"),
        "device",
        device,
        "must be auto, cpu, cuda or cuda:N",
    )
    check(dtype == "auto" or dtype in DTYPES, "dtype", dtype, f"must be auto or one of {', '.join(DTYPES)}")
    check(
        vae_dtype == "" or vae_dtype in DTYPES,
        "vae_dtype",
        vae_dtype,
        f"must be empty (same as dtype) or one of {', '.join(DTYPES)}",
    )
    check(isinstance(cpu_offload, Offload), "cpu_offload", cpu_offload, "must be none, model or sequential")


def resolve_placement(device: str, dtype: str, vae_dtype: str, cpu_offload: Offload) -> Placement:
    """Turns setting names into torch objects; fails with a clear reason when CUDA is asked for but absent."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was configured but CUDA is not available on this machine")
    if cpu_offload is not Offload.NONE and resolved.type != "cuda":
        raise RuntimeError(f"cpu_offload={cpu_offload.value} needs a CUDA device, but the device is {device!r}")
    main = DTYPES[dtype] if dtype != "auto" else (torch.bfloat16 if resolved.type == "cuda" else torch.float32)
    return Placement(resolved, main, DTYPES[vae_dtype] if vae_dtype else main, cpu_offload)
