"""H.264 (+ AAC) mp4 encoding with PyAV, shared by VideoGen and TalkingHead."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np


@dataclass(frozen=True)
class AudioTrack:
    """Mono or interleaved-channel float32 samples in [-1, 1] at `sample_rate`."""

    samples: np.ndarray  # shape (n,) mono or (n, channels)
    sample_rate: int


def encode_mp4(
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    audio: AudioTrack | None = None,
    crf: int = 23,
    on_frame: Callable[[int], None] | None = None,
) -> bytes:
    """Encodes RGB uint8 frames (H x W x 3, even H and W) into an mp4; returns its bytes.

    `on_frame(i)` is called after each frame is encoded, so callers can report progress and check
    cancellation between frames. Frames should be at least 64x64: on smaller ones libx264 was seen
    to give different bytes for identical frames within one process (the decoded frames agree).
    """
    buffer = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(buffer, mode="w", format="mp4") as container:
        video = None
        for index, frame in enumerate(frames):
            if video is None:
                height, width = frame.shape[:2]
                video = container.add_stream("libx264", rate=rate)
                video.width, video.height = width, height
                video.pix_fmt = "yuv420p"
                video.options = {"crf": str(crf), "preset": "veryfast"}
                audio_stream = _add_audio(container, audio) if audio is not None else None
            av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
            for packet in video.encode(av_frame):
                container.mux(packet)
            if on_frame is not None:
                on_frame(index)
        if video is None:
            raise ValueError("encode_mp4 needs at least one frame")
        for packet in video.encode():
            container.mux(packet)
        if audio is not None and audio_stream is not None:
            _encode_audio(container, audio_stream, audio)
    return buffer.getvalue()


def _add_audio(container, audio: AudioTrack):
    stream = container.add_stream("aac", rate=audio.sample_rate)
    stream.layout = "mono" if audio.samples.ndim == 1 or audio.samples.shape[1] == 1 else "stereo"
    return stream


def _encode_audio(container, stream, audio: AudioTrack) -> None:
    samples = audio.samples.astype(np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    channels = 1 if stream.layout.name == "mono" else 2
    samples = samples[:, :channels]
    frame_size = stream.codec_context.frame_size or 1024
    layout = "mono" if channels == 1 else "stereo"
    pts = 0
    for start in range(0, len(samples), frame_size):
        block = np.ascontiguousarray(samples[start : start + frame_size].T)  # planar: channels x n
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
        frame.sample_rate = audio.sample_rate
        frame.pts = pts
        pts += block.shape[1]
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
