"""TTS service settings, read from `CAPMESH_TTS_*` variables and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from capmesh.services.runtime.settings import ServerSettings, check
from capmesh.services.runtime.tiny import TINY

ENV_PREFIX = "TTS"
ENGINES = ("espeak", "transformers", "openai")
DTYPES = ("auto", "float32", "float16", "bfloat16")
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")


@dataclass(frozen=True)
class TtsSettings(ServerSettings):
    engine: str = "espeak"  # espeak | transformers | openai
    model: str = TINY  # transformers: "tiny", a local folder or a hub id of a VITS / MMS-TTS model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "float32"  # auto | float32 | float16 | bfloat16 (auto: float16 on CUDA, else float32)
    max_text_chars: int = 5000  # per request; for a scene, over all segments together
    max_sentence_chars: int = 300  # longer sentences are cut at a comma or space
    max_scene_segments: int = 200
    max_pause_s: float = 10.0
    default_voice: str = ""  # "" uses the engine's own default (espeak en-us, alloy, speaker 0)
    default_sample_rate: int = 0  # 0: the engine's native rate
    chunk_bytes: int = 256 * 1024  # largest audio chunk sent in one message
    espeak_binary: str = "espeak-ng"
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: str = field(default="", repr=False)
    openai_model: str = "gpt-4o-mini-tts"
    openai_voices: tuple[str, ...] = OPENAI_VOICES
    openai_timeout_s: float = 60.0
    openai_max_retries: int = 3
    openai_backoff_base_s: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.engine in ENGINES, "engine", self.engine, f"must be one of {', '.join(ENGINES)}")
        check(bool(self.model), "model", self.model, "must name a model (or 'tiny')")
        check(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            "device",
            self.device,
            "must be auto, cpu, cuda or cuda:N",
        )
        check(self.dtype in DTYPES, "dtype", self.dtype, f"must be one of {', '.join(DTYPES)}")
        check(self.max_text_chars >= 1, "max_text_chars", self.max_text_chars, "must be at least 1")
        check(self.max_sentence_chars >= 20, "max_sentence_chars", self.max_sentence_chars, "must be at least 20")
        check(self.max_scene_segments >= 1, "max_scene_segments", self.max_scene_segments, "must be at least 1")
        check(self.max_pause_s >= 0, "max_pause_s", self.max_pause_s, "must be 0 or more")
        check(
            self.default_sample_rate == 0 or 8000 <= self.default_sample_rate <= 48000,
            "default_sample_rate",
            self.default_sample_rate,
            "must be 0 (the engine's rate) or between 8000 and 48000",
        )
        check(
            64 * 1024 <= self.chunk_bytes <= 2 * 1024 * 1024,
            "chunk_bytes",
            self.chunk_bytes,
            "must be between 65536 and 2097152 (messages stay under 4 MiB)",
        )
        check(self.openai_max_retries >= 0, "openai_max_retries", self.openai_max_retries, "must be 0 or more")
        check(self.openai_timeout_s > 0, "openai_timeout_s", self.openai_timeout_s, "must be greater than 0")
        check(self.openai_backoff_base_s >= 0, "openai_backoff_base_s", self.openai_backoff_base_s, "must be 0 or more")
        if self.engine == "openai":
            check(
                bool(self.openai_base_url), "openai_base_url", self.openai_base_url, "must be set for the openai engine"
            )
            check(bool(self.openai_voices), "openai_voices", self.openai_voices, "must list at least one voice")
