"""Image bytes in, pixels out: decoding input images, PNG encoding, pipeline output to uint8, chunking."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image


class UndecodableImage(ValueError):
    """Bytes that are not an image PIL can decode; the message says why."""


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decodes and fully loads an image as RGB, refusing empty data and images above `max_pixels`."""
    if not data:
        raise UndecodableImage("is empty; send an image (PNG, JPEG or WebP)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise UndecodableImage(
                    f"has {image.width}x{image.height} pixels, more than the limit of {max_pixels} pixels"
                )
            image.load()
    except UndecodableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UndecodableImage(f"is too large to decode safely: {exc}") from exc
    except Image.UnidentifiedImageError as exc:  # PIL's text names the BytesIO object: no help to a caller
        raise UndecodableImage(f"could not be read as a PNG, JPEG or WebP image ({_first_bytes(data)})") from exc
    except Exception as exc:  # PIL raises many types for corrupt data; all mean "not an image"
        raise UndecodableImage(f"could not be decoded as an image ({type(exc).__name__}: {exc})") from exc
    return image.convert("RGB")


def _first_bytes(data: bytes) -> str:
    """What the data starts with, for an error message: `starts with b'RIFF'`."""
    return f"it starts with {data[:8]!r}"


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Pipeline `np` output (floats in 0..1) to uint8."""
    return (np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def fit_to_area(image_width: int, image_height: int, area: int, multiple: int) -> tuple[int, int]:
    """(width, height) with the image's aspect ratio, about `area` pixels, both multiples of `multiple`."""
    aspect = image_height / image_width
    height = max(multiple, round(math.sqrt(area * aspect) / multiple) * multiple)
    width = max(multiple, round(math.sqrt(area / aspect) / multiple) * multiple)
    return width, height


def complete_size(width: int, height: int, image_width: int, image_height: int, multiple: int) -> tuple[int, int]:
    """Fills a missing width or height (0) from the other one and the image's aspect ratio."""
    if width and not height:
        height = max(multiple, round(width * image_height / image_width / multiple) * multiple)
    elif height and not width:
        width = max(multiple, round(height * image_width / image_height / multiple) * multiple)
    return width, height
