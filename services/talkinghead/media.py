"""Decoding of the caller's inputs (portrait image, driving audio) and framing of the output.

Shared by every TalkingHead engine: a neural engine needs the same decoded image, mono audio and
output geometry as the default one. A caller's undecodable input is an InvalidArgument naming the
field, never an internal error.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from capmesh.services.runtime.errors import InvalidArgument
from capmesh.services.talkinghead.domain import FaceBox

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
# Sample rates AAC encodes; other inputs are resampled to 48 kHz.
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
FALLBACK_RATE = 48000


@dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def decode_image(data: bytes, *, max_pixels: int, field_name: str = "reference_image") -> np.ndarray:
    """PNG, JPEG or WebP bytes -> RGB uint8 array (H x W x 3), upright per its EXIF orientation."""
    if not data:
        raise InvalidArgument.single(field_name, "is empty; send a PNG, JPEG or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidArgument.single(
                    field_name, f"is {width}x{height} pixels, more than the limit of {max_pixels} pixels"
                )
            image = ImageOps.exif_transpose(image)
            rgb = np.asarray(image.convert("RGB"))
    except InvalidArgument:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        Image.DecompressionBombWarning,
        Image.DecompressionBombError,
    ) as exc:
        raise InvalidArgument.single(
            field_name, f"does not decode as a PNG, JPEG or WebP image ({type(exc).__name__})"
        ) from exc
    if min(rgb.shape[:2]) < 16:
        raise InvalidArgument.single(field_name, f"is {rgb.shape[1]}x{rgb.shape[0]} pixels; too small for a face")
    return rgb


def decode_audio(data: bytes, *, max_seconds: float, field_name: str = "audio") -> DecodedAudio:
    """Any audio PyAV decodes -> mono float32 at the input's rate (48 kHz when AAC cannot carry it).

    Decoding stops as soon as the audio passes `max_seconds`, so an over-long upload costs little.
    """
    if not data:
        raise InvalidArgument.single(field_name, "is empty; send audio in a format such as WAV, MP3, OGG or FLAC")
    blocks: list[np.ndarray] = []
    total = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidArgument.single(field_name, "has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate if stream.rate in AAC_RATES else FALLBACK_RATE
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            limit = int(max_seconds * rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    block = out.to_ndarray().reshape(-1)
                    blocks.append(block)
                    total += len(block)
                if total > limit:
                    raise InvalidArgument.single(field_name, f"is longer than the limit of {max_seconds:g} seconds")
            for out in resampler.resample(None):
                block = out.to_ndarray().reshape(-1)
                blocks.append(block)
                total += len(block)
    except InvalidArgument:
        raise
    except (av.FFmpegError, ValueError, IndexError) as exc:
        raise InvalidArgument.single(field_name, f"does not decode as audio ({type(exc).__name__})") from exc
    if total > limit:
        raise InvalidArgument.single(field_name, f"is longer than the limit of {max_seconds:g} seconds")
    if total == 0:
        raise InvalidArgument.single(field_name, "decodes to no samples")
    samples = np.clip(np.concatenate(blocks).astype(np.float32), -1.0, 1.0)
    return DecodedAudio(samples, rate)


def frames_for(duration_s: float, fps: float) -> int:
    """Frames that cover the audio: at least one, rounding to the nearest frame."""
    return max(1, int(math.floor(duration_s * fps + 0.5)))


def output_size(image_width: int, image_height: int, width: int, height: int, default_size: int) -> tuple[int, int]:
    """The frame size: as asked, or the missing side from the reference's aspect; always even."""
    aspect = image_width / image_height
    if width and height:
        return width, height
    if width:
        return width, _even(width / aspect)
    if height:
        return _even(height * aspect), height
    if aspect >= 1:
        return _even(default_size), _even(default_size / aspect)
    return _even(default_size * aspect), _even(default_size)


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def crop_around(face: FaceBox, image_width: int, image_height: int, aspect: float) -> FaceBox:
    """The largest crop of the image with `aspect` (w/h), centred on the face as far as the edges allow."""
    crop_w = float(image_width)
    crop_h = crop_w / aspect
    if crop_h > image_height:
        crop_h = float(image_height)
        crop_w = crop_h * aspect
    cx = face.x + face.width / 2
    cy = face.y + face.height / 2
    left = min(max(cx - crop_w / 2, 0.0), image_width - crop_w)
    top = min(max(cy - crop_h / 2, 0.0), image_height - crop_h)
    return FaceBox(int(round(left)), int(round(top)), max(1, int(round(crop_w))), max(1, int(round(crop_h))))


def map_box(face: FaceBox, crop: FaceBox, scale_x: float, scale_y: float) -> FaceBox:
    """A reference-image box in the coordinates of the cropped and resized frame."""
    return FaceBox(
        int(round((face.x - crop.x) * scale_x)),
        int(round((face.y - crop.y) * scale_y)),
        max(1, int(round(face.width * scale_x))),
        max(1, int(round(face.height * scale_y))),
    )
