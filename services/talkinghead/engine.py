"""TalkingHead engines: a portrait and driving audio in, an h264 + aac mp4 of that face speaking out.

Every engine publishes the same stages in order, each from 0 to 100 percent of its own:
`downloading` (decoding the inputs), `face_detecting`, `inference` (per frame, or per denoising
step), `merging_audio`, then returns the result; the servicer makes one overall percent of them
(`stages.py`). Cancellation is checked before every frame (or step).

Engines:
- `portrait` (default, no weights): Haar-cascade face detection, mouth opening from the audio's
  loudness envelope (or from visemes when given), warped mouth, blinks and head sway. It honours
  `seed` (sway and blink timing); `steps` and `guidance_scale` are validated and ignored because it has no
  denoiser. Neural engines of the EchoMimic family implement the same `TalkingHeadEngine` protocol
  and honour all three.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

import cv2
import numpy as np
import structlog

from capmesh.services.common.video import AudioTrack, encode_mp4
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.errors import FailedPrecondition, InvalidArgument, Violations
from capmesh.services.runtime.lifecycle import LoadedModel, ModelManager
from capmesh.services.runtime.progress import Emit, ProgressUpdate, StepTimer
from capmesh.services.talkinghead import stages
from capmesh.services.talkinghead.animate import PortraitAnimator, plan_motion
from capmesh.services.talkinghead.config import MIN_SIDE, TalkingheadSettings
from capmesh.services.talkinghead.domain import FaceBox, TalkingHeadRequest, TalkingHeadResult
from capmesh.services.talkinghead.face import FaceDetector, FaceLayout
from capmesh.services.talkinghead.media import (
    DecodedAudio,
    crop_around,
    decode_audio,
    decode_image,
    frames_for,
    map_box,
    output_size,
)
from capmesh.services.talkinghead.mouth import mouth_track

log = structlog.get_logger("capmesh.talkinghead")

T = TypeVar("T")

STAGE_DOWNLOADING = stages.DOWNLOADING
STAGE_FACE_DETECTING = stages.FACE_DETECTING
STAGE_INFERENCE = stages.INFERENCE
STAGE_MERGING_AUDIO = stages.MERGING_AUDIO
STAGES = stages.ENGINE_STAGES

PORTRAIT_MODEL = "portrait-haar"
MAX_SEED = 2**63 - 1


class TalkingHeadEngine(Protocol):
    """What the servicer needs from any TalkingHead engine."""

    name: str
    honoured_parameters: frozenset[str]  # of steps, guidance_scale, seed: the ones this engine acts on
    models: ModelManager

    def validate(self, request: TalkingHeadRequest) -> None: ...

    def generate(self, request: TalkingHeadRequest, cancel: CancelToken, emit: Emit) -> TalkingHeadResult: ...

    def close(self) -> None: ...


def validate(request: TalkingHeadRequest, limits: TalkingheadSettings) -> None:
    """Checks the request's numbers against the limits; one violation per bad field.

    The inputs themselves (image and audio decoding, audio length) are checked when decoded.
    """
    v = Violations()
    v.check(bool(request.reference_image), "reference_image", "is required: a PNG, JPEG or WebP portrait")
    v.check(bool(request.audio), "audio", "is required: the driving audio")
    v.check(1 <= request.steps <= limits.max_steps, "steps", f"must be between 1 and {limits.max_steps}")
    v.check(
        0.0 <= request.guidance_scale <= limits.max_guidance_scale,
        "guidance_scale",
        f"must be between 0 and {limits.max_guidance_scale:g}",
    )
    v.check(request.seed is None or 0 <= request.seed <= MAX_SEED, "seed", "must be between 0 and 2^63-1")
    v.check(
        request.fps == 0 or 1 <= request.fps <= limits.max_fps,
        "fps",
        f"must be between 1 and {limits.max_fps} (0 for the default of {limits.default_fps})",
    )
    v.check(
        0 <= request.num_frames <= limits.max_frames,
        "num_frames",
        f"must be between 1 and {limits.max_frames} (0 for audio duration x fps)",
    )
    for name, value, limit in (
        ("width", request.width, limits.max_width),
        ("height", request.height, limits.max_height),
    ):
        if value:
            v.check(
                MIN_SIDE <= value <= limit and value % 2 == 0,
                name,
                f"must be an even number between {MIN_SIDE} and {limit} (0 to follow the reference image)",
            )
    for index, viseme in enumerate(request.visemes):
        v.check(0.0 <= viseme.start_s <= viseme.end_s, f"visemes[{index}].end_s", "must not come before start_s")
        v.check(0.0 <= viseme.opening <= 1.0, f"visemes[{index}].opening", "must be between 0 and 1")
        v.check(0.5 <= viseme.width <= 1.5, f"visemes[{index}].width", "must be between 0.5 and 1.5")
    v.raise_if_any()


class _StageClock:
    """Wall time per stage for the result (benchmarks and logs read it)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._since = time.perf_counter()

    def enter(self, stage: str) -> None:
        now = time.perf_counter()
        if self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._since
        self._stage, self._since = stage, now

    def finish(self) -> dict[str, float]:
        self.enter("")
        return {k: round(v, 4) for k, v in self.seconds.items() if k}


