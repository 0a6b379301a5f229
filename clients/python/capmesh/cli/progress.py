"""Live progress and failure reporting for the commands that stream a generation (image, video, talk, tts)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer


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
