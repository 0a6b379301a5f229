"""TtsSettings: read from CAPMESH_TTS_* and checked at start with messages that name the value."""

from __future__ import annotations

import pytest

from capmesh.services.runtime.settings import SettingsError, load_settings
from capmesh.services.tts.config import ENV_PREFIX, TtsSettings


def test_defaults_are_the_offline_profile():
    settings = load_settings(TtsSettings, ENV_PREFIX, environ={})
    assert (settings.engine, settings.model, settings.max_text_chars) == ("espeak", "tiny", 5000)


def test_environment_and_flags_are_parsed_and_flags_win():
    settings = load_settings(
        TtsSettings,
        ENV_PREFIX,
        {"engine": "openai"},
        environ={
            "CAPMESH_TTS_ENGINE": "transformers",
            "CAPMESH_TTS_OPENAI_VOICES": "alloy, nova",
            "CAPMESH_TTS_MAX_TEXT_CHARS": "100",
            "CAPMESH_TTS_OPENAI_API_KEY": "sk-secret",
        },
    )
    assert settings.engine == "openai" and settings.openai_voices == ("alloy", "nova")
    assert settings.max_text_chars == 100
    assert "sk-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"engine": "festival"}, "engine='festival'"),
        ({"dtype": "int3"}, "dtype='int3'"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"default_sample_rate": 100}, "default_sample_rate=100"),
        ({"chunk_bytes": 10 * 1024 * 1024}, "chunk_bytes="),
        ({"max_text_chars": 0}, "max_text_chars=0"),
    ],
)
def test_bad_values_stop_the_service_naming_the_setting(overrides, named):
    with pytest.raises(SettingsError, match=named):
        TtsSettings(**overrides)


def test_bad_environment_value_names_the_variable():
    with pytest.raises(SettingsError, match="CAPMESH_TTS_MAX_TEXT_CHARS"):
        load_settings(TtsSettings, ENV_PREFIX, environ={"CAPMESH_TTS_MAX_TEXT_CHARS": "many"})