@dataclass(frozen=True)
class Shot:
    """The faces found (largest first) and the framed reference the animation starts from."""

    faces: list[FaceBox]
    frame: np.ndarray
    layout: FaceLayout


@dataclass(frozen=True)
class Inputs:
    """A checked request's decoded inputs, and the frame rate, seed and frame count every engine uses."""

    fps: float
    seed: int
    image: np.ndarray
    audio: DecodedAudio
    frame_count: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


class EngineBase:
    """What every engine shares: its settings, one ModelManager over its models, the request's checks,
    the opening `downloading` stage, the closing mux and the result's common facts."""

    name: str
    honoured_parameters: frozenset[str]

    def __init__(self, settings: TalkingheadSettings, models: list[str]) -> None:
        self.settings = settings
        self.models = ModelManager(
            self._load, models, residency=settings.residency, idle_unload_s=settings.idle_unload_s
        )

    def _load(self, name: str) -> LoadedModel:
        raise NotImplementedError

    def validate(self, request: TalkingHeadRequest) -> None:
        validate(request, self.settings)

    def close(self) -> None:
        self.models.close()

    def _open(self, request: TalkingHeadRequest, cancel: CancelToken, emit: Emit) -> Inputs:
        """Checks the request, then the `downloading` stage: both inputs decoded and the frames counted."""
        settings = self.settings
        validate(request, settings)
        fps = float(request.fps or settings.default_fps)
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        emit(ProgressUpdate(STAGE_DOWNLOADING, 0.0, "decoding the reference image and the audio"))
        image, audio, frame_count = decode_inputs(request, settings, fps)
        emit(ProgressUpdate(STAGE_DOWNLOADING, 100.0, f"{audio.duration_s:.2f} s of audio, {frame_count} frames"))
        cancel.raise_if_cancelled()
        return Inputs(fps, seed, image, audio, frame_count)

    def _mux(
        self,
        frames: Iterable[np.ndarray],
        inputs: Inputs,
        emit: Emit,
        on_frame: Callable[[int], None] | None = None,
    ) -> bytes:
        """The mp4 of the frames with the audio cut to the video's length; ends `merging_audio`."""
        audio = inputs.audio
        track = AudioTrack(audio.samples[: int(round(inputs.duration_s * audio.sample_rate))], audio.sample_rate)
        mp4 = encode_mp4(frames, inputs.fps, audio=track, crf=self.settings.video_crf, on_frame=on_frame)
        emit(ProgressUpdate(STAGE_MERGING_AUDIO, 100.0, f"{len(mp4)} bytes"))
        return mp4

    @staticmethod
    def _result(
        mp4: bytes, inputs: Inputs, shot: Shot, model: str, stage_seconds: dict[str, float] | None = None
    ) -> TalkingHeadResult:
        height, width = shot.frame.shape[:2]
        return TalkingHeadResult(
            mp4=mp4,
            frame_count=inputs.frame_count,
            fps=inputs.fps,
            width=width,
            height=height,
            duration_s=inputs.duration_s,
            audio_duration_s=min(inputs.audio.duration_s, inputs.duration_s),
            face_box=shot.faces[0],
            frame_face_box=shot.layout.box,
            faces_found=len(shot.faces),
            seed=inputs.seed,
            model=model,
            stage_seconds=stage_seconds or {},
        )


