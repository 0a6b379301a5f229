"""Tiny random image-to-video checkpoints: Wan 2.1-style image-to-video (the default) and Stable Video Diffusion.

The component sizes follow diffusers' own fast tests (tests/pipelines/wan/test_wan_image_to_video.py,
tests/pipelines/stable_video_diffusion): every component is the real class with a tiny config, so the
engine's loading code (`model_index.json` -> pipeline class -> `from_pretrained`) runs unchanged. The
tokenizer is written locally. A small `capmesh_generation_defaults.json` makes requests that leave
size, frames and steps at 0 cheap on this checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from capmesh.services.diffusion.checkpoints import GenerationDefaults
from capmesh.services.runtime.tiny import ensure_tiny

TINY_NAME = "videogen"  # the default tiny checkpoint: Wan image-to-video
SVD_NAME = "videogen-svd"

TINY_DEFAULTS = GenerationDefaults(width=32, height=32, num_frames=5, steps=2, fps=8)


def build_tiny(dest: Path) -> None:
    """Writes the default tiny checkpoint (Wan image-to-video) into `dest`."""
    build_tiny_wan_i2v(dest)


def tiny_path() -> Path:
    return ensure_tiny(TINY_NAME, build_tiny)


def tiny_svd_path() -> Path:
    return ensure_tiny(SVD_NAME, build_tiny_svd)


def build_tiny_wan_i2v(dest: Path) -> None:
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    from capmesh.services.diffusion.tokenizers import tiny_t5_tokenizer

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=32,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=4,
    )
    torch.manual_seed(0)
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            intermediate_size=16,
            patch_size=1,
        )
    )
    image_processor = CLIPImageProcessor(crop_size=32, size=32)
    pipeline = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=transformer,
    )
    # mypy reads diffusers' top-level pipeline names as the placeholders it exports when torch is missing.
    pipeline.save_pretrained(dest)  # type: ignore[attr-defined]
    TINY_DEFAULTS.save(dest)


def build_tiny_svd(dest: Path) -> None:
    """A tiny Stable Video Diffusion checkpoint, so that the second supported family is loaded for real too."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,
        addition_time_embed_dim=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        trained_betas=None,
        use_karras_sigmas=True,
    )
    torch.manual_seed(0)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        latent_channels=4,
    )
    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            intermediate_size=37,
            patch_size=32,
        )
    )  # 224: the pipeline resizes PIL inputs to 224 x 224 for the image encoder, whatever its config says
    feature_extractor = CLIPImageProcessor(crop_size=224, size=224)
    pipeline = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=image_encoder,
        unet=unet,
        scheduler=scheduler,
        feature_extractor=feature_extractor,
    )
    # mypy reads diffusers' top-level pipeline names as the placeholders it exports when torch is missing.
    pipeline.save_pretrained(dest)  # type: ignore[attr-defined]
    GenerationDefaults(width=32, height=32, num_frames=2, steps=2, fps=8).save(dest)
