"""Tiny random Stable Diffusion text-to-image checkpoint, after diffusers' own fast-test components.

UNet, VAE and CLIP text encoder are the real classes with tiny configs, the CLIP tokenizer's
vocabulary and merges are written locally, and the pipeline is saved with `save_pretrained`, so
`AutoPipelineForText2Image.from_pretrained` loads it like any Stable Diffusion checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.runtime.tiny import ensure_tiny

TINY_NAME = "imagegen"  # tiny Stable Diffusion

TINY_DEFAULTS = GenerationDefaults(width=32, height=32, steps=2, guidance_scale=5.0)


def build_tiny(dest: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from capmesh.services.diffusion.tokenizers import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=64,
            layer_norm_eps=1e-05,
            num_attention_heads=8,
            num_hidden_layers=3,
            vocab_size=len(tokenizer),
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # mypy reads diffusers' top-level pipeline names as the placeholders it exports when torch is missing.
    pipeline.save_pretrained(dest)  # type: ignore[attr-defined]
    TINY_DEFAULTS.save(dest)


def tiny_path() -> Path:
    return ensure_tiny(TINY_NAME, build_tiny)
