"""`capmesh tts`: speak a text, list the voices, or render a multi-voice scene.

    capmesh tts "Hello there. How are you?" -o out.wav
    capmesh tts "Bonjour." --language fr --format mp3 --speed 1.2 -o out.mp3
    capmesh tts --voices [--language en]
    capmesh tts --scene scene.json -o scene.wav

A scene file is JSON: a list of segments, or {"segments": [...], "language": ..., "seed": ...};
each segment has "text" and optionally "speaker", "voice", "pause_after_seconds" and "speed".
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from capmesh.cli.options import MODEL, TIMEOUT, address_option
from capmesh.cli.progress import RANDOM_WEIGHTS_NOTE, check_output, report_failure

SEGMENT_KEYS = {"speaker", "text", "voice", "pause_after_seconds", "speed"}


def register(app: typer.Typer) -> None:
    app.command("tts")(tts)


def tts(
    text: str | None = typer.Argument(None, help="The text to speak; '-' reads it from stdin."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where to write the audio (default out.<format>)."),
    voice: str = typer.Option("", "--voice", "-v", help="A voice id from `capmesh tts --voices`."),
    language: str = typer.Option("", "--language", "-l", help="A language tag (en, fr, zh...) that picks a voice."),
    audio_format: str | None = typer.Option(
        None, "--format", "-f", help="wav, pcm, mp3, ogg or flac (default: from -o's suffix, else wav)."
    ),
    speed: float | None = typer.Option(None, help="Speaking rate, 1.0 is normal."),
    volume: float | None = typer.Option(None, help="Loudness, 1.0 is unchanged (0 to 2)."),
    pitch: float | None = typer.Option(None, help="Pitch, 1.0 is the voice's own (engines that support it)."),
    sample_rate: int = typer.Option(0, help="Output sample rate in Hz; 0 keeps the engine's."),
    seed: int | None = typer.Option(None, help="Seed for sampling engines (same seed, same audio)."),
    model: str = MODEL.option,
    voices: bool = typer.Option(False, "--voices", help="List the voices (filtered by --language) and exit."),
    scene: Path | None = typer.Option(
        None, "--scene", exists=True, dir_okay=False, help="Render a scene JSON file into one track."
    ),
    address: str = address_option("TTS"),
    timeout: float | None = TIMEOUT.option,
) -> None:
    """Text to speech: streams the audio sentence by sentence with a progress bar."""
    from rich.console import Console

    from capmesh.client import CapmeshClientError, sync_channel
    from capmesh.client.tts import AUDIO_FORMATS, SynthesisOptions, TtsClient

    console = Console(stderr=True)
    modes = sum([voices, scene is not None, text is not None])
    if modes != 1:
        raise typer.BadParameter("give exactly one of: TEXT, --voices, --scene FILE")
    chosen_format = (audio_format or (output.suffix.lstrip(".").lower() if output else "") or "wav").lower()
    if chosen_format not in AUDIO_FORMATS:
        raise typer.BadParameter(
            f"unknown format {chosen_format!r}; one of {', '.join(AUDIO_FORMATS)}", param_hint="--format"
        )
    target = output or Path(f"out.{chosen_format}")
    if not voices:
        check_output("tts", target)
    lines, scene_options = _read_scene(scene) if scene is not None else ([], {})
    spoken_text = typer.get_text_stream("stdin").read() if text == "-" else text or ""
    try:
        with sync_channel(address) as channel:
            client = TtsClient(channel)
            if voices:
                _print_voices(client.list_voices(language, timeout=timeout))
                return
            with _ProgressBar(console) as bar:
                # What a scene and a single text are both made with; a scene file's own seed wins over --seed.
                options = SynthesisOptions(
                    audio_format=chosen_format,
                    sample_rate=sample_rate,
                    seed=scene_options.get("seed", seed),
                    model=model,
                    on_progress=bar.update,
                    timeout=timeout,
                )
                if scene is not None:
                    rendered = client.synthesize_scene(
                        lines, language=scene_options.get("language", language), **options
                    )
                    audio, description = rendered.audio, rendered.result.audio
                else:
                    spoken = client.synthesize(
                        spoken_text, voice=voice, language=language, speed=speed, volume=volume, pitch=pitch, **options
                    )
                    audio, description = spoken.audio, spoken.result
    except CapmeshClientError as exc:
        report_failure("tts", exc)
    target.write_bytes(audio)
    typer.echo(
        f"{target}: {description.duration_seconds:.2f} s of {chosen_format} at {description.sample_rate} Hz, "
        f"{description.sentence_count} sentences, {len(audio)} bytes"
        + (f", voice {description.voice}" if description.voice else "")
        + f", seed {description.seed}"
        + (RANDOM_WEIGHTS_NOTE if description.random_weights else "")
    )
    if scene is not None:
        for timing in rendered.result.timings:
            typer.echo(
                f"  [{timing.index}] {timing.start_seconds:7.2f} - {timing.end_seconds:7.2f} s  {timing.speaker}"
            )


class _ProgressBar:
    """One rich bar fed by capmesh.common.v1.Progress messages."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("{task.description:<14}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}", style="dim"),
            console=console,
        )
        self._task = self._progress.add_task("synthesizing", total=100, note="")

    def __enter__(self) -> _ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def update(self, progress) -> None:
        note = f"queued at {progress.queue_position}" if progress.queue_position else progress.message
        self._progress.update(self._task, description=progress.stage, completed=progress.percent, note=note)


def _read_scene(path: Path):
    from google.protobuf import json_format

    from capmesh.client.tts import SceneSegment

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--scene") from exc
    segments = document.get("segments") if isinstance(document, dict) else document
    if not isinstance(segments, list) or not all(isinstance(s, dict) for s in segments):
        raise typer.BadParameter(f'{path}: expected a list of segments or {{"segments": [...]}}', param_hint="--scene")
    lines = []
    for index, segment in enumerate(segments):
        unknown = set(segment) - SEGMENT_KEYS
        if unknown or "text" not in segment:
            raise typer.BadParameter(
                f'{path}: segment {index} needs "text" and may have {", ".join(sorted(SEGMENT_KEYS - {"text"}))}'
                + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""),
                param_hint="--scene",
            )
        try:  # the message's own JSON mapping: a number for `speed`, a string for `voice` ...
            lines.append(json_format.ParseDict(segment, SceneSegment()))
        except json_format.ParseError as exc:
            raise typer.BadParameter(f"{path}: segment {index}: {exc}", param_hint="--scene") from None
    options = {k: document[k] for k in ("language", "seed") if isinstance(document, dict) and k in document}
    return lines, options


def _print_voices(voices) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "name", "languages", "gender")
    for voice in voices:
        table.add_row(voice.id, voice.name, ", ".join(voice.languages), voice.gender)
    Console().print(table)
    typer.echo(f"{len(voices)} voice(s)")
