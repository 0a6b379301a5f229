from __future__ import annotations

import pytest

from capmesh.services.runtime.settings import SettingsError, load_settings
from capmesh.services.talkinghead.main import ENV_PREFIX, Settings


def test_settings_come_from_capmesh_talkinghead_variables():
    settings = load_settings(
        Settings, ENV_PREFIX, environ={"CAPMESH_TALKINGHEAD_MAX_AUDIO_S": "30", "CAPMESH_TALKINGHEAD_DEFAULT_FPS": "12"}
    )
    assert (settings.max_audio_s, settings.default_fps, settings.engine) == (30.0, 12, "portrait")


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("ENGINE", "echomimic-v9", "engine='echomimic-v9'"),
        ("DEFAULT_FPS", "90", "default_fps=90"),
        ("MAX_FRAMES", "0", "max_frames=0"),
    ],
)
def test_bad_settings_are_refused_naming_the_value(variable, value, named):
    with pytest.raises(SettingsError, match=named):
        load_settings(Settings, ENV_PREFIX, environ={f"CAPMESH_TALKINGHEAD_{variable}": value})
