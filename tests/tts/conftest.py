"""Shared fixtures for the TTS tests: real engines (espeak-ng, the tiny VITS) and a collector."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.tts.audio import Pcm, read_wav
from capmesh.services.tts.config import TtsSettings
from capmesh.services.tts.domain import AudioChunk
from capmesh.services.tts.engine import TtsEngine, make_engine
from capmesh.services.tts.tiny import tiny_path


@dataclass
class Collected:
    """Everything an engine call emitted, in order, and its result."""

    items: list[object] = field(default_factory=list)
    result: object = None

    def __call__(self, item: object) -> None:
        self.items.append(item)

    @property
    def chunks(self) -> list[AudioChunk]:
        return [i for i in self.items if isinstance(i, AudioChunk)]

    @property
    def progress(self) -> list[ProgressUpdate]:
        return [i for i in self.items if isinstance(i, ProgressUpdate)]

    @property
    def data(self) -> bytes:
        return b"".join(c.data for c in sorted(self.chunks, key=lambda c: c.sequence))


def synthesize(engine: TtsEngine, request, cancel: CancelToken | None = None) -> Collected:
    collected = Collected()
    collected.result = engine.synthesize(request, cancel or CancelToken.never(), collected)
    return collected


def synthesize_scene(engine: TtsEngine, request) -> Collected:
    collected = Collected()
    collected.result = engine.synthesize_scene(request, CancelToken.never(), collected)
    return collected


def decode_with_pyav(data: bytes) -> Pcm:
    """Decodes a whole file with FFmpeg (independent of our own WAV reader)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        parts = [
            frame.to_ndarray().astype(np.float32).reshape(frame.samples, -1).mean(axis=1)
            for frame in container.decode(stream)
        ]
        return Pcm(np.concatenate(parts) if parts else np.zeros(0, np.float32), stream.rate)


def rms(pcm: Pcm) -> float:
    return float(np.sqrt(np.mean(np.square(pcm.samples)))) if len(pcm.samples) else 0.0


def wav_pcm(data: bytes) -> Pcm:
    return read_wav(data)


@pytest.fixture(scope="session")
def espeak_engine():
    engine = make_engine(TtsSettings(engine="espeak"))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_vits_dir() -> Path:
    return tiny_path()  # the shared cache: built once per machine


@pytest.fixture(scope="session")
def vits_engine(tiny_vits_dir):
    engine = make_engine(TtsSettings(engine="transformers", model="tiny", device="cpu"))
    yield engine
    engine.close()
