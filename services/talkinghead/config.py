"""TalkingHead service settings, read from `CAPMESH_TALKINGHEAD_*` variables and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass

from capmesh.services.runtime.settings import ServerSettings, check

ENV_PREFIX = "TALKINGHEAD"
ENGINES = ("portrait", "echomimic")
MIN_SIDE = 64  # smaller frames leave too few pixels for a face to animate


@dataclass(frozen=True)
class TalkingheadSettings(ServerSettings):
    """Engine choice and the limits that keep one call's cost bounded."""

    engine: str = "portrait"  # portrait: face detection + audio-driven warping, no weights; echomimic: diffusion
    model: str = "tiny"  # echomimic: tiny (random weights, built by capmesh) or a checkpoint folder
    device: str = "auto"  # echomimic: auto, cpu, cuda, cuda:N
    batch_frames: int = 16  # echomimic: frames denoised together in one UNet call
    default_fps: int = 25
    max_fps: int = 60
    max_audio_s: float = 120.0
    max_frames: int = 3000
    default_size: int = 512  # longer side of the output when the request gives neither width nor height
    max_width: int = 1280
    max_height: int = 1280
    max_image_pixels: int = 40_000_000  # reference images above this are refused before decoding fully
    max_steps: int = 200
    max_guidance_scale: float = 20.0
    video_crf: int = 23

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.engine in ENGINES, "engine", self.engine, f"must be one of {', '.join(ENGINES)}")
        check(self.max_fps >= 1, "max_fps", self.max_fps, "must be at least 1")
        check(
            1 <= self.default_fps <= self.max_fps,
            "default_fps",
            self.default_fps,
            f"must be between 1 and max_fps ({self.max_fps})",
        )
        check(self.max_audio_s > 0, "max_audio_s", self.max_audio_s, "must be greater than 0")
        check(self.max_frames >= 1, "max_frames", self.max_frames, "must be at least 1")
        check(self.max_width >= MIN_SIDE, "max_width", self.max_width, f"must be at least {MIN_SIDE}")
        check(self.max_height >= MIN_SIDE, "max_height", self.max_height, f"must be at least {MIN_SIDE}")
        check(
            MIN_SIDE <= self.default_size <= min(self.max_width, self.max_height),
            "default_size",
            self.default_size,
            f"must be between {MIN_SIDE} and the smaller of max_width and max_height",
        )
        check(
            self.max_image_pixels >= MIN_SIDE * MIN_SIDE,
            "max_image_pixels",
            self.max_image_pixels,
            f"must be at least {MIN_SIDE * MIN_SIDE}",
        )
        check(self.max_steps >= 1, "max_steps", self.max_steps, "must be at least 1")
        check(self.max_guidance_scale > 0, "max_guidance_scale", self.max_guidance_scale, "must be greater than 0")
        check(0 <= self.video_crf <= 51, "video_crf", self.video_crf, "must be between 0 and 51")
        check(bool(self.model), "model", self.model, "must be tiny or a checkpoint folder")
        check(
            self.device in ("auto", "cpu") or self.device.startswith("cuda"),
            "device",
            self.device,
            "must be auto, cpu, cuda or cuda:N",
        )
        check(self.batch_frames >= 1, "batch_frames", self.batch_frames, "must be at least 1")
