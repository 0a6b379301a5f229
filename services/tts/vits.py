"""VITS / MMS-TTS through transformers: VitsModel + its tokenizer, from a folder or a hub id.

Seeding: VITS samples noise from torch's global generator (duration and prior noise), so each
sentence runs under a lock inside `torch.random.fork_rng` seeded with the request's seed plus
the sentence's index: the same seed gives the same audio, whatever else runs in the process,
and the caller's global RNG state is left alone.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import structlog

from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager, torch_module_bytes
from capmesh.services.runtime.tiny import TINY, is_random_checkpoint
from capmesh.services.tts.audio import Pcm
from capmesh.services.tts.backend import RenderOptions, SpeechBackend, VoiceCatalog
from capmesh.services.tts.config import TtsSettings
from capmesh.services.tts.domain import Voice
from capmesh.services.tts.tiny import tiny_path

log = structlog.get_logger("capmesh.tts")

SINGLE_SPEAKER_VOICE = "default"


def resolve_device(setting: str) -> str:
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def resolve_dtype(setting: str, device: str):
    import torch

    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, setting)


class VitsBackend(SpeechBackend):
    name = "transformers"
    speed_range = (0.25, 4.0)

    def __init__(self, settings: TtsSettings) -> None:
        self._settings = settings
        self._rng_lock = threading.Lock()
        super().__init__(
            ModelManager(
                self._load, [settings.model], residency=settings.residency, idle_unload_s=settings.idle_unload_s
            )
        )

    def _load(self, name: str) -> LoadedModel:
        from transformers import AutoTokenizer, VitsModel

        source = str(tiny_path()) if name == TINY else name
        device = resolve_device(self._settings.device)
        dtype = resolve_dtype(self._settings.dtype, device)
        # transformers wraps `to` with functools.wraps(torch.nn.Module.to), so mypy sees an unbound signature.
        model = VitsModel.from_pretrained(source, dtype=dtype).to(device).eval()  # type: ignore[arg-type]
        tokenizer = AutoTokenizer.from_pretrained(source)
        random_weights = name == TINY or (Path(source).is_dir() and is_random_checkpoint(source))
        return LoadedModel(
            handle=(model, tokenizer),
            device=device,
            memory_bytes=torch_module_bytes(model),
            random_weights=random_weights,
            details={
                "source": source,
                "dtype": str(dtype).removeprefix("torch."),
                "sample_rate": str(model.config.sampling_rate),
            },
        )

    def catalog(self) -> VoiceCatalog:
        model, tokenizer = self.models.ensure_loaded().handle
        language = getattr(tokenizer, "language", None)
        languages = (language,) if language else ()
        speakers = model.config.num_speakers
        if speakers <= 1:
            return VoiceCatalog([Voice(SINGLE_SPEAKER_VOICE, "Default speaker", languages)])
        return VoiceCatalog([Voice(f"speaker-{i}", f"Speaker {i}", languages) for i in range(speakers)])

    def default_voice(self) -> str:
        if self._settings.default_voice:
            return self._settings.default_voice
        return self.catalog().ids()[0]

    def native_sample_rate(self, model: LoadedModel) -> int:
        return int(model.handle[0].config.sampling_rate)

    def render(self, model: LoadedModel, text: str, voice: str, options: RenderOptions, cancel: CancelToken) -> Pcm:
        import torch

        vits, tokenizer = model.handle
        rate = self.native_sample_rate(model)
        inputs = tokenizer(text, return_tensors="pt")
        if inputs["input_ids"].shape[-1] <= 1:  # nothing speakable left after normalisation
            return Pcm(np.zeros(0, np.float32), rate)
        inputs = {k: v.to(vits.device) for k, v in inputs.items()}
        speaker = int(voice.removeprefix("speaker-")) if voice.startswith("speaker-") else None
        devices = [vits.device] if vits.device.type == "cuda" else []
        with self._rng_lock, torch.random.fork_rng(devices=devices, device_type=vits.device.type):
            torch.manual_seed(options.seed)
            with torch.inference_mode():
                output = vits(**inputs, speaker_id=speaker, speaking_rate=options.speed)
        length = int(output.sequence_lengths[0])
        samples = output.waveform[0, :length].float().cpu().numpy()
        return Pcm(np.ascontiguousarray(samples, dtype=np.float32), rate)
