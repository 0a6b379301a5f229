"""`capmesh doc outline` and `capmesh doc write` against an in-process DocGen server with a fake LLM
(the CLI runs in a thread)."""

from __future__ import annotations

import asyncio
import io
import json

import docx
from typer.testing import CliRunner

from capmesh.cli.main import app
from capmesh.services.docgen.config import DocgenSettings
from capmesh.services.docgen.main import build_service
from capmesh.services.runtime.server import create_server
from tests.docgen.fakes import FakeLlm


async def test_outline_then_write_markdown_and_docx(tmp_path):
    running = await create_server(build_service(DocgenSettings(log_json=False), FakeLlm()))
    address = ["--address", f"127.0.0.1:{running.port}"]
    outline_file, markdown, word = tmp_path / "outline.json", tmp_path / "doc.md", tmp_path / "doc.docx"
    notes = tmp_path / "notes.txt"
    notes.write_text("facts", encoding="utf-8")
    runner = CliRunner()
    try:
        outlined = await asyncio.to_thread(
            runner.invoke, app, ["doc", "outline", "a guide", "-o", str(outline_file), "--max-sections", "3", *address]
        )
        written = await asyncio.to_thread(
            runner.invoke, app, ["doc", "write", str(outline_file), "-o", str(markdown), "-c", str(notes), *address]
        )
        as_word = await asyncio.to_thread(
            runner.invoke, app, ["doc", "write", str(outline_file), "-o", str(word), *address]
        )
    finally:
        await running.shutdown(grace_s=0)

    assert outlined.exit_code == 0, outlined.output
    outline = json.loads(outline_file.read_text(encoding="utf-8"))
    assert outline["title"] == "A Guide" and len(outline["nodes"]) == 3
    assert written.exit_code == 0, written.output
    assert "3 sections" in written.output and "1 references" in written.output
    text = markdown.read_text(encoding="utf-8")
    assert all(f"## {node['title']}\n" in text for node in outline["nodes"]) and "1. notes.txt" in text
    assert as_word.exit_code == 0, as_word.output
    paragraphs = [p.text for p in docx.Document(io.BytesIO(word.read_bytes())).paragraphs]
    assert paragraphs[0] == "A Guide" and "Intro" in paragraphs


def test_an_unknown_format_is_refused_before_any_call(tmp_path):
    outline = tmp_path / "outline.json"
    outline.write_text('{"title": "t", "nodes": [{"title": "a"}]}', encoding="utf-8")
    result = CliRunner().invoke(app, ["doc", "write", str(outline), "--format", "pdf", "--address", "127.0.0.1:1"])
    assert result.exit_code == 2 and "markdown or docx" in result.output
