"""ImagegenSettings from CAPMESH_IMAGEGEN_* variables, checked at start; the API key stays secret."""

from __future__ import annotations

import pytest

from capmesh.services.imagegen.config import ENV_PREFIX, ImagegenSettings
from capmesh.services.runtime.settings import SettingsError, load_settings


def test_openai_settings_and_served_model():
    settings = load_settings(
        ImagegenSettings,
        ENV_PREFIX,
        environ={
            "CAPMESH_IMAGEGEN_ENGINE": "openai",
            "CAPMESH_IMAGEGEN_OPENAI_API_KEY": "sk-secret",
            "CAPMESH_IMAGEGEN_OPENAI_MODEL": "dall-e-3",
            "CAPMESH_IMAGEGEN_OPENAI_RESPONSE_FORMAT": "url",
        },
    )
    assert settings.served_models == ["dall-e-3"]
    assert "sk-secret" not in repr(settings)


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("OPENAI_DEFAULT_SIZE", "large", "openai_default_size='large'"),
        ("OPENAI_RESPONSE_FORMAT", "png", "openai_response_format='png'"),
        ("MAX_IMAGES", "0", "max_images=0"),
        ("VAE_DTYPE", "half", "vae_dtype='half'"),
    ],
)
def test_bad_values_are_refused_naming_them(name, value, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(ImagegenSettings, ENV_PREFIX, environ={f"CAPMESH_IMAGEGEN_{name}": value})
