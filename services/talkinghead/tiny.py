"""Tiny random-weight checkpoint of the neural (EchoMimic-style) talking-head engine.

The folder has one subfolder per component, each written with `save_pretrained` and read back by the
engine with the class's own `from_pretrained`, as a real checkpoint converted to this layout would be:

- `vae/`: diffusers AutoencoderKL (reference image in, frames out);
- `audio_encoder/` + `feature_extractor/`: transformers Wav2Vec2Model and its feature extractor
  (speech features that drive the mouth);
- `unet/`: diffusers UNet2DConditionModel whose input is the noisy latents concatenated with the
  reference latents on channels, and whose cross-attention reads the audio features;
- `scheduler/`: DDIMScheduler.

Sizes follow the libraries' own fast tests, so one call takes well under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from capmesh.services.runtime.tiny import ensure_tiny

TINY_NAME = "talkinghead"
AUDIO_DIM = 32  # the audio encoder's hidden size = the UNet's cross_attention_dim
LATENT_CHANNELS = 4


def build_tiny(dest: Path) -> None:
    # Submodule imports: mypy reads diffusers' top-level names as the placeholders it exports without torch.
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.schedulers.scheduling_ddim import DDIMScheduler
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=2,
    ).save_pretrained(dest / "vae")
    torch.manual_seed(0)
    Wav2Vec2Model(
        Wav2Vec2Config(
            hidden_size=AUDIO_DIM,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            conv_dim=(16, 16, 16),
            conv_stride=(5, 8, 8),  # 320 samples per feature: 50 features a second at 16 kHz
            conv_kernel=(10, 8, 8),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2,
        )
    ).save_pretrained(dest / "audio_encoder")
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(dest / "feature_extractor")
    torch.manual_seed(0)
    UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=2 * LATENT_CHANNELS,  # noisy latents + reference latents
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=AUDIO_DIM,
        norm_num_groups=2,
    ).save_pretrained(dest / "unet")
    DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ).save_pretrained(dest / "scheduler")


def tiny_path() -> Path:
    return ensure_tiny(TINY_NAME, build_tiny)
