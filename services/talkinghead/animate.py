"""Renders the frames of the default engine: mouth, blinks and head sway warped onto one portrait.

Every frame starts from the same framed reference image, so errors never accumulate:
1. the mouth: a displacement field drops the lower lip and jaw by the frame's opening (the upper lip
   lifts a little), the lip corners move in or out with the lip width, and the widening gap between
   the lips is shaded as the mouth interior with a hint of upper teeth;
2. the eyes: during a blink the skin above each eye slides down over it;
3. the head: a small rotation, shift and zoom about the neck, smooth and seeded.
The displacement fields are fixed per face, so they are built once and only scaled per frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from capmesh.services.talkinghead.face import Eye, FaceLayout

JAW_DROP = 0.10  # of face height, at full opening
UPPER_LIP_LIFT = 0.25  # of the jaw drop
MOUTH_INTERIOR_RGB = np.array([48.0, 18.0, 22.0], dtype=np.float32)
TEETH_RGB = np.array([226.0, 218.0, 206.0], dtype=np.float32)
SWAY_DEGREES = 1.4
SWAY_SHIFT = 0.012  # of face size
SWAY_ZOOM = 0.008
SPEECH_SWAY_GAIN = 0.8  # speaking heads move more
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.07, 0.03, 0.12


@dataclass(frozen=True)
class HeadPose:
    degrees: float
    shift_x: float
    shift_y: float
    zoom: float


@dataclass(frozen=True)
class MotionPlan:
    """Per-frame head pose and eyelid closure (0 open .. 1 closed), both from the seed."""

    poses: list[HeadPose]
    blinks: np.ndarray


def plan_motion(seed: int, fps: float, frame_count: int, face_size: float, opening: np.ndarray) -> MotionPlan:
    """Smooth seeded sway (sum of slow sines) that grows while speaking, and natural blink timing."""
    rng = np.random.default_rng(seed)
    times = np.arange(frame_count) / fps
    speech = _slow_envelope(opening, fps)
    sway = 1.0 + SPEECH_SWAY_GAIN * (speech - 0.5)
    channels = [_smooth_noise(rng, times) * sway for _ in range(4)]
    poses = [
        HeadPose(
            degrees=SWAY_DEGREES * channels[0][i],
            shift_x=SWAY_SHIFT * face_size * channels[1][i],
            shift_y=SWAY_SHIFT * face_size * channels[2][i],
            zoom=1.0 + SWAY_ZOOM * channels[3][i],
        )
        for i in range(frame_count)
    ]
    return MotionPlan(poses=poses, blinks=_blink_curve(rng, times))


def _smooth_noise(rng: np.random.Generator, times: np.ndarray) -> np.ndarray:
    """A sum of three slow sines with random frequencies and phases, scaled to about -1..1."""
    total = np.zeros_like(times)
    for _ in range(3):
        frequency = rng.uniform(0.06, 0.35)
        total += np.sin(2 * math.pi * frequency * times + rng.uniform(0, 2 * math.pi))
    return total / 3.0


def _slow_envelope(opening: np.ndarray, fps: float, seconds: float = 0.6) -> np.ndarray:
    alpha = 1.0 - math.exp(-1.0 / (fps * seconds))
    out = np.empty(len(opening))
    state = 0.0
    for i, value in enumerate(opening):
        state += (value - state) * alpha
        out[i] = state
    return out


def _blink_curve(rng: np.random.Generator, times: np.ndarray) -> np.ndarray:
    closure = np.zeros_like(times)
    if not len(times):
        return closure
    start = rng.uniform(0.6, 2.5)
    end = times[-1] + 1.0
    while start < end:
        closure = np.maximum(closure, _blink_shape(times - start))
        if rng.random() < 0.15:  # people often blink twice in a row
            closure = np.maximum(closure, _blink_shape(times - start - 0.32))
        start += rng.uniform(2.0, 5.5)
    return closure


def _blink_shape(t: np.ndarray) -> np.ndarray:
    closing = np.clip(t / BLINK_CLOSE_S, 0.0, 1.0)
    opening = 1.0 - np.clip((t - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S, 0.0, 1.0)
    return np.where(t < 0, 0.0, np.minimum(closing, opening))


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def raised_cosine(distance: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    u = np.clip(np.abs(distance) / half_width, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * u))


@dataclass(frozen=True)
class _Region:
    """A rectangle of the frame plus its sampling grid (absolute pixel coordinates)."""

    top: int
    bottom: int
    left: int
    right: int
    grid_x: np.ndarray
    grid_y: np.ndarray

    @classmethod
    def clipped(cls, top: float, bottom: float, left: float, right: float, height: int, width: int) -> _Region:
        # Always at least one pixel inside the frame, even for a face partly cropped away.
        t = min(max(0, int(math.floor(top))), height - 1)
        lft = min(max(0, int(math.floor(left))), width - 1)
        b = max(t + 1, min(height, int(math.ceil(bottom))))
        r = max(lft + 1, min(width, int(math.ceil(right))))
        gx, gy = np.meshgrid(np.arange(lft, r, dtype=np.float32), np.arange(t, b, dtype=np.float32))
        return cls(t, b, lft, r, gx, gy)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


@dataclass(frozen=True)
class _Lid:
    """An upper eyelid that slides down over the eye: skin-coloured, with a dark lash line at its edge."""

    region: _Region
    ellipse: np.ndarray
    skin: np.ndarray  # 1 x width x 3
    top: float
    travel: float
    lash: float

    def close(self, frame: np.ndarray, closure: float) -> None:
        edge = self.top + closure * self.travel
        rows = self.region.grid_y
        covered = smoothstep(edge + 1.0, edge - 1.0, rows) * self.ellipse
        shade = 1.0 - 0.15 * smoothstep(edge - 0.5 * self.travel, edge, rows)  # the lid darkens towards its rim
        lash = 1.0 - 0.55 * np.exp(-(((rows - edge) / max(0.8, 0.35 * self.lash)) ** 2)) * self.ellipse * closure
        patch = frame[self.region.slices].astype(np.float32)
        lid = self.skin * shade[..., None]
        blended = patch * (1.0 - covered[..., None]) + lid * covered[..., None]
        frame[self.region.slices] = np.clip(blended * lash[..., None], 0, 255).astype(np.uint8)


class PortraitAnimator:
    """Renders frame i from the framed reference, the face layout and the per-frame drivers."""

    def __init__(self, base: np.ndarray, layout: FaceLayout) -> None:
        self.base = np.ascontiguousarray(base, dtype=np.uint8)
        self.layout = layout
        height, width = self.base.shape[:2]
        box = layout.box
        self._jaw_px = JAW_DROP * box.height
        self._pivot = (layout.mouth_x, box.y + 1.25 * box.height)
        self._mouth = _Region.clipped(
            layout.mouth_y - 0.22 * box.height,
            box.y + 1.36 * box.height,
            layout.mouth_x - 0.75 * box.width,
            layout.mouth_x + 0.75 * box.width,
            height,
            width,
        )
        self._build_mouth_fields()
        self._lids = [self._eye_lids(eye, height, width) for eye in layout.eyes]

    # -- fields built once -------------------------------------------------------------------
    def _build_mouth_fields(self) -> None:
        lay, box, region = self.layout, self.layout.box, self._mouth
        gx, gy = region.grid_x, region.grid_y
        mx, my, fh = lay.mouth_x, lay.mouth_y, box.height
        # The lip opening is lens-shaped (closed at the corners) while the chin moves as a whole.
        lip_half = lay.mouth_half_width * 1.15
        chin_half = 0.5 * box.width
        half_width = lip_half + (chin_half - lip_half) * smoothstep(my, box.y + 1.1 * fh, gy)
        across = raised_cosine(gx - mx, half_width)
        lower = smoothstep(my - 0.015 * fh, my + 0.035 * fh, gy) * (
            1.0 - smoothstep(box.y + 1.10 * fh, box.y + 1.32 * fh, gy)
        )
        upper = smoothstep(my - 0.13 * fh, my - 0.02 * fh, gy) * (1.0 - smoothstep(my - 0.02 * fh, my + 0.01 * fh, gy))
        self._jaw_field = (across * lower).astype(np.float32)
        self._lip_field = (raised_cosine(gx - mx, lip_half) * upper).astype(np.float32)
        spread = np.exp(-(((gx - mx) / (1.4 * lay.mouth_half_width)) ** 2) - ((gy - my) / (0.12 * fh)) ** 2)
        self._spread_field = spread.astype(np.float32)
        self._offset_x = (gx - mx).astype(np.float32)

    def _eye_lids(self, eye: Eye, height: int, width: int) -> _Lid:
        half_w, half_h = 1.3 * eye.half_width, 1.6 * eye.half_height
        region = _Region.clipped(
            eye.cy - half_h - 1, eye.cy + half_h + 2, eye.cx - half_w - 1, eye.cx + half_w + 2, height, width
        )
        u = (region.grid_x - eye.cx) / half_w
        v = (region.grid_y - eye.cy) / half_h
        ellipse = smoothstep(1.0, 0.75, np.sqrt(u * u + v * v)).astype(np.float32)
        # The lid takes the colour of the skin between the eye and the brow, column by column.
        skin_top = max(0, int(eye.cy - 2.8 * eye.half_height))
        skin_bottom = max(skin_top + 1, int(eye.cy - 1.5 * eye.half_height))
        skin = self.base[skin_top:skin_bottom, region.left : region.right].astype(np.float32).mean(axis=0)
        # Closed lids meet a little below the eye's centre.
        return _Lid(region, ellipse, 0.94 * skin[None, :, :], eye.cy - half_h, 1.7 * half_h, eye.half_height)

    # -- per frame ---------------------------------------------------------------------------
    def render(self, opening: float, lip_width: float, blink: float, pose: HeadPose) -> np.ndarray:
        frame = self.base.copy()
        if opening > 0.01 or abs(lip_width - 1.0) > 0.005:
            self._render_mouth(frame, opening, lip_width)
        if blink > 0.01:
            for lid in self._lids:
                lid.close(frame, blink)
        return self._move_head(frame, pose)

    def _render_mouth(self, frame: np.ndarray, opening: float, lip_width: float) -> None:
        region, drop = self._mouth, opening * self._jaw_px
        map_y = region.grid_y - drop * (self._jaw_field - UPPER_LIP_LIFT * self._lip_field)
        stretch = 1.0 + (lip_width - 1.0) * self._spread_field
        map_x = self.layout.mouth_x + self._offset_x / stretch
        warped = cv2.remap(
            self.base,
            map_x.astype(np.float32),
            map_y.astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT101,
        )
        frame[region.slices] = warped
        if drop >= 0.6:
            self._shade_interior(frame, drop, opening, lip_width)

    def _shade_interior(self, frame: np.ndarray, drop: float, opening: float, lip_width: float) -> None:
        lay = self.layout
        cx, cy = lay.mouth_x, lay.mouth_y + 0.4 * drop
        half_w, half_h = lay.mouth_half_width * 0.8 * lip_width, 0.5 * drop
        area = _Region.clipped(cy - half_h - 1, cy + half_h + 2, cx - half_w - 1, cx + half_w + 2, *frame.shape[:2])
        u = (area.grid_x - cx) / half_w
        v = (area.grid_y - cy) / half_h
        radius = np.sqrt(u * u + v * v)
        inside = smoothstep(1.0, 0.55, radius)[..., None] * 0.9
        by_opening = smoothstep(0.25, 0.6, np.asarray(opening, dtype=np.float32))
        teeth = (smoothstep(-0.2, -0.55, v) * by_opening)[..., None] * 0.55
        colour = MOUTH_INTERIOR_RGB * (1.0 - teeth) + TEETH_RGB * teeth
        patch = frame[area.slices].astype(np.float32)
        frame[area.slices] = np.clip(patch * (1.0 - inside) + colour * inside, 0, 255).astype(np.uint8)

    def _move_head(self, frame: np.ndarray, pose: HeadPose) -> np.ndarray:
        matrix = cv2.getRotationMatrix2D(self._pivot, pose.degrees, pose.zoom)
        matrix[0, 2] += pose.shift_x
        matrix[1, 2] += pose.shift_y
        height, width = frame.shape[:2]
        return cv2.warpAffine(frame, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
