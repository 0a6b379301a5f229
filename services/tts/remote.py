"""An OpenAI-compatible `/audio/speech` endpoint as a backend, one call per sentence.

Each sentence is requested as WAV (`response_format: "wav"`), which carries its own sample rate,
and then goes through the same resampling, gain and encoding as local engines, so streaming,
every output format and scenes work the same for remote voices. Retries follow the shared
policy in `capmesh.services.common.remote_http` (5xx and timeouts retried with backoff, 429
honouring Retry-After, 401/403 and content rejections not retried).
"""

from __future__ import annotations

from capmesh.services.common.remote_http import RemoteApiClient
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import Unavailable
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager
from capmesh.services.tts.audio import Pcm, decode_audio
from capmesh.services.tts.backend import RenderOptions, SpeechBackend, VoiceCatalog
from capmesh.services.tts.config import ENV_PREFIX, TtsSettings
from capmesh.services.tts.domain import Voice

SPEECH_PATH = "audio/speech"
SAMPLE_RATE = 24000  # what OpenAI's speech endpoint returns


class RemoteSpeechBackend(SpeechBackend):
    name = "openai"
    speed_range = (0.25, 4.0)

    def __init__(self, settings: TtsSettings) -> None:
        self._settings = settings
        self._catalog = VoiceCatalog([Voice(v, v.title(), ()) for v in settings.openai_voices])
        super().__init__(ModelManager(self._connect, [settings.openai_model]))

    def _connect(self, name: str) -> LoadedModel:
        client = RemoteApiClient(self._settings, ENV_PREFIX)
        return LoadedModel(
            handle=client,
            device="remote",
            release=client.close,
            details={"base_url": self._settings.openai_base_url, "model": name},
        )

    def catalog(self) -> VoiceCatalog:
        return self._catalog

    def default_voice(self) -> str:
        return self._settings.default_voice or self._settings.openai_voices[0]

    def native_sample_rate(self, model: LoadedModel) -> int:
        return SAMPLE_RATE

    def render(self, model: LoadedModel, text: str, voice: str, options: RenderOptions, cancel: CancelToken) -> Pcm:
        body = {
            "model": model.details["model"],
            "input": text,
            "voice": voice,
            "speed": options.speed,
            "response_format": "wav",
        }
        response = model.handle.post_json(SPEECH_PATH, body, cancel)
        try:
            return decode_audio(response.content)
        except Exception as exc:  # PyAV raises many error types for undecodable bytes
            raise Unavailable(
                f"the remote API at {self._settings.openai_base_url} returned audio that cannot be "
                f"decoded ({type(exc).__name__}: {exc})",
                reason="REMOTE_BAD_AUDIO",
            ) from exc
