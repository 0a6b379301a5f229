"""TalkingHead requests and results as plain dataclasses (no protobuf; `convert.py` maps the proto).

Field names follow the proto fields so that validation errors name the field the caller sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MP4_MIME = "video/mp4"


@dataclass(frozen=True)
class Viseme:
    """A mouth shape held from `start_s` to `end_s` of the driving audio.

    Sources that know the phonemes (our TTS) can pass these so that the mouth follows the speech
    sounds instead of the loudness alone: `opening` 0 (closed) to 1 (wide open), `width` 1.0 is the
    neutral lip width, above it spread ("ee"), below it rounded ("oo").
    """

    start_s: float
    end_s: float
    opening: float
    width: float = 1.0


@dataclass(frozen=True)
class TalkingHeadRequest:
    """A reference portrait plus driving audio, to become an mp4 of that face speaking the audio.

    `fps` 0 means the service's default frame rate; `num_frames` 0 means audio duration x fps;
    `width` / `height` 0 keep the reference's aspect (both 0: the service's default size). `seed`
    None picks a random seed, which the result reports. `steps` and `guidance_scale` are the denoising steps and
    classifier-free guidance scale of neural (EchoMimic-family) engines; engines that have no
    denoiser accept and ignore them (see `TalkingHeadEngine.honoured_parameters`).
    """

    reference_image: bytes
    audio: bytes
    steps: int = 25
    guidance_scale: float = 2.5
    seed: int | None = None
    num_frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    model: str = ""
    visemes: tuple[Viseme, ...] = ()


@dataclass(frozen=True)
class FaceBox:
    """An axis-aligned face rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class TalkingHeadResult:
    """The finished video and the facts a caller needs to trust it.

    `face_box` is the animated face in reference-image pixels (the largest of `faces_found` faces);
    `frame_face_box` is the same face in output-frame pixels. `stage_seconds` is the wall time per
    progress stage.
    """

    mp4: bytes
    frame_count: int
    fps: float
    width: int
    height: int
    duration_s: float
    audio_duration_s: float
    face_box: FaceBox
    frame_face_box: FaceBox
    faces_found: int
    seed: int
    model: str
    mime_type: str = MP4_MIME
    stage_seconds: dict[str, float] = field(default_factory=dict)
