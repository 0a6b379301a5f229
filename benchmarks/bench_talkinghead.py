"""TalkingHead default (portrait) engine: frames per second at 512x512, real-time factor, stage times.

    .venv/bin/python -m benchmarks.run talkinghead [--quick]

Input: the astronaut portrait (scikit-image) and about 5 s of espeak-ng speech at 25 fps. The
baseline is muxing the same number of *still* reference frames with the audio (what any engine pays
for h264 + aac alone), so the ratio shows what face detection and animation add on top.
`inference` covers rendering and h264 encoding, which run interleaved frame by frame;
`render only` isolates the animation. The `echomimic` rows run the neural engine on its tiny
random-weight checkpoint at 256x256 with 1 and 4 denoising steps against the portrait engine at the
same size: their difference is the cost of the steps (UNet with audio cross-attention, CFG doubles
the batch) plus the VAE and the speech encoder.
"""

from __future__ import annotations

import io
import subprocess
import wave

import cv2
import numpy as np
from PIL import Image
from skimage import data as skimage_data

from benchmarks.harness import Row, Stats, repeat
from capmesh.services.common.video import AudioTrack, encode_mp4
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.talkinghead.animate import PortraitAnimator, plan_motion
from capmesh.services.talkinghead.config import TalkingheadSettings
from capmesh.services.talkinghead.domain import TalkingHeadRequest
from capmesh.services.talkinghead.engine import STAGES, PortraitEngine, make_engine
from capmesh.services.talkinghead.face import FaceDetector
from capmesh.services.talkinghead.media import decode_audio, frames_for
from capmesh.services.talkinghead.mouth import mouth_track

NAME = "talkinghead"
FPS = 25
TEXT = "Hello there. This portrait is speaking, frame by frame, with the sound of its own voice, for a benchmark."


def _inputs() -> tuple[bytes, bytes]:
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buffer, "PNG")
    wav = subprocess.run(["espeak-ng", "--stdout", "--", TEXT], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as reader:  # espeak writes streaming sizes; rewrite a plain WAV
        rate, pcm = reader.getframerate(), reader.readframes(reader.getnframes())
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return buffer.getvalue(), out.getvalue()


def run(quick: bool) -> list[Row]:
    repeats = 2 if quick else 7
    image, audio_bytes = _inputs()
    audio = decode_audio(audio_bytes, max_seconds=600)
    frame_count = frames_for(audio.duration_s, FPS)
    engine = PortraitEngine(TalkingheadSettings())
    rows: list[Row] = []

    for size in (512, 256):
        request = TalkingHeadRequest(image, audio_bytes, fps=FPS, width=size, height=size, seed=1)
        stage_samples: dict[str, list[float]] = {stage: [] for stage in STAGES}

        def generate(
            request: TalkingHeadRequest = request, stage_samples: dict[str, list[float]] = stage_samples
        ) -> None:
            result = engine.generate(request, CancelToken.never(), lambda _: None)
            for stage in STAGES:
                stage_samples[stage].append(result.stage_seconds.get(stage, 0.0))

        stats = repeat(generate, repeats)
        for samples in stage_samples.values():
            del samples[0]  # the warm-up call
        case = f"{size}x{size}@{FPS}"
        base = _still_frames_baseline(image, audio, size, frame_count, repeats)
        rows.append(Row.from_stats(NAME, f"baseline still frames {case}", "s/video", base))
        rows.append(
            Row.from_stats(NAME, f"generate {case}", "s/video", stats, baseline=f"baseline still frames {case}")
        )
        rows.append(
            Row.from_stats(
                NAME,
                f"throughput {case}",
                "frames/s",
                Stats(tuple(frame_count / s for s in stats.samples)),
                higher_is_better=True,
            )
        )
        rows.append(
            Row.from_stats(
                NAME, f"real-time factor {case}", "x audio", Stats(tuple(s / audio.duration_s for s in stats.samples))
            )
        )
        if size == 512:
            for stage, samples in stage_samples.items():
                rows.append(Row.from_stats(NAME, f"stage {stage} {case}", "s", Stats(tuple(samples))))
            rows.append(
                Row.from_stats(
                    NAME,
                    f"render only {case}",
                    "ms/frame",
                    _render_only(image, audio, size, frame_count, repeats),
                    scale=1000 / frame_count,
                )
            )
    neural = make_engine(TalkingheadSettings(engine="echomimic"))
    for steps in (1, 4):
        request = TalkingHeadRequest(image, audio_bytes, fps=FPS, width=256, height=256, seed=1, steps=steps)
        stats = repeat(lambda request=request: neural.generate(request, CancelToken.never(), lambda _: None), repeats)
        rows.append(
            Row.from_stats(
                NAME,
                f"echomimic tiny {steps} steps 256x256@{FPS}",
                "s/video",
                stats,
                baseline=f"generate 256x256@{FPS}",
            )
        )
    neural.close()
    return rows


def _framed(image: bytes, size: int) -> np.ndarray:
    rgb = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def _still_frames_baseline(image: bytes, audio, size: int, frame_count: int, repeats: int) -> Stats:
    frame = _framed(image, size)
    track = AudioTrack(audio.samples, audio.sample_rate)
    return repeat(lambda: encode_mp4((frame for _ in range(frame_count)), FPS, audio=track), repeats)


def _render_only(image: bytes, audio, size: int, frame_count: int, repeats: int) -> Stats:
    frame = _framed(image, size)
    detector = FaceDetector()
    layout = detector.layout(frame, detector.detect_faces(frame)[0])
    mouth = mouth_track(audio.samples, audio.sample_rate, FPS, frame_count)
    motion = plan_motion(1, FPS, frame_count, float(layout.box.height), mouth.opening)
    animator = PortraitAnimator(frame, layout)

    def render_all() -> None:
        for i in range(frame_count):
            animator.render(float(mouth.opening[i]), float(mouth.width[i]), float(motion.blinks[i]), motion.poses[i])

    return repeat(render_all, repeats)
