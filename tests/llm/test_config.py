"""LlmSettings: read from CAPMESH_LLM_* variables, checked at start, the API key never shown."""

from __future__ import annotations

import pytest

from capmesh.services.llm.config import ENV_PREFIX, LlmSettings
from capmesh.services.runtime.settings import SettingsError, load_settings


def test_settings_come_from_capmesh_llm_variables():
    settings = load_settings(
        LlmSettings,
        ENV_PREFIX,
        environ={
            "CAPMESH_LLM_ENGINE": "openai",
            "CAPMESH_LLM_OPENAI_API_KEY": "sk-secret",
            "CAPMESH_LLM_MAX_BATCH_SIZE": "4",
            "CAPMESH_LLM_DEVICE": "cpu",
        },
    )
    assert (settings.engine, settings.max_batch_size, settings.device) == ("openai", 4, "cpu")
    assert "sk-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CAPMESH_LLM_ENGINE", "llama"),
        ("CAPMESH_LLM_DEVICE", "tpu"),
        ("CAPMESH_LLM_MAX_BATCH_SIZE", "0"),
        ("CAPMESH_LLM_DTYPE", "int3"),
        ("CAPMESH_LLM_STREAM_INTERVAL_MS", "-1"),
    ],
)
def test_bad_values_stop_the_start_naming_the_setting(variable, value):
    with pytest.raises(SettingsError, match=variable.removeprefix("CAPMESH_LLM_").lower()):
        load_settings(LlmSettings, ENV_PREFIX, environ={variable: value})
