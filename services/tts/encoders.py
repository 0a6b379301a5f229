"""Streaming encoders: PCM in, bytes of the output file out, as soon as the container allows.

Every encoder's outputs, concatenated, form one valid file of its format:
- wav: the streaming-safe header first (see audio.py), then s16le samples;
- pcm: s16le samples only;
- mp3 / ogg (Opus) / flac: PyAV muxing into a non-seekable sink, so the muxer never seeks back
  to patch a header: mp3 carries no Xing length, FLAC's STREAMINFO has its sample count 0
  ("unknown"), and Ogg pages are flushed every 20 ms of audio so they leave as they are made.
Which of those exist depends on the FFmpeg build under PyAV; it is probed at runtime.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass

import av
import numpy as np

from capmesh.services.tts.audio import Pcm, float_to_int16, wav_header
from capmesh.services.tts.domain import AudioFormat


@dataclass(frozen=True)
class CodecChoice:
    """How a format is encoded here: PyAV container and codec, and the sample rates it takes."""

    container: str
    codec: str
    sample_rates: tuple[int, ...] | None  # None: any rate


# Preferred first. Experimental FFmpeg encoders (native opus, vorbis) are left out on purpose.
_CANDIDATES: dict[AudioFormat, tuple[tuple[str, str], ...]] = {
    AudioFormat.MP3: (("mp3", "libmp3lame"),),
    AudioFormat.OGG: (("ogg", "libopus"), ("ogg", "libvorbis")),
    AudioFormat.FLAC: (("flac", "flac"),),
}
_CONTAINER_OPTIONS = {"ogg": {"page_duration": "20000"}}  # µs of audio per Ogg page


@functools.cache
def codec_choices(audio_format: AudioFormat) -> tuple[CodecChoice, ...]:
    """The usable encoders for a compressed format, probed once from PyAV's FFmpeg."""
    choices = []
    for container, codec_name in _CANDIDATES.get(audio_format, ()):
        try:
            codec = av.codec.Codec(codec_name, "w")
        except ValueError:  # UnknownCodecError: not in this FFmpeg build
            continue
        if codec.experimental or container not in av.formats_available:
            continue
        rates = tuple(sorted(codec.audio_rates)) if codec.audio_rates else None
        choices.append(CodecChoice(container, codec_name, rates))
    return tuple(choices)


def available_formats() -> tuple[AudioFormat, ...]:
    return tuple(f for f in AudioFormat if f in (AudioFormat.WAV, AudioFormat.PCM) or codec_choices(f))


def supported_sample_rates(audio_format: AudioFormat) -> tuple[int, ...] | None:
    """The rates a format can carry here; None means any rate."""
    if audio_format in (AudioFormat.WAV, AudioFormat.PCM):
        return None
    rates: set[int] = set()
    for choice in codec_choices(audio_format):
        if choice.sample_rates is None:
            return None
        rates.update(choice.sample_rates)
    return tuple(sorted(rates))


def nearest_supported_rate(audio_format: AudioFormat, rate: int) -> int:
    """The rate to use when the caller did not ask for one: `rate` itself if the format takes it,
    else the closest rate above it (so no bandwidth is lost), else the highest."""
    rates = supported_sample_rates(audio_format)
    if rates is None or rate in rates:
        return rate
    above = [r for r in rates if r >= rate]
    return min(above) if above else max(rates)


class StreamEncoder(ABC):
    """Turns successive PCM blocks into successive pieces of one file."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate

    @abstractmethod
    def encode(self, pcm: Pcm) -> bytes:
        """Encodes a block (already at `sample_rate`); returns the bytes the file gained."""

    @abstractmethod
    def finish(self) -> bytes:
        """Flushes the encoder and the container; returns the last bytes of the file."""

    def close(self) -> None:  # noqa: B027 - most encoders hold nothing to release
        """Releases codec resources when synthesis stops early."""


class PcmEncoder(StreamEncoder):
    def encode(self, pcm: Pcm) -> bytes:
        return float_to_int16(pcm.samples).tobytes()

    def finish(self) -> bytes:
        return b""


class WavEncoder(PcmEncoder):
    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._header_sent = False

    def _header_once(self) -> bytes:
        if self._header_sent:
            return b""
        self._header_sent = True
        return wav_header(self.sample_rate)

    def encode(self, pcm: Pcm) -> bytes:
        return self._header_once() + super().encode(pcm)

    def finish(self) -> bytes:
        return self._header_once()  # an empty text still yields a valid (empty) WAV


class _Sink:
    """A write-only, non-seekable file for PyAV: muxers cannot seek back, so output streams."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class PyAvEncoder(StreamEncoder):
    def __init__(self, choice: CodecChoice, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._sink = _Sink()
        self._container = av.open(
            self._sink, "w", format=choice.container, options=_CONTAINER_OPTIONS.get(choice.container, {})
        )
        stream = self._container.add_stream(choice.codec, rate=sample_rate)
        if not isinstance(stream, av.AudioStream):  # every codec in _CANDIDATES encodes audio
            raise ValueError(f"{choice.codec} is not an audio codec")
        self._stream = stream
        self._stream.layout = "mono"
        self._pts = 0
        self._closed = False

    def encode(self, pcm: Pcm) -> bytes:
        if len(pcm.samples) == 0:
            return self._sink.take()
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm.samples, dtype=np.float32)[None, :], format="flt", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += len(pcm.samples)
        # PyAV converts the sample format and re-frames to the codec's frame size itself.
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self.close()
        return self._sink.take()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()


def make_encoder(audio_format: AudioFormat, sample_rate: int) -> StreamEncoder:
    """An encoder for a format and rate that validation accepted (see `supported_sample_rates`)."""
    if audio_format is AudioFormat.WAV:
        return WavEncoder(sample_rate)
    if audio_format is AudioFormat.PCM:
        return PcmEncoder(sample_rate)
    for choice in codec_choices(audio_format):
        if choice.sample_rates is None or sample_rate in choice.sample_rates:
            return PyAvEncoder(choice, sample_rate)
    raise ValueError(f"no {audio_format.value} encoder takes {sample_rate} Hz here")
