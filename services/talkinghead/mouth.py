"""The per-frame mouth pose that drives the animation, from the audio (and visemes when given).

Loudness drives the opening: RMS per video frame in dB, normalised between a noise floor and the
speech peak, then smoothed with a fast attack and a slower release so that the jaw snaps open on a
syllable and settles closed (real jaws close slower than they open). Hiss (the share of energy above
3 kHz: s, f, sh, t) narrows the opening and spreads the lips, since those sounds are made with the
teeth nearly together. Visemes, when the audio's source knows its phonemes, set the shape (opening
and lip width) and loudness scales it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from capmesh.services.talkinghead.domain import Viseme

ATTACK_S = 0.03
RELEASE_S = 0.09
DYNAMIC_RANGE_DB = 24.0  # below peak - this, the mouth is closed
ABSOLUTE_FLOOR_DB = -55.0  # quieter than this is silence whatever the peak
PEAK_PERCENTILE = 95.0
OPEN_CURVE = 1.2  # >1 keeps mid-loudness syllables half open, so the jaw visibly follows the rhythm
HISS_HZ = 3000.0
HISS_CLOSE = 0.6  # fully hissed frames open this much less


@dataclass(frozen=True)
class MouthTrack:
    """Per-frame opening (0..1) and lip width (1.0 neutral)."""

    opening: np.ndarray
    width: np.ndarray

    def __len__(self) -> int:
        return len(self.opening)


@dataclass(frozen=True)
class FrameFeatures:
    """Per video frame: RMS level in dBFS and hiss (share of spectral energy above 3 kHz, 0..1)."""

    levels_db: np.ndarray
    hiss: np.ndarray


def frame_features(samples: np.ndarray, sample_rate: int, fps: float, frame_count: int) -> FrameFeatures:
    """The audio under each video frame, measured (silence past the audio's end)."""
    levels = np.full(frame_count, -120.0)
    hiss = np.zeros(frame_count)
    per_frame = sample_rate / fps
    for index in range(frame_count):
        window = samples[int(round(index * per_frame)) : int(round((index + 1) * per_frame))]
        if not len(window):
            continue
        rms = math.sqrt(float(np.mean(np.square(window, dtype=np.float64))))
        levels[index] = 20.0 * math.log10(rms + 1e-9)
        power = np.abs(np.fft.rfft(window)) ** 2
        total = float(power.sum())
        if total > 0 and sample_rate > 2 * HISS_HZ:
            cutoff = int(HISS_HZ * len(window) / sample_rate)
            hiss[index] = float(power[cutoff:].sum()) / total
    return FrameFeatures(levels, hiss)


def loudness_opening(levels_db: np.ndarray) -> np.ndarray:
    """dB levels -> unsmoothed opening in 0..1 relative to this clip's own speech peak."""
    if not len(levels_db):
        return np.zeros(0)
    peak = float(np.percentile(levels_db, PEAK_PERCENTILE))
    if peak <= ABSOLUTE_FLOOR_DB:
        return np.zeros(len(levels_db))
    floor = max(peak - DYNAMIC_RANGE_DB, ABSOLUTE_FLOOR_DB)
    return np.clip((levels_db - floor) / (peak - floor), 0.0, 1.0) ** OPEN_CURVE


def attack_release(
    values: np.ndarray, fps: float, attack_s: float = ATTACK_S, release_s: float = RELEASE_S
) -> np.ndarray:
    """One-pole smoothing whose time constant is `attack_s` while rising and `release_s` while falling."""
    rise = 1.0 - math.exp(-1.0 / (fps * attack_s))
    fall = 1.0 - math.exp(-1.0 / (fps * release_s))
    out = np.empty_like(values, dtype=np.float64)
    state = 0.0
    for index, target in enumerate(values):
        state += (target - state) * (rise if target > state else fall)
        out[index] = state
    return out


def viseme_targets(visemes: Sequence[Viseme], fps: float, frame_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Opening and width per frame from the viseme covering each frame's midpoint (neutral elsewhere)."""
    opening = np.zeros(frame_count)
    width = np.ones(frame_count)
    times = (np.arange(frame_count) + 0.5) / fps
    for viseme in visemes:
        covered = (times >= viseme.start_s) & (times < viseme.end_s)
        opening[covered] = viseme.opening
        width[covered] = viseme.width
    return opening, width


def mouth_track(
    samples: np.ndarray,
    sample_rate: int,
    fps: float,
    frame_count: int,
    visemes: Sequence[Viseme] = (),
) -> MouthTrack:
    """The mouth pose for every frame of the video."""
    features = frame_features(samples, sample_rate, fps, frame_count)
    loud = loudness_opening(features.levels_db)
    hiss = np.clip((features.hiss - 0.15) / 0.5, 0.0, 1.0)
    if visemes:
        shape_open, shape_width = viseme_targets(visemes, fps, frame_count)
        # The phoneme sets the shape; loudness keeps it closed in pauses and scales emphasis.
        target_open = shape_open * np.clip(0.35 + loud, 0.0, 1.0) * (loud > 0.05)
        target_width = 1.0 + (shape_width - 1.0) * (loud > 0.05)
    else:
        target_open = loud * (1.0 - HISS_CLOSE * hiss)
        target_width = 1.0 + 0.08 * hiss * (loud > 0.05) - 0.05 * loud  # open vowels pull the corners in
    return MouthTrack(
        opening=np.clip(attack_release(target_open, fps), 0.0, 1.0),
        width=attack_release(target_width - 1.0, fps) + 1.0,
    )
