"""Loads a diffusers pipeline onto its placement and releases it so that the memory really returns.

The pipeline class comes from the checkpoint's `model_index.json` and must be one the capability
supports; anything else fails to load with a message naming the supported classes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import structlog
import torch

from capmesh.services.diffusion.checkpoints import Checkpoint, pipeline_class_name, read_model_index
from capmesh.services.diffusion.placement import Offload, Placement
from capmesh.services.runtime.lifecycle import LoadedModel, torch_module_bytes

if TYPE_CHECKING:
    # The defining module: mypy reads `diffusers.DiffusionPipeline` as the placeholder diffusers exports
    # when torch is missing.
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline

log = structlog.get_logger("capmesh.diffusion")


class UnsupportedPipeline(ValueError):
    """The checkpoint's pipeline class is not one this capability can run."""


def supported_class_name(checkpoint: Checkpoint, supported: Collection[str]) -> str:
    """The pipeline class named in `model_index.json`, checked against the supported ones."""
    class_name = pipeline_class_name(read_model_index(checkpoint.source))
    if class_name not in supported:
        raise UnsupportedPipeline(
            f"{checkpoint.name!r} is a {class_name or 'checkpoint without a pipeline class'}; "
            f"supported pipelines: {', '.join(sorted(supported))}"
        )
    return class_name


def load_pipeline(
    checkpoint: Checkpoint, placement: Placement, load: Callable[..., DiffusionPipeline] | None = None
) -> DiffusionPipeline:
    """`from_pretrained` with the placement's dtype, then device or CPU offload; progress bars off.

    `load` is the `from_pretrained` to call (a pipeline class's or an auto-pipeline's); by default the
    class named in `model_index.json` is used via `DiffusionPipeline.from_pretrained`.
    """
    if load is None:
        from diffusers import DiffusionPipeline

        load = DiffusionPipeline.from_pretrained
    pipeline = load(checkpoint.source, dtype=placement.torch_dtype_argument)
    pipeline.set_progress_bar_config(disable=True)
    if placement.offload is Offload.MODEL:
        pipeline.enable_model_cpu_offload(device=placement.device)
    elif placement.offload is Offload.SEQUENTIAL:
        pipeline.enable_sequential_cpu_offload(device=placement.device)
    else:
        pipeline.to(placement.device)
    return pipeline


def pipeline_modules(pipeline) -> list[torch.nn.Module]:
    return [component for component in pipeline.components.values() if isinstance(component, torch.nn.Module)]


def release_pipeline(pipeline) -> None:
    """Drops offload hooks (they hold module references) and moves weights off the accelerator.

    The model manager then drops its reference, collects garbage and empties the CUDA cache.
    """
    pipeline.remove_all_hooks()
    for module in pipeline_modules(pipeline):
        module.to("meta")


def loaded_pipeline_model(pipeline, checkpoint: Checkpoint, placement: Placement, class_name: str) -> LoadedModel:
    """The manager's record for a loaded pipeline: memory of every torch component, random-weight flag."""
    memory = torch_module_bytes(*pipeline_modules(pipeline))
    log.info(
        "pipeline.loaded",
        model=checkpoint.name,
        pipeline=class_name,
        device=placement.describe(),
        dtype=str(placement.dtype).removeprefix("torch."),
        memory_bytes=memory,
    )
    return LoadedModel(
        handle=pipeline,
        device=placement.describe(),
        memory_bytes=memory,
        random_weights=checkpoint.random_weights,
        release=lambda: release_pipeline(pipeline),
        details={
            "pipeline": class_name,
            "dtype": str(placement.dtype).removeprefix("torch."),
            "source": checkpoint.source,
        },
    )
