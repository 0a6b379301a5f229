"""Mono PCM in memory: float/int16 conversion, gain, resampling, and reading and writing WAV.

Engines hand over `Pcm` (float32 samples in [-1, 1] at some rate); everything after that (gain,
resampling, encoding) works on it.

WAV headers. A streamed WAV is sent before its length is known, so its header is the
streaming-safe one that espeak-ng, ffmpeg on pipes and many TTS servers write: the RIFF and data
sizes are 0xFFFFFFFF ("unknown, read to the end"). Readers (ffmpeg/PyAV, Python's `wave`, browsers)
read such a file to its end. A caller that has the whole file (the client facade,
`capmesh.client.tts.finalize_wav`, used by the CLI) patches the two sizes to their exact values,
so the file on disk is a standard WAV.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np

UNKNOWN_SIZE = 0xFFFFFFFF
BYTES_PER_SAMPLE = 2  # s16le mono


@dataclass(frozen=True)
class Pcm:
    """Mono float32 samples in [-1, 1] at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    @classmethod
    def silence(cls, seconds: float, sample_rate: int) -> Pcm:
        return cls(np.zeros(round(seconds * sample_rate), dtype=np.float32), sample_rate)


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2")


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32768.0


def apply_gain(pcm: Pcm, gain: float) -> Pcm:
    if gain == 1.0:
        return pcm
    return Pcm(np.clip(pcm.samples * np.float32(gain), -1.0, 1.0).astype(np.float32), pcm.sample_rate)


def resample(pcm: Pcm, rate: int) -> Pcm:
    """Converts to `rate` with libswresample (through PyAV); each call is a whole utterance.

    Sentences are resampled one at a time and the filter is flushed at the end of each, so every
    sentence keeps its exact length (len * rate / source rate), which keeps scene timings exact.
    """
    if pcm.sample_rate == rate or len(pcm.samples) == 0:
        return pcm if pcm.sample_rate == rate else Pcm(np.zeros(0, np.float32), rate)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(pcm.samples, dtype=np.float32)[None, :], format="flt", layout="mono"
    )
    frame.sample_rate = pcm.sample_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    frames = resampler.resample(frame) + resampler.resample(None)
    if not frames:
        return Pcm(np.zeros(0, np.float32), rate)
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)
    return Pcm(samples, rate)


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """A 44-byte PCM s16le mono header; `data_bytes=None` writes the streaming-safe unknown sizes."""
    data_size = UNKNOWN_SIZE if data_bytes is None else data_bytes
    riff_size = UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff_size,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        sample_rate,
        sample_rate * BYTES_PER_SAMPLE,
        BYTES_PER_SAMPLE,
        16,
        b"data",
        data_size,
    )


def read_wav(data: bytes) -> Pcm:
    """Parses 16-bit PCM WAV, mono or not (channels are averaged), tolerating streaming sizes.

    espeak-ng and remote APIs write placeholder sizes when they stream; a data size beyond the
    end of the bytes means "to the end".
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    offset = 12
    channels: int | None = None  # None until the fmt chunk is read, which sets the other three too
    sample_rate = bits = fmt_tag = 0
    while offset + 8 <= len(data):
        chunk_id, size = struct.unpack_from("<4sI", data, offset)
        body = offset + 8
        if chunk_id == b"fmt ":
            fmt_tag, channels, sample_rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
        elif chunk_id == b"data":
            if channels is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            if fmt_tag not in (1, 0xFFFE) or bits != 16:
                raise ValueError(f"unsupported WAV encoding (format {fmt_tag}, {bits} bits); expected 16-bit PCM")
            end = len(data) if size == UNKNOWN_SIZE or body + size > len(data) else body + size
            end -= (end - body) % (2 * channels)
            samples = int16_to_float(np.frombuffer(data[body:end], dtype="<i2"))
            if channels > 1:
                samples = samples.reshape(-1, channels).mean(axis=1).astype(np.float32)
            return Pcm(samples, sample_rate)
        offset = body + size + (size & 1)
    raise ValueError("WAV without a data chunk")


def decode_audio(data: bytes) -> Pcm:
    """Decodes any container PyAV knows to mono float PCM (WAV is parsed directly, faster)."""
    if data[:4] == b"RIFF":
        try:
            return read_wav(data)
        except ValueError:
            pass
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=stream.rate)
        parts: list[np.ndarray] = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1))
        rate = stream.rate
    samples = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    return Pcm(samples, rate)
