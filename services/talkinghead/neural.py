"""The neural talking-head engine (`engine=echomimic`): audio-conditioned latent diffusion, in the
style of EchoMimic, built from diffusers and transformers components.

How one call runs:
1. downloading: decode the portrait and the audio (shared with the portrait engine);
2. face_detecting: find the face and frame it at the output's aspect (shared);
3. inference: the framed face goes through the VAE encoder once (the reference latents); the audio,
   resampled to the feature extractor's rate, goes through the speech encoder (Wav2Vec2), and each
   frame gets the window of audio features around its time. Every frame starts from the same seeded
   noise (so that the frames differ only where the audio drives them), and each denoising step runs
   the UNet on [noisy latents | reference latents] with the frame's audio features as
   cross-attention context; classifier-free guidance runs it again with the audio zeroed and moves
   away from that. One progress report and one cancellation check per step;
4. merging_audio: the VAE decodes the frames, which are scaled to the output size and encoded with
   the audio into an mp4 (shared encoder).

The components are loaded with their own `from_pretrained` from one folder with a subfolder each
(`tiny.py` writes a random-weight one), so a trained checkpoint in that layout plugs in on a GPU
host. What this UNet lacks against EchoMimic is its temporal (motion) modules and face-landmark
masks: frames are denoised independently, batched `batch_frames` at a time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog
import torch

from capmesh.services.diffusion.placement import Offload, resolve_placement
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.lifecycle import LoadedModel
from capmesh.services.runtime.progress import Emit, ProgressUpdate, StepTimer
from capmesh.services.runtime.tiny import TINY, is_random_checkpoint
from capmesh.services.talkinghead import stages
from capmesh.services.talkinghead.config import TalkingheadSettings
from capmesh.services.talkinghead.domain import TalkingHeadRequest, TalkingHeadResult
from capmesh.services.talkinghead.engine import MAX_SEED, EngineBase, Inputs, frame_the_face
from capmesh.services.talkinghead.face import FaceDetector

log = structlog.get_logger("capmesh.talkinghead.neural")

AUDIO_WINDOW = 2  # audio features on each side of a frame's own: about 40 ms of context each way
COMPONENTS = ("vae", "audio_encoder", "feature_extractor", "unet", "scheduler")


@dataclass
class Components:
    """One loaded checkpoint."""

    vae: Any
    audio_encoder: Any
    feature_extractor: Any
    unet: Any
    scheduler_config: dict
    scheduler_class: Any  # a diffusers scheduler class: from_config(scheduler_config) makes one per call
    device: torch.device
    dtype: torch.dtype
    detector: FaceDetector

    @property
    def model_size(self) -> int:
        """The side in pixels the UNet works at: its latent size times the VAE's downscaling."""
        scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unet.config.sample_size) * scale


def load_components(path: str, device: str) -> Components:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from transformers import AutoFeatureExtractor, Wav2Vec2Model

    folder = Path(path)
    missing = [name for name in COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"{path} is not an echomimic-style checkpoint: no {', '.join(missing)} subfolder")
    placement = resolve_placement(device, "auto", "", Offload.NONE)
    dtype = placement.dtype
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32).to(placement.device)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype).to(placement.device)
    audio_encoder: Any = Wav2Vec2Model.from_pretrained(folder / "audio_encoder")
    audio_encoder.to(placement.device)
    feature_extractor = AutoFeatureExtractor.from_pretrained(folder / "feature_extractor")
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    for module in (vae, unet, audio_encoder):
        module.eval()
    return Components(
        vae=vae,
        audio_encoder=audio_encoder,
        feature_extractor=feature_extractor,
        unet=unet,
        scheduler_config=scheduler_config,
        scheduler_class=DDIMScheduler,
        device=placement.device,
        dtype=dtype,
        detector=FaceDetector(),
    )


