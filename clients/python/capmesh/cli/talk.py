"""`capmesh talk`: a portrait speaks an audio file, or a text spoken by TTS first.

    capmesh talk face.png speech.wav -o out.mp4
    capmesh talk face.png --text "Hello there" -o out.mp4

The call goes to `--address` (the gateway; or one server) unless `--talkinghead-address` points
elsewhere. With `--text` it is one call: the talking-head service has the gateway's TTS capability
speak the text. `--tts-address` instead has the CLI call that TTS service first and send its audio
(for a talking-head server without a gateway behind it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from capmesh.cli.options import DEFAULT_ADDRESS, GUIDANCE, STEPS, with_options
from capmesh.cli.progress import check_output, report_failure


def register(app: typer.Typer) -> None:
    app.command("talk")(talk)


@with_options(STEPS, GUIDANCE)
def talk(
    face: Path = typer.Argument(..., exists=True, dir_okay=False, help="The portrait: PNG, JPEG or WebP."),
    audio: Path | None = typer.Argument(
        None, exists=True, dir_okay=False, help="The driving audio (WAV, MP3, OGG, FLAC...); or use --text."
    ),
    text: str | None = typer.Option(None, "--text", "-t", help="Speak this text (TTS) instead of an audio file."),
    output: Path = typer.Option(Path("talk.mp4"), "--output", "-o", help="Where to write the mp4."),
    address: str = typer.Option(
        DEFAULT_ADDRESS,
        "--address",
        envvar="CAPMESH_ADDRESS",
        help="The gateway, or one server that serves both services.",
    ),
    tts_address: str | None = typer.Option(
        None, help="With --text: a TTS service the CLI calls first (else the talking head asks the gateway's TTS)."
    ),
    talkinghead_address: str | None = typer.Option(None, help="The TalkingHead service, when not at --address."),
    voice: str = typer.Option("", help="TTS voice (with --text)."),
    language: str = typer.Option("", help="TTS language (with --text)."),
    fps: float = typer.Option(0.0, help="Frames per second; 0 takes the service default."),
    num_frames: int = typer.Option(0, "--frames", help="Number of frames; 0 follows the audio length."),
    seed: int | None = typer.Option(None, help="Seed of the head motion and blinks."),
    timeout: float | None = typer.Option(None, help="Seconds before each call gives up."),
    **options: Any,
) -> None:
    """Make a talking-head video: FACE speaks AUDIO, or --text spoken by TTS."""
    if (audio is None) == (text is None):
        raise typer.BadParameter("give either an AUDIO file or --text, not both and not neither")
    check_output("talk", output)  # before any work: a path that cannot be written ends it at once
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from capmesh.client import CapmeshClientError, sync_channel
    from capmesh.client.talkinghead import TalkingHeadClient, artifact

    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description:<15}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}", style="dim"),
    )
    try:
        with Progress(*columns, console=console, transient=False) as bars:
            stages = _StageBars(bars)
            speech: bytes | None = None
            if text is not None and tts_address:
                with sync_channel(tts_address) as channel:
                    speech = _synthesize(channel, text, voice, language, stages, timeout)
            elif audio is not None:  # exactly one of audio and text was given (checked above)
                speech = audio.read_bytes()
            with sync_channel(talkinghead_address or address) as channel:
                video = TalkingHeadClient(channel).generate(
                    artifact(face.read_bytes(), name=face.name),
                    None if speech is None else artifact(speech, name=audio.name if audio else "tts.wav"),
                    text="" if speech is not None else (text or ""),
                    voice="" if speech is not None else voice,
                    language="" if speech is not None else language,
                    fps=fps,
                    num_frames=num_frames,
                    seed=seed,
                    on_progress=stages.update,
                    timeout=timeout,
                    **options,  # --steps and --guidance (neural engines)
                )
            stages.finish()
    except CapmeshClientError as exc:
        report_failure("talk", exc)
    output.write_bytes(video.mp4)
    result = video.result
    box = result.face_box
    typer.echo(
        f"{output}: {result.num_frames} frames at {result.fps:g} fps, {result.width}x{result.height}, "
        f"{result.duration_seconds:.2f} s; face {box.width}x{box.height} at {box.x},{box.y} "
        f"(of {result.faces_found} found); seed {result.seed}"
    )


class _StageBars:
    """A bar for the TTS call (when the CLI makes it) and one for the talking head, whose percent is
    one overall figure and whose stage shows as the bar's description."""

    def __init__(self, bars) -> None:
        self._bars = bars
        self._tasks: dict[str, int] = {}

    def task(self, stage: str) -> int:
        if stage not in self._tasks:
            self._tasks[stage] = self._bars.add_task(stage, total=100, note="")
        return self._tasks[stage]

    def set(self, stage: str, percent: float, note: str = "") -> None:
        current = self.task(stage)
        for task in self._tasks.values():
            if task == current:
                break
            self._bars.update(task, completed=100)
        self._bars.update(current, completed=percent, note=note)

    def update(self, progress) -> None:
        """Shows a capmesh.common.v1.Progress of the talking head."""
        note = f"queued at {progress.queue_position}" if progress.queue_position else progress.message
        current = self.task("talking head")
        self._bars.update(current, description=progress.stage, completed=progress.percent, note=note)

    def finish(self) -> None:
        for task in self._tasks.values():
            self._bars.update(task, completed=100)


def _synthesize(channel, text: str, voice: str, language: str, stages: _StageBars, timeout: float | None) -> bytes:
    """The text as WAV bytes from the TTS service; its progress shows as the `tts` bar."""
    from capmesh.client.tts import TtsClient

    stages.set("tts", 0.0, "synthesizing")
    speech = TtsClient(channel).synthesize(
        text,
        voice=voice,
        language=language,
        audio_format="wav",
        on_progress=lambda p: stages.set("tts", p.percent, p.message),
        timeout=timeout,
    )
    stages.set("tts", 100.0, f"{speech.result.duration_seconds:.2f} s of speech")
    return speech.audio
