"""The audio-to-mouth driver: loudness envelope, attack/release smoothing, visemes."""

from __future__ import annotations

import numpy as np

from capmesh.services.talkinghead.domain import Viseme
from capmesh.services.talkinghead.mouth import attack_release, mouth_track

RATE = 16000
FPS = 25


def tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_silence_keeps_the_mouth_closed():
    track = mouth_track(np.zeros(RATE, dtype=np.float32), RATE, FPS, FPS)
    assert np.allclose(track.opening, 0.0)


def test_loud_frames_open_the_mouth_and_quiet_frames_close_it():
    audio = np.concatenate([np.zeros(RATE // 2, np.float32), tone(0.5, 0.5), np.zeros(RATE // 2, np.float32)])
    track = mouth_track(audio, RATE, FPS, int(1.5 * FPS))
    assert track.opening[:12].max() < 0.01
    assert track.opening[15:25].min() > 0.8
    assert track.opening[-1] < 0.2


def test_attack_is_faster_than_release():
    step = np.array([0.0] + [1.0] * 5 + [0.0] * 5)
    smoothed = attack_release(step, FPS)
    rise = smoothed[1]
    fall = smoothed[5] - smoothed[6]
    assert rise > fall > 0


def test_visemes_shape_the_mouth_where_there_is_sound():
    audio = tone(1.0, 0.5)
    visemes = (Viseme(0.0, 0.5, opening=0.2, width=1.3), Viseme(0.5, 1.0, opening=1.0, width=0.8))
    track = mouth_track(audio, RATE, FPS, FPS, visemes)
    assert track.width[10] > 1.15 and track.width[-1] < 0.9
    assert track.opening[-1] > 2 * track.opening[10]
