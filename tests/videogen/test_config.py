"""VideogenSettings from CAPMESH_VIDEOGEN_* variables, checked at start."""

from __future__ import annotations

import pytest

from capmesh.services.diffusion.placement import Offload, resolve_placement
from capmesh.services.runtime.settings import SettingsError, load_settings
from capmesh.services.videogen.config import ENV_PREFIX, VideogenSettings


def test_settings_come_from_the_environment():
    settings = load_settings(
        VideogenSettings,
        ENV_PREFIX,
        environ={
            "CAPMESH_VIDEOGEN_DEVICE": "cpu",
            "CAPMESH_VIDEOGEN_DTYPE": "float32",
            "CAPMESH_VIDEOGEN_CPU_OFFLOAD": "none",
            "CAPMESH_VIDEOGEN_MAX_FRAMES": "33",
            "CAPMESH_VIDEOGEN_EXTRA_MODELS": "a,b",
            "CAPMESH_VIDEOGEN_MODEL": "a",
        },
    )
    assert (settings.device, settings.max_frames, settings.cpu_offload) == ("cpu", 33, Offload.NONE)
    assert settings.served_models == ["a", "b"]
    assert settings.max_concurrency == 1


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("DEVICE", "tpu", "device='tpu'"),
        ("DTYPE", "float8", "dtype='float8'"),
        ("CPU_OFFLOAD", "always", "CAPMESH_VIDEOGEN_CPU_OFFLOAD='always'"),
        ("CHUNK_BYTES", str(4 * 1024 * 1024), "below 4 MiB"),
        ("MAX_FRAMES", "0", "max_frames=0"),
        ("ENGINE", "runway", "engine='runway'"),
    ],
)
def test_bad_values_are_refused_naming_them(name, value, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(VideogenSettings, ENV_PREFIX, environ={f"CAPMESH_VIDEOGEN_{name}": value})


def test_placement_auto_is_float32_on_cpu_and_offload_needs_cuda():
    placement = resolve_placement("cpu", "auto", "", Offload.NONE)
    assert str(placement.dtype) == "torch.float32" and placement.torch_dtype_argument == placement.dtype
    assert resolve_placement("cpu", "bfloat16", "float32", Offload.NONE).torch_dtype_argument["vae"] is not None
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        resolve_placement("cpu", "auto", "", Offload.MODEL)
