"""Face and eye detection with the Haar cascades that ship inside opencv-python-headless 4.x.

The cascades are the default engine's "model": loaded once by the ModelManager, no download.
Landmarks the animation needs (mouth, eyes) come from the face box by facial proportions, with the
eye cascade refining the eyes when it finds both.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import cv2.data  # the folder of the bundled cascades; opencv's stubs do not declare it on `cv2`
import numpy as np

from capmesh.services.talkinghead.domain import FaceBox

FACE_CASCADES = ("haarcascade_frontalface_default.xml", "haarcascade_frontalface_alt2.xml")
EYE_CASCADE = "haarcascade_eye.xml"
DETECT_MAX_SIDE = 800  # detection runs on a copy no larger than this; boxes are mapped back

# Where features sit inside a Haar frontal-face box (fractions of its width / height).
MOUTH_Y = 0.83
MOUTH_HALF_WIDTH = 0.23
EYE_Y = 0.38
EYE_X = (0.30, 0.70)
EYE_HALF_WIDTH = 0.11
EYE_HALF_HEIGHT = 0.045


@dataclass(frozen=True)
class Eye:
    cx: float
    cy: float
    half_width: float
    half_height: float


@dataclass(frozen=True)
class FaceLayout:
    """Where to animate, in the coordinates of the frame being animated."""

    box: FaceBox
    mouth_x: float
    mouth_y: float
    mouth_half_width: float
    eyes: tuple[Eye, Eye]


def cascade_dir() -> Path:
    return Path(cv2.data.haarcascades)


def cascade_files() -> list[Path]:
    return [cascade_dir() / name for name in (*FACE_CASCADES, EYE_CASCADE)]


class FaceDetector:
    """Holds the loaded cascades; detectMultiScale is not documented thread-safe, so calls take a lock."""

    def __init__(self) -> None:
        self._faces = [_load(cascade_dir() / name) for name in FACE_CASCADES]
        self._eyes = _load(cascade_dir() / EYE_CASCADE)
        self._lock = threading.Lock()

    @staticmethod
    def memory_bytes() -> int:
        return sum(path.stat().st_size for path in cascade_files())

    def detect_faces(self, rgb: np.ndarray) -> list[FaceBox]:
        """Every frontal face in the image, largest first, in the image's pixels.

        The second cascade is only consulted when the first finds nothing.
        """
        gray, scale = _detection_gray(rgb)
        min_side = max(24, int(min(gray.shape) * 0.06))
        boxes: Sequence[Sequence[int]] = ()
        with self._lock:
            for cascade in self._faces:
                boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
                if len(boxes):
                    break
        faces = [
            FaceBox(int(round(x / scale)), int(round(y / scale)), int(round(w / scale)), int(round(h / scale)))
            for x, y, w, h in boxes
        ]
        return sorted(faces, key=lambda box: box.area, reverse=True)

    def layout(self, rgb: np.ndarray, box: FaceBox) -> FaceLayout:
        """Mouth and eye positions for `box` in `rgb` (the frame that will be animated)."""
        eyes = self._find_eyes(rgb, box) or _proportional_eyes(box)
        return FaceLayout(
            box=box,
            mouth_x=box.x + 0.5 * box.width,
            mouth_y=box.y + MOUTH_Y * box.height,
            mouth_half_width=MOUTH_HALF_WIDTH * box.width,
            eyes=eyes,
        )

    def _find_eyes(self, rgb: np.ndarray, box: FaceBox) -> tuple[Eye, Eye] | None:
        top, bottom = max(0, box.y), max(0, box.y + int(box.height * 0.6))
        left, right = max(0, box.x), max(0, box.x + box.width)
        region = rgb[top:bottom, left:right]
        if region.size == 0 or min(region.shape[:2]) < 20:
            return None
        gray = cv2.equalizeHist(cv2.cvtColor(region, cv2.COLOR_RGB2GRAY))
        min_side = max(6, box.width // 10)
        with self._lock:
            found = self._eyes.detectMultiScale(
                gray,
                scaleFactor=1.1,
                minNeighbors=5,
                minSize=(min_side, min_side),
                maxSize=(box.width // 3, box.width // 3),
            )
        centre_x = box.width / 2
        lefts = [e for e in found if e[0] + e[2] / 2 < centre_x]
        rights = [e for e in found if e[0] + e[2] / 2 >= centre_x]
        if not lefts or not rights:
            return None
        pair = [max(side, key=lambda e: e[2] * e[3]) for side in (lefts, rights)]
        eyes = tuple(
            Eye(
                cx=float(left + x + w / 2),
                cy=float(top + y + h / 2),
                half_width=float(w * 0.33),
                half_height=float(h * 0.14),
            )
            for x, y, w, h in pair
        )
        if abs(eyes[0].cy - eyes[1].cy) > box.height * 0.12:  # not a plausible eye pair
            return None
        return eyes  # type: ignore[return-value]


def _proportional_eyes(box: FaceBox) -> tuple[Eye, Eye]:
    return tuple(  # type: ignore[return-value]
        Eye(
            box.x + fx * box.width, box.y + EYE_Y * box.height, EYE_HALF_WIDTH * box.width, EYE_HALF_HEIGHT * box.height
        )
        for fx in EYE_X
    )


def _load(path: Path) -> cv2.CascadeClassifier:
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"the Haar cascade {path} did not load (opencv-python-headless 4.x ships it)")
    return cascade


def _detection_gray(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    scale = min(1.0, DETECT_MAX_SIDE / max(rgb.shape[:2]))
    small = rgb if scale == 1.0 else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)), scale
