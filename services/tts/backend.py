"""What every speech backend (espeak-ng, VITS, a remote API) offers to the TTS engine.

A backend renders ONE sentence to PCM; the engine does everything around it (validation,
sentence splitting, resampling, gain, encoding, streaming, scenes), identically for all backends.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager
from capmesh.services.tts.audio import Pcm
from capmesh.services.tts.domain import Voice

MATCHES_SHOWN = 5  # voices an error message names (close to the one asked for)


@dataclass(frozen=True)
class RenderOptions:
    speed: float
    pitch: float
    volume: float  # used only by backends with `renders_volume`; the engine applies it otherwise
    seed: int


class VoiceCatalog:
    """The voices a backend offers, with lookup by id and by language.

    A voice whose `languages` is empty speaks any language (remote voices are multilingual).
    """

    def __init__(
        self, voices: list[Voice], variants: tuple[str, ...] = (), preferred: dict[str, list[str]] | None = None
    ) -> None:
        self.voices = voices
        self.variants = variants  # espeak-ng: "VOICE+VARIANT" picks a variant of VOICE
        self._by_id = {v.id: v for v in voices}
        self._preferred = preferred or {}  # language -> voice ids, best first

    def ids(self) -> list[str]:
        return [v.id for v in self.voices]

    def is_valid(self, voice_id: str) -> bool:
        base, _, variant = voice_id.partition("+")
        return base in self._by_id and (not variant or variant in self.variants)

    def matching(self, language: str) -> list[Voice]:
        """Voices for `language`: exact tags first, then regional ones ("en" finds "en-us"); a
        regional tag nobody speaks falls back to its base language."""
        wanted = language.lower()
        ranked = [self._by_id[i] for i in dict.fromkeys(self._preferred.get(wanted, [])) if i in self._by_id]
        exact = ranked + [
            v
            for v in self.voices
            if v not in ranked and (wanted in (lang.lower() for lang in v.languages) or v.id.lower() == wanted)
        ]
        regional = [
            v
            for v in self.voices
            if v not in exact and any(lang.lower().startswith(wanted + "-") for lang in v.languages)
        ]
        anything = [v for v in self.voices if not v.languages]
        if not exact and not regional and "-" in wanted:  # "de-de" falls back to "de"
            return self.matching(wanted.rsplit("-", 1)[0])
        return exact + regional + anything

    def describe_valid(self, wanted: str = "") -> str:
        """Where to find the valid voices, with a few close to `wanted`: a catalogue can hold
        hundreds, too many for one error message."""
        listing = f"all {len(self.voices)} voices: `capmesh tts --voices` (TtsService/ListVoices)"
        base, _, variant = wanted.partition("+")
        if variant and base in self._by_id:  # the voice is fine, its variant is not
            shown = difflib.get_close_matches(variant, self.variants, n=MATCHES_SHOWN, cutoff=0.4)
            return f"variants like: {', '.join(shown or self.variants[:MATCHES_SHOWN])}; {len(self.variants)} in all"
        close = self._close_to(base.lower())
        text = f"close matches: {', '.join(close)}; {listing}"
        if self.variants:
            text += "; append +VARIANT for a variant"
        return text

    def _close_to(self, wanted: str) -> list[str]:
        """A few voice ids like `wanted`: spelled alike, named alike ("english"), or of the language
        it names ("fr"); else a few of the English ones, as examples."""
        by_lower = {v.id.lower(): v.id for v in self.voices}
        spelled = [by_lower[m] for m in difflib.get_close_matches(wanted, list(by_lower), n=MATCHES_SHOWN)]
        named = [v.id for v in self.voices if wanted and (wanted in v.name.lower() or v.id.lower().startswith(wanted))]
        spoken = [v.id for v in self.matching(wanted)] if wanted else []
        found = list(dict.fromkeys(named + spelled + spoken))[:MATCHES_SHOWN]
        return found or [v.id for v in self.matching("en")][:MATCHES_SHOWN] or self.ids()[:MATCHES_SHOWN]


class SpeechBackend(ABC):
    name: str
    speed_range: tuple[float, float] = (0.25, 4.0)
    supports_pitch = False
    renders_volume = False  # True: the backend applies RenderOptions.volume itself

    def __init__(self, models: ModelManager) -> None:
        self.models = models

    @abstractmethod
    def catalog(self) -> VoiceCatalog:
        """The voices on offer (may load the model: a VITS model's speakers live in it)."""

    @abstractmethod
    def default_voice(self) -> str:
        """The voice used when a request names neither voice nor language."""

    @abstractmethod
    def native_sample_rate(self, model: LoadedModel) -> int:
        """The rate `render` produces, used when the caller does not ask for one."""

    @abstractmethod
    def render(self, model: LoadedModel, text: str, voice: str, options: RenderOptions, cancel: CancelToken) -> Pcm:
        """Renders one sentence."""

    def close(self) -> None:
        self.models.close()
