"""Reads back the mp4s that VideoGen and TalkingHead make, to check what they encoded."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np


@dataclass(frozen=True)
class VideoProbe:
    frame_count: int
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str | None
    audio_seconds: float


def probe_mp4(data: bytes, *, decode_frames: bool = True) -> tuple[VideoProbe, list[np.ndarray]]:
    """Decodes an mp4 back: its facts and, optionally, its RGB frames."""
    frames: list[np.ndarray] = []
    with av.open(io.BytesIO(data)) as container:
        vstream = container.streams.video[0]
        astreams = container.streams.audio
        count = 0
        for frame in container.decode(video=0):
            count += 1
            if decode_frames:
                frames.append(frame.to_ndarray(format="rgb24"))
        audio_seconds = 0.0
        audio_codec = None
        if astreams:
            audio_codec = astreams[0].codec_context.name
        fps = float(vstream.average_rate or vstream.guessed_rate or 0)
        probe = VideoProbe(count, vstream.width, vstream.height, fps, vstream.codec_context.name, audio_codec, 0.0)
    if audio_codec:
        with av.open(io.BytesIO(data)) as container:
            samples = 0
            rate = container.streams.audio[0].rate
            for frame in container.decode(audio=0):
                samples += frame.samples
            audio_seconds = samples / rate if rate else 0.0
        probe = VideoProbe(
            probe.frame_count, probe.width, probe.height, probe.fps, probe.video_codec, audio_codec, audio_seconds
        )
    return probe, frames
