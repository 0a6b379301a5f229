from __future__ import annotations

import numpy as np
import pytest

from capmesh.services.talkinghead.config import TalkingheadSettings
from capmesh.services.talkinghead.engine import PortraitEngine
from tests.talkinghead.media_fixtures import astronaut, encode_image, espeak_samples, wav_bytes

SILENCE_S = 1.0


@pytest.fixture(scope="session")
def portrait_png() -> bytes:
    return encode_image(astronaut())


@pytest.fixture(scope="session")
def speech() -> tuple[np.ndarray, int]:
    return espeak_samples("Hello there, I am speaking to you now.")


@pytest.fixture(scope="session")
def speech_wav(speech) -> bytes:
    return wav_bytes(*speech)


@pytest.fixture(scope="session")
def silence_then_speech(speech) -> tuple[bytes, float]:
    """WAV of one second of silence followed by speech, plus its duration in seconds."""
    samples, rate = speech
    padded = np.concatenate([np.zeros(int(SILENCE_S * rate), dtype=np.float32), samples])
    return wav_bytes(padded, rate), len(padded) / rate


@pytest.fixture(scope="session")
def engine() -> PortraitEngine:
    return PortraitEngine(TalkingheadSettings())