class PortraitEngine(EngineBase):
    """The default engine: needs only OpenCV's bundled cascades, runs on CPU."""

    name = "portrait"
    honoured_parameters = frozenset({"seed"})

    def __init__(self, settings: TalkingheadSettings) -> None:
        super().__init__(settings, [PORTRAIT_MODEL])

    def _load(self, name: str) -> LoadedModel:
        detector = FaceDetector()
        return LoadedModel(
            handle=detector,
            device="cpu",
            memory_bytes=detector.memory_bytes(),
            details={"kind": "opencv haar cascades", "ignores": "steps, guidance_scale"},
        )

    def generate(self, request: TalkingHeadRequest, cancel: CancelToken, emit: Emit) -> TalkingHeadResult:
        clock = _StageClock()
        clock.enter(STAGE_DOWNLOADING)
        inputs = self._open(request, cancel, emit)
        fps, frame_count, audio = inputs.fps, inputs.frame_count, inputs.audio

        clock.enter(STAGE_FACE_DETECTING)
        emit(ProgressUpdate(STAGE_FACE_DETECTING, 0.0, "looking for a face"))
        with self.models.use(request.model) as model:
            shot = frame_the_face(model.handle, request, inputs.image, self.settings.default_size)
        face = shot.faces[0]
        emit(
            ProgressUpdate(
                STAGE_FACE_DETECTING,
                100.0,
                f"{len(shot.faces)} face(s); animating the largest at {face.x},{face.y} {face.width}x{face.height}",
            )
        )
        cancel.raise_if_cancelled()

        clock.enter(STAGE_INFERENCE)
        mouth = mouth_track(audio.samples, audio.sample_rate, fps, frame_count, request.visemes)
        motion = plan_motion(inputs.seed, fps, frame_count, float(shot.layout.box.height), mouth.opening)
        animator = PortraitAnimator(shot.frame, shot.layout)
        timer = StepTimer(frame_count)
        emit(ProgressUpdate(STAGE_INFERENCE, 0.0, "animating", 0, frame_count))

        def frames() -> Iterator[np.ndarray]:
            for index in range(frame_count):
                cancel.raise_if_cancelled()
                yield animator.render(
                    float(mouth.opening[index]),
                    float(mouth.width[index]),
                    float(motion.blinks[index]),
                    motion.poses[index],
                )
            # encode_mp4 asks for one more frame after the last: from here on it muxes the audio
            clock.enter(STAGE_MERGING_AUDIO)
            emit(ProgressUpdate(STAGE_MERGING_AUDIO, 0.0, "muxing the audio track"))

        def frame_done(index: int) -> None:
            done = index + 1
            emit(
                ProgressUpdate(
                    STAGE_INFERENCE,
                    100.0 * done / frame_count,
                    f"frame {done}/{frame_count}",
                    done,
                    frame_count,
                    timer.eta_after(done),
                )
            )

        mp4 = self._mux(frames(), inputs, emit, on_frame=frame_done)
        result = self._result(mp4, inputs, shot, PORTRAIT_MODEL, clock.finish())
        log.info(
            "talkinghead.done",
            frames=frame_count,
            fps=fps,
            width=result.width,
            height=result.height,
            seed=inputs.seed,
            faces=len(shot.faces),
            bytes=len(mp4),
            stage_seconds=result.stage_seconds,
        )
        return result


def frame_the_face(detector: FaceDetector, request: TalkingHeadRequest, image: np.ndarray, default_size: int) -> Shot:
    """Finds the faces, crops the reference to the output's aspect around the largest, and lays it out."""
    faces = detector.detect_faces(image)
    if not faces:
        raise FailedPrecondition("no face was found in the reference image", reason="NO_FACE_DETECTED")
    image_height, image_width = image.shape[:2]
    width, height = output_size(image_width, image_height, request.width, request.height, default_size)
    crop = crop_around(faces[0], image_width, image_height, width / height)
    shrinking = crop.width > width
    frame = cv2.resize(
        image[crop.y : crop.y + crop.height, crop.x : crop.x + crop.width],
        (width, height),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC,
    )
    layout = detector.layout(frame, map_box(faces[0], crop, width / crop.width, height / crop.height))
    return Shot(faces, frame, layout)


def decode_inputs(
    request: TalkingHeadRequest, settings: TalkingheadSettings, fps: float
) -> tuple[np.ndarray, DecodedAudio, int]:
    """Decodes both inputs (reporting every bad one at once) and counts the frames to make."""
    v = Violations()
    image = _collect(v, lambda: decode_image(request.reference_image, max_pixels=settings.max_image_pixels))
    audio = _collect(v, lambda: decode_audio(request.audio, max_seconds=settings.max_audio_s))
    v.raise_if_any()
    frame_count = request.num_frames or frames_for(audio.duration_s, fps)
    if frame_count > settings.max_frames:  # num_frames itself was checked: the audio made it too many
        raise InvalidArgument.single(
            "audio",
            f"lasts {audio.duration_s:.2f} s, which at {fps:g} fps needs "
            f"{frame_count} frames, more than the limit of {settings.max_frames}",
        )
    return image, audio, frame_count


def _collect(violations: Violations, decode: Callable[[], T]) -> T:
    """Runs one decoder, moving its field violations into `violations` (the result is then unused)."""
    try:
        return decode()
    except InvalidArgument as exc:
        violations.items.extend(exc.violations)
        return None  # type: ignore[return-value]


def make_engine(settings: TalkingheadSettings) -> TalkingHeadEngine:
    """The engine the `engine` setting names."""
    if settings.engine == "portrait":
        return PortraitEngine(settings)
    if settings.engine == "echomimic":
        from capmesh.services.talkinghead.neural import NeuralEngine  # torch loads only for this engine

        return NeuralEngine(settings)
    raise ValueError(f"unknown talkinghead engine {settings.engine!r}")  # settings validation prevents this
