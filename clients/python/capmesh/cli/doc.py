"""`capmesh doc`: an outline from a query, then a document from the outline, with live progress.

    capmesh doc outline "A short guide to sourdough baking" -o outline.json --max-sections 5
    capmesh doc write outline.json -o guide.md
    capmesh doc write outline.json -o guide.docx --format docx --context notes.txt

The outline file is the Outline message as JSON: {"title": ..., "nodes": [{"title", "summary", "children"}]};
edit it freely before writing. `write` shows one bar per section (the text received while the LLM
writes it) under an overall bar that steps as sections finish.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from capmesh.cli.options import TIMEOUT, Shared, address_option, with_options
from capmesh.cli.progress import StageProgress, report_failure, streamed_call

if TYPE_CHECKING:
    from collections.abc import Callable

    from capmesh.client.docgen import DocGenOptions
    from capmesh.common.v1.progress_pb2 import Progress

doc_app = typer.Typer(no_args_is_help=True, help="Documents: an outline from a query, a document from an outline.")


def register(app: typer.Typer) -> None:
    app.add_typer(doc_app, name="doc")


ADDRESS_OPTION = address_option("DocGen")

# The options both commands take, passed on to `_options` by name.
SHARED = (
    Shared(
        "context",
        list[Path],
        typer.Option(
            [], "--context", "-c", exists=True, dir_okay=False, help="A UTF-8 text file to draw on (repeatable)."
        ),
    ),
    Shared("model", str, typer.Option("", help="The LLM model; empty selects the service default.")),
    TIMEOUT,
)


def _options(
    language: str,
    on_progress: Callable[[Progress], None],
    context: list[Path],
    model: str,
    timeout: float | None,
) -> DocGenOptions:
    """The DocGenClient keywords `outline` and `write` share, from their command-line values."""
    from capmesh.client.docgen import DocGenOptions, context_artifact

    files = [context_artifact(path) for path in context]
    return DocGenOptions(context_files=files, language=language, model=model, timeout=timeout, on_progress=on_progress)


@doc_app.command("outline")
@with_options(*SHARED)
def outline(
    query: str = typer.Argument(..., help="What the document should be about."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the outline JSON here (default: stdout)."),
    max_sections: int = typer.Option(0, "--max-sections", help="Most top-level sections (0: the service default)."),
    max_depth: int = typer.Option(0, "--max-depth", help="Deepest nesting, 1 for none (0: the service default)."),
    language: str = typer.Option("", "--language", "-l", help="The outline's language (e.g. English, zh)."),
    address: str = ADDRESS_OPTION,
    **options: Any,
) -> None:
    """Query to outline: a title and at least two sections, as JSON."""
    from capmesh.client.docgen import DocGenClient, outline_to_json

    with streamed_call("doc outline", address) as (progress, channel):
        result = DocGenClient(channel).outline(
            query,
            max_sections=max_sections,
            max_depth=max_depth,
            **_options(language, progress.update, **options),
        )
    text = outline_to_json(result.outline) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"{output}: {result.outline.title!r}, {len(result.outline.nodes)} sections", err=True)


@doc_app.command("write")
@with_options(*SHARED)
def write(
    outline_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="The outline JSON."),
    output: Path = typer.Option(Path("doc.md"), "--output", "-o", help="Where to write the document."),
    doc_format: str = typer.Option("", "--format", "-f", help="markdown or docx (default: from -o's suffix)."),
    concurrency: int = typer.Option(0, "--concurrency", help="Sections written at once (0: the service default)."),
    language: str = typer.Option("", "--language", "-l", help="The document's language."),
    address: str = ADDRESS_OPTION,
    **options: Any,
) -> None:
    """Outline to document: sections written concurrently, fused, with references."""
    from capmesh.client import CapmeshClientError, sync_channel
    from capmesh.client.docgen import DocGenClient, document_format, outline_from_json

    try:
        plan = outline_from_json(outline_file.read_text(encoding="utf-8"))
        chosen = document_format(doc_format or ("docx" if output.suffix.lower() == ".docx" else "markdown"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        with SectionBars([node.title for node in plan.nodes]) as bars, sync_channel(address) as channel:
            document = DocGenClient(channel).write(
                plan,
                format=chosen,
                max_concurrent_sections=concurrency,
                on_section_text=bars.section_text,
                **_options(language, bars.update, **options),
            )
            bars.finish(document.result)
    except CapmeshClientError as exc:
        report_failure("doc write", exc)
    output.write_bytes(document.data)
    r = document.result
    typer.echo(
        f"{output}: {r.document.size_bytes} bytes ({r.document.mime_type}), {len(r.sections)} sections, "
        f"{sum(s.tokens for s in r.sections)} tokens, {len(r.references)} references, model {r.model}"
    )


class SectionBars(StageProgress):
    """The overall stage bar, and one bar per section counting the characters received so far."""

    def __init__(self, titles: list[str]) -> None:
        self._titles = titles

    def __enter__(self) -> SectionBars:
        super().__enter__()
        self._sections = [
            self._bars.add_task(f"{number}. {title[:40]}", total=None, note="")
            for number, title in enumerate(self._titles, start=1)
        ]
        self._chars = [0] * len(self._titles)
        return self

    def section_text(self, section: int, text: str) -> None:
        if 1 <= section <= len(self._sections):
            self._chars[section - 1] += len(text)
            self._bars.update(self._sections[section - 1], note=f"{self._chars[section - 1]} chars")

    def finish(self, result) -> None:
        for stats in result.sections:
            if 1 <= stats.index <= len(self._sections):
                self._bars.update(
                    self._sections[stats.index - 1],
                    total=1,
                    completed=1,
                    note=f"{stats.characters} chars, {stats.tokens} tokens, {stats.seconds:.1f} s",
                )