class NeuralEngine(EngineBase):
    name = "echomimic"
    honoured_parameters = frozenset({"steps", "guidance_scale", "seed"})

    def __init__(self, settings: TalkingheadSettings) -> None:
        super().__init__(settings, [settings.model])

    def _load(self, name: str) -> LoadedModel:
        if name == TINY:
            from capmesh.services.talkinghead.tiny import tiny_path

            path, random_weights = str(tiny_path()), True
        else:
            path, random_weights = name, is_random_checkpoint(name)
        parts = load_components(path, self.settings.device)
        modules = (parts.vae, parts.unet, parts.audio_encoder)
        memory = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
        return LoadedModel(
            handle=parts,
            device=str(parts.device),
            memory_bytes=memory,
            random_weights=random_weights,
            details={"kind": "echomimic-style latent diffusion", "path": path, "size": str(parts.model_size)},
        )

    def generate(self, request: TalkingHeadRequest, cancel: CancelToken, emit: Emit) -> TalkingHeadResult:
        inputs = self._open(request, cancel, emit)
        with self.models.use(request.model) as model:
            parts: Components = model.handle
            emit(ProgressUpdate(stages.FACE_DETECTING, 0.0, "looking for a face"))
            shot = frame_the_face(parts.detector, request, inputs.image, self.settings.default_size)
            emit(ProgressUpdate(stages.FACE_DETECTING, 100.0, f"{len(shot.faces)} face(s)"))
            cancel.raise_if_cancelled()
            frames = self._denoise(parts, request, shot.frame, inputs, cancel, emit)
            emit(ProgressUpdate(stages.MERGING_AUDIO, 0.0, "decoding frames and muxing the audio track"))
            pictures = self._decode(parts, frames, cancel)
        height, width = shot.frame.shape[:2]
        resized = (cv2.resize(p, (width, height), interpolation=cv2.INTER_CUBIC) for p in pictures)
        mp4 = self._mux(resized, inputs, emit)
        log.info(
            "talkinghead.neural.done", frames=inputs.frame_count, steps=request.steps, seed=inputs.seed, bytes=len(mp4)
        )
        return self._result(mp4, inputs, shot, self.models.resolve(request.model))

    @torch.inference_mode()
    def _denoise(
        self,
        parts: Components,
        request: TalkingHeadRequest,
        face: np.ndarray,
        inputs: Inputs,
        cancel: CancelToken,
        emit: Emit,
    ) -> torch.Tensor:
        """The denoised latents of every frame, one progress report per step."""
        frame_count, seed = inputs.frame_count, inputs.seed
        reference = self._reference_latents(parts, face)
        # Per frame, the window of audio features around its time: frames x window x dim.
        audio = self._frame_audio(parts, inputs.audio.samples, inputs.audio.sample_rate, inputs.fps, frame_count)
        scheduler = parts.scheduler_class.from_config(parts.scheduler_config)
        scheduler.set_timesteps(request.steps, device=parts.device)
        generator = torch.Generator("cpu").manual_seed(seed % MAX_SEED)
        noise = torch.randn(reference.shape, generator=generator, dtype=torch.float32)
        latents = (noise * scheduler.init_noise_sigma).to(parts.device).repeat(frame_count, 1, 1, 1)
        guided = request.guidance_scale > 1.0
        timer = StepTimer(len(scheduler.timesteps))
        emit(ProgressUpdate(stages.INFERENCE, 0.0, "denoising", 0, len(scheduler.timesteps)))
        for index, t in enumerate(scheduler.timesteps):
            cancel.raise_if_cancelled()
            noise_pred = torch.cat(
                [
                    self._predict(
                        parts,
                        latents[i : i + self.settings.batch_frames],
                        reference,
                        audio[i : i + self.settings.batch_frames],
                        t,
                        guided,
                        request.guidance_scale,
                    )
                    for i in range(0, frame_count, self.settings.batch_frames)
                ]
            )
            latents = scheduler.step(noise_pred, t, latents).prev_sample
            done = index + 1
            total = len(scheduler.timesteps)
            emit(
                ProgressUpdate(
                    stages.INFERENCE, 100.0 * done / total, f"step {done}/{total}", done, total, timer.eta_after(done)
                )
            )
        return latents

    @staticmethod
    def _predict(
        parts: Components,
        latents: torch.Tensor,
        reference: torch.Tensor,
        audio: torch.Tensor,
        t: torch.Tensor,
        guided: bool,
        guidance_scale: float,
    ) -> torch.Tensor:
        """The UNet's noise prediction for a batch of frames, guided away from silence when asked."""
        model_input = torch.cat([latents, reference.expand(len(latents), -1, -1, -1)], dim=1)
        context = audio
        if guided:
            model_input = torch.cat([model_input, model_input])
            context = torch.cat([torch.zeros_like(audio), audio])
        predicted = parts.unet(model_input.to(parts.dtype), t, encoder_hidden_states=context.to(parts.dtype)).sample
        predicted = predicted.float()
        if not guided:
            return predicted
        silent, spoken = predicted.chunk(2)
        return silent + guidance_scale * (spoken - silent)

    @staticmethod
    def _reference_latents(parts: Components, face: np.ndarray) -> torch.Tensor:
        size = parts.model_size
        small = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
        pixels = torch.from_numpy(small).permute(2, 0, 1)[None].float().div(127.5).sub(1.0).to(parts.device)
        latents = parts.vae.encode(pixels).latent_dist.mode()
        return latents * parts.vae.config.scaling_factor

    @staticmethod
    def _frame_audio(parts: Components, samples: np.ndarray, rate: int, fps: float, frame_count: int) -> torch.Tensor:
        """Per frame, the speech features in a window around the frame's time: frames x (2w+1) x dim."""
        target = int(parts.feature_extractor.sampling_rate)
        if rate != target:
            positions = np.arange(int(len(samples) * target / rate)) * rate / target
            samples = np.interp(positions, np.arange(len(samples)), samples).astype(np.float32)
        if len(samples) < target // 10:  # the encoder's convolutions need a little audio
            samples = np.pad(samples, (0, target // 10 - len(samples)))
        inputs = parts.feature_extractor(samples, sampling_rate=target, return_tensors="pt")
        features = parts.audio_encoder(inputs.input_values.to(parts.device)).last_hidden_state[0]
        per_second = len(features) / (len(samples) / target)
        centres = np.floor((np.arange(frame_count) + 0.5) / fps * per_second).astype(int)
        offsets = np.arange(-AUDIO_WINDOW, AUDIO_WINDOW + 1)
        indices = np.clip(centres[:, None] + offsets[None, :], 0, len(features) - 1)
        return features[torch.from_numpy(indices).to(parts.device)].float()

    @torch.inference_mode()
    def _decode(self, parts: Components, latents: torch.Tensor, cancel: CancelToken) -> list[np.ndarray]:
        pictures = []
        for i in range(0, len(latents), self.settings.batch_frames):
            cancel.raise_if_cancelled()
            batch = latents[i : i + self.settings.batch_frames] / parts.vae.config.scaling_factor
            decoded = parts.vae.decode(batch.float()).sample
            rgb = decoded.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            pictures.extend(rgb)
        return pictures
