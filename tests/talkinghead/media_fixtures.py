"""Real inputs for TalkingHead tests: the astronaut portrait (ships with scikit-image) and espeak-ng speech."""

from __future__ import annotations

import io
import subprocess
import wave

import av
import numpy as np
from PIL import Image
from skimage import data as skimage_data


def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


def encode_image(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, fmt)
    return buffer.getvalue()


def espeak_samples(text: str) -> tuple[np.ndarray, int]:
    """Speech from espeak-ng as mono float32 samples and their sample rate."""
    wav = subprocess.run(["espeak-ng", "--stdout", "--", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        rate = reader.getframerate()
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0, rate


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


def encode_audio(samples: np.ndarray, rate: int, fmt: str, codec: str) -> bytes:
    """Encodes mono float samples with PyAV (e.g. flac, ogg/libopus) to test non-WAV inputs."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
