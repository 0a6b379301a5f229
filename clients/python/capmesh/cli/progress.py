"""Live progress and failure reporting for the commands that stream a generation (image, video, talk, tts)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

# Appended to a command's summary when the model has random weights (a tiny checkpoint).
RANDOM_WEIGHTS_NOTE = " (random weights: the output is noise, for tests and demos)"


def check_output(command: str, path: Path) -> Path:
    """Refuses, before any work is done, an output path that cannot be written: a missing or
    read-only folder, or a folder where the file should go. Exits with status 2 saying why."""
    problem = ""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        problem = "it is a folder; give a file name"
    elif not folder.exists():
        problem = f"the folder {folder} does not exist"
    elif not folder.is_dir():
        problem = f"{folder} is not a folder"
    elif not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        problem = "permission denied"
    if problem:
        typer.secho(f"capmesh {command}: cannot write {path}: {problem}", fg="red", err=True)
        raise typer.Exit(2)
    return path


def report_failure(command: str, exc) -> None:
    """Prints the error and each bad field, then exits with status 1."""
    from rich.console import Console

    console = Console(stderr=True)
    console.print(f"[red]capmesh {command} failed: {exc}[/red]")
    for field, description in exc.field_violations:
        console.print(f"  [red]{field}[/red]: {description}")
    raise typer.Exit(1) from exc


@contextmanager
def streamed_call(command: str, address: str) -> Iterator[tuple[StageProgress, object]]:
    """A live progress bar and a channel to `address`; a failed call is reported and exits with status 1."""
    from capmesh.client import CapmeshClientError, sync_channel

    try:
        with StageProgress() as progress, sync_channel(address) as channel:
            yield progress, channel
    except CapmeshClientError as exc:
        report_failure(command, exc)


class StageProgress:
    """One live bar over the whole call (the services report overall percent), naming the stage and step."""

    def __enter__(self) -> StageProgress:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self._bars = Progress(
            TextColumn("{task.description:<15}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}", style="dim"),
            console=Console(stderr=True),
        )
        self._bars.__enter__()
        self._task = self._bars.add_task("waiting", total=100, note="")
        return self

    def update(self, progress) -> None:
        """Shows a capmesh.common.v1.Progress."""
        if progress.queue_position:
            note = f"queued at position {progress.queue_position}"
        elif progress.total_steps:
            note = f"{progress.step}/{progress.total_steps}"
            if progress.eta_seconds:
                note += f", about {progress.eta_seconds:.0f} s left in this stage"
        else:
            note = progress.message
        self._bars.update(self._task, description=progress.stage, completed=progress.percent, note=note)

    def __exit__(self, *exc) -> None:
        self._bars.__exit__(*exc)
