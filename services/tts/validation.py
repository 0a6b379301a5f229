"""Checks TTS requests before any work; each bad field becomes one FieldViolation.

Field paths are the proto field names (`text`, `voice`, `segments[2].pause_after_seconds`), so the
caller sees exactly which field to fix. Voices are resolved here too: an explicit voice must
exist, else the language picks one, else the service default is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from capmesh.services.runtime.errors import Violations
from capmesh.services.tts.backend import VoiceCatalog
from capmesh.services.tts.config import TtsSettings
from capmesh.services.tts.domain import AudioFormat, SceneRequest, SynthesisRequest
from capmesh.services.tts.encoders import supported_sample_rates

VOLUME_RANGE = (0.0, 2.0)
PITCH_RANGE = (0.5, 2.0)
SAMPLE_RATE_RANGE = (8000, 48000)


@dataclass(frozen=True)
class Abilities:
    """What this server can render, beyond the settings' limits: the engine's speeds and pitch, the encoders."""

    speed_range: tuple[float, float]
    supports_pitch: bool
    engine: str
    formats: tuple[AudioFormat, ...]  # those with an encoder here (encoders.available_formats)


def validate_synthesis(
    request: SynthesisRequest, settings: TtsSettings, abilities: Abilities, catalog: VoiceCatalog, default_voice: str
) -> str:
    """Raises InvalidArgument listing every bad field; returns the voice to use."""
    violations = Violations()
    _check_text(violations, request.text, "text", settings.max_text_chars)
    _check_rendering(
        violations, request.speed, request.volume, request.pitch, request.format, request.sample_rate, abilities
    )
    voice = _resolve_voice(violations, catalog, request.voice, request.language, default_voice, "voice")
    violations.raise_if_any()
    return voice


def validate_scene(
    request: SceneRequest, settings: TtsSettings, abilities: Abilities, catalog: VoiceCatalog, default_voice: str
) -> list[str]:
    """Raises InvalidArgument listing every bad field; returns each segment's voice."""
    violations = Violations()
    segments = request.segments
    violations.check(len(segments) > 0, "segments", "must hold at least one segment")
    violations.check(
        len(segments) <= settings.max_scene_segments,
        "segments",
        f"has {len(segments)} segments; the limit is {settings.max_scene_segments}",
    )
    _check_rendering(
        violations, request.speed, request.volume, request.pitch, request.format, request.sample_rate, abilities
    )
    scene_voice = _resolve_voice(violations, catalog, "", request.language, default_voice, "language")
    voices = []
    for index, segment in enumerate(segments):
        path = f"segments[{index}]"
        violations.check(bool(segment.text.strip()), f"{path}.text", "must not be empty")
        if segment.speed is not None:
            _check_speed(violations, segment.speed, f"{path}.speed", abilities)
        violations.check(
            0.0 <= segment.pause_after_s <= settings.max_pause_s,
            f"{path}.pause_after_seconds",
            f"is {segment.pause_after_s}; it must be between 0 and {settings.max_pause_s} seconds",
        )
        voices.append(_resolve_voice(violations, catalog, segment.voice, "", scene_voice, f"{path}.voice"))
    total_chars = sum(len(s.text) for s in segments)
    violations.check(
        total_chars <= settings.max_text_chars,
        "segments",
        f"the segments' texts have {total_chars} characters together; the limit is {settings.max_text_chars}",
    )
    violations.raise_if_any()
    return voices


def _check_text(violations: Violations, text: str, path: str, limit: int) -> None:
    if not text.strip():
        violations.add(path, "must not be empty")
    elif len(text) > limit:
        violations.add(path, f"has {len(text)} characters; the limit is {limit}")


def _check_rendering(
    violations: Violations,
    speed: float,
    volume: float,
    pitch: float,
    audio_format: AudioFormat,
    sample_rate: int,
    abilities: Abilities,
) -> None:
    _check_speed(violations, speed, "speed", abilities)
    violations.check(
        _within(volume, *VOLUME_RANGE),
        "volume",
        f"is {volume}; it must be between {VOLUME_RANGE[0]} and {VOLUME_RANGE[1]} (1.0 is unchanged)",
    )
    if abilities.supports_pitch:
        violations.check(
            _within(pitch, *PITCH_RANGE),
            "pitch",
            f"is {pitch}; it must be between {PITCH_RANGE[0]} and {PITCH_RANGE[1]} (1.0 is the voice's own)",
        )
    else:
        violations.check(pitch == 1.0, "pitch", f"the {abilities.engine} engine cannot change pitch; leave it at 1.0")
    formats = abilities.formats
    if audio_format not in formats:
        violations.add(
            "format",
            f"{audio_format.value} has no encoder on this server; available: " + ", ".join(f.value for f in formats),
        )
    elif sample_rate:
        rates = supported_sample_rates(audio_format)
        if not SAMPLE_RATE_RANGE[0] <= sample_rate <= SAMPLE_RATE_RANGE[1]:
            violations.add(
                "sample_rate",
                f"is {sample_rate}; it must be 0 (the default) or between "
                f"{SAMPLE_RATE_RANGE[0]} and {SAMPLE_RATE_RANGE[1]} Hz",
            )
        elif rates is not None and sample_rate not in rates:
            violations.add(
                "sample_rate",
                f"{audio_format.value} cannot carry {sample_rate} Hz here; use one of " + ", ".join(map(str, rates)),
            )


def _check_speed(violations: Violations, speed: float, path: str, abilities: Abilities) -> None:
    low, high = abilities.speed_range
    violations.check(
        _within(speed, low, high),
        path,
        f"is {speed}; the {abilities.engine} engine takes {low} to {high} (1.0 is normal speed)",
    )


def _within(value: float, low: float, high: float) -> bool:
    return not math.isnan(value) and low <= value <= high


def _resolve_voice(
    violations: Violations, catalog: VoiceCatalog, voice: str, language: str, default: str, voice_path: str
) -> str:
    if voice:
        if catalog.is_valid(voice):
            return voice
        violations.add(voice_path, f"unknown voice {voice!r}; {catalog.describe_valid(voice)}")
        return ""
    if language:
        matches = catalog.matching(language)
        if matches:
            return matches[0].id
        languages = sorted({lang for v in catalog.voices for lang in v.languages})
        violations.add("language", f"no voice speaks {language!r}; languages: {', '.join(languages)}")
        return ""
    return default
