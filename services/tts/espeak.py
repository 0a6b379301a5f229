"""espeak-ng: real speech with no weights, run as a subprocess.

Safety: espeak-ng runs without a shell, and the text goes through stdin (`--stdin`), never
through argv, so text that starts with "-" or holds quotes or newlines cannot become an option.
SSML (`-m`) stays off, so markup in the text is spoken, not interpreted. The voice does go into
argv, but only after validation against the voices espeak-ng itself lists.

Mapping: speed 1.0 = espeak's default 175 words per minute (-s), pitch 1.0 = its default 50 on
its 0-99 scale (-p), volume 1.0 = amplitude 100 on its 0-200 scale (-a).
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import Internal, ModelLoadError, Unavailable
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager, Residency
from capmesh.services.tts.audio import Pcm, read_wav
from capmesh.services.tts.backend import RenderOptions, SpeechBackend, VoiceCatalog
from capmesh.services.tts.config import TtsSettings
from capmesh.services.tts.domain import Voice

MODEL_NAME = "espeak-ng"
DEFAULT_WPM = 175
DEFAULT_PITCH = 50
DEFAULT_AMPLITUDE = 100
SAMPLE_RATE = 22050  # espeak-ng's fixed output rate
_GENDERS = {"M": "male", "F": "female"}


class EspeakBackend(SpeechBackend):
    name = "espeak"
    # espeak-ng ignores rates below 80 wpm and distorts far above 450.
    speed_range = (0.5, 2.5)
    supports_pitch = True
    renders_volume = True

    def __init__(self, settings: TtsSettings) -> None:
        self._binary = settings.espeak_binary
        self._default_voice = settings.default_voice or "en-us"
        super().__init__(ModelManager(self._load, [MODEL_NAME], residency=Residency.RESIDENT))

    def _load(self, _: str) -> LoadedModel:
        path = shutil.which(self._binary)
        if path is None:
            raise FileNotFoundError(f"{self._binary} is not installed (apt-get install espeak-ng)")
        version = self._run([path, "--version"]).decode(errors="replace").strip()
        return LoadedModel(handle=path, device="cpu", details={"binary": path, "version": version})

    @functools.cached_property
    def _voices(self) -> VoiceCatalog:
        path = self.models.ensure_loaded().handle
        return parse_voice_listing(
            self._run([path, "--voices"]).decode(), self._run([path, "--voices=variant"]).decode()
        )

    def catalog(self) -> VoiceCatalog:
        return self._voices

    def default_voice(self) -> str:
        return self._default_voice

    def native_sample_rate(self, model: LoadedModel) -> int:
        return SAMPLE_RATE

    def render(self, model: LoadedModel, text: str, voice: str, options: RenderOptions, cancel: CancelToken) -> Pcm:
        command = [
            model.handle,
            "--stdout",
            "--stdin",
            "-b",
            "1",
            "-v",
            voice,
            "-s",
            str(round(DEFAULT_WPM * options.speed)),
            "-p",
            str(min(99, max(0, round(DEFAULT_PITCH * options.pitch)))),
            "-a",
            str(min(200, max(0, round(DEFAULT_AMPLITUDE * options.volume)))),
        ]
        wav = self._run(command, stdin=text.encode("utf-8"), timeout_s=30 + len(text) / 5)
        try:
            return read_wav(wav)
        except ValueError as exc:
            raise Internal(f"espeak-ng wrote no usable WAV: {exc}") from exc

    @staticmethod
    def _run(command: list[str], stdin: bytes = b"", timeout_s: float = 30.0) -> bytes:
        try:
            done = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout_s, check=False)
        except FileNotFoundError as exc:
            raise ModelLoadError(f"espeak-ng is not installed: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise Unavailable(f"espeak-ng did not finish within {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            raise Internal(f"espeak-ng failed (exit {done.returncode}): {done.stderr.decode(errors='replace')[:300]}")
        return done.stdout


_VOICE_LINE = re.compile(
    r"^\s*(?P<priority>\d+)\s+(?P<lang>\S+)\s+\S*/(?P<gender>\S)\s+(?P<name>\S+)\s+(?P<file>\S+)\s*(?P<other>.*)$"
)
_OTHER_LANGUAGE = re.compile(r"\(([^\s)]+)\s+(\d+)\)")


def parse_voice_listing(voices_text: str, variants_text: str) -> VoiceCatalog:
    """Builds the catalog from `espeak-ng --voices` and `--voices=variant`.

    Lines read 'Pty Language Age/Gender VoiceName File (other-language priority)...'. A voice's id
    is its language tag; when two voices share one ("yue" and its Jyutping variant) the later is
    named by its voice file ("yue-latn-jyutping"), which `-v` accepts as well. The priorities
    (lower is better: "(en 2)" after en-gb, "(en 3)" after en-us) rank voices per language.
    """
    voices: list[Voice] = []
    ranked: dict[str, list[tuple[int, str]]] = {}
    for match in _voice_lines(voices_text):
        voice_id = match["lang"]
        if any(v.id == voice_id for v in voices):
            voice_id = match["file"].rsplit("/", 1)[-1].lower()
        others = [(lang, int(priority)) for lang, priority in _OTHER_LANGUAGE.findall(match["other"])]
        languages = tuple(dict.fromkeys([match["lang"], *(lang for lang, _ in others)]))
        voices.append(Voice(voice_id, match["name"].replace("_", " "), languages, _GENDERS.get(match["gender"], "")))
        for lang, priority in [(match["lang"], int(match["priority"])), *others]:
            ranked.setdefault(lang.lower(), []).append((priority, voice_id))
    variants = tuple(match["file"].removeprefix("!v/") for match in _voice_lines(variants_text))
    preferred = {lang: [voice for _, voice in sorted(items)] for lang, items in ranked.items()}
    return VoiceCatalog(voices, variants, preferred)


def _voice_lines(text: str) -> list[re.Match[str]]:
    matches = []
    for line in text.splitlines()[1:]:  # the first line is the column header
        if not line.strip():
            continue
        match = _VOICE_LINE.match(line)
        if match is None:
            raise Internal(f"unexpected line from espeak-ng --voices: {line!r}")
        matches.append(match)
    return matches
