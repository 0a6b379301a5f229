"""The DocGen engine with a fake LLM: outlines and their limits, concurrent sections, cancellation,
retries, fusion, references and .docx files."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile

import docx
import pytest

from capmesh.services.docgen.config import DocgenSettings
from capmesh.services.docgen.domain import (
    ContextFile,
    DocumentFormat,
    DocumentRequest,
    DocumentResult,
    Outline,
    OutlineNode,
    OutlineRequest,
    OutlineResult,
    SectionText,
)
from capmesh.services.docgen.engine import DocGenEngine
from capmesh.services.docgen.outline import (
    parse_sections,
    parse_subsections,
    sections_schema,
    string_limits,
    subsections_schema,
)
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.chunks import FileChunk
from capmesh.services.runtime.errors import (
    PROMPT_TOO_LONG,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from capmesh.services.runtime.progress import ProgressUpdate
from capmesh.services.runtime.settings import SettingsError
from tests.docgen.fakes import FakeLlm


def settings(**overrides) -> DocgenSettings:
    values = {"retry_backoff_s": 0.0, "log_json": False, **overrides}
    return DocgenSettings(**values)


def six_sections() -> Outline:
    return Outline("Six", tuple(OutlineNode(f"Chapter {n}", f"about {n}") for n in range(1, 7)))


async def collect(events) -> list[object]:
    return [event async for event in events]


def document_bytes(events: list[object]) -> bytes:
    chunks = [e for e in events if isinstance(e, FileChunk)]
    assert [c.offset for c in chunks] == [sum(len(c.data) for c in chunks[:i]) for i in range(len(chunks))]
    return b"".join(c.data for c in chunks)


# ---- outlines --------------------------------------------------------------------------------


async def test_outline_sections_then_subsections_with_schema_prompts():
    llm = FakeLlm()
    engine = DocGenEngine(llm, settings(max_children=2))
    events = await collect(engine.generate_outline(OutlineRequest("write a guide", max_sections=5), CancelToken()))
    stages = [e.stage for e in events if isinstance(e, ProgressUpdate)]
    assert stages[0] == "analyzing" and "outlining" in stages and "expanding" in stages
    result = events[-1]
    assert isinstance(result, OutlineResult)
    assert result.outline.title == "A Guide"
    assert [n.title for n in result.outline.nodes] == ["Intro", "Method", "Results"]
    # the default depth is 2: subsections (cut to max_children) and no deeper
    assert all([c.title for c in n.children] == ["Sub 1", "Sub 2"] for n in result.outline.nodes)
    assert all(c.children == () for n in result.outline.nodes for c in n.children)
    assert result.attempts == 1 + 3
    schema = json.loads(llm.prompts[0].json_schema)
    assert schema["properties"]["nodes"]["minItems"] == 2 and schema["properties"]["nodes"]["maxItems"] == 5


@pytest.mark.parametrize(("depth", "calls"), [(1, 1), (3, 1 + 3 + 9)])
async def test_outline_depth_limits_the_levels_asked_for(depth: int, calls: int):
    llm = FakeLlm()
    events = await collect(
        DocGenEngine(llm, settings(max_children=3)).generate_outline(
            OutlineRequest("q", max_depth=depth), CancelToken()
        )
    )
    outline = events[-1].outline

    def deepest(nodes) -> int:
        return 1 + max((deepest(n.children) for n in nodes if n.children), default=0)

    assert deepest(outline.nodes) == depth and len(llm.prompts) == calls


def test_outline_answers_are_normalised_and_non_outlines_refused():
    answer = json.dumps({"title": "  Many\n lines ", "nodes": [{"title": f"T{n}"} for n in range(9)]})
    outline = parse_sections(answer, fallback_title="q", max_sections=4)
    assert outline is not None and outline.title == "Many lines" and len(outline.nodes) == 4
    answer = json.dumps({"title": " ", "nodes": [{"title": ""}, {"title": "\t"}, "junk"]})
    outline = parse_sections(answer, fallback_title="my query", max_sections=6)
    assert outline is not None and outline.title == "my query"
    assert [n.title for n in outline.nodes] == ["Section 1", "Section 2"]
    for bad in ("not json", "[]", json.dumps({"title": "x", "nodes": [{"title": "one"}]}), '{"title": "x"'):
        assert parse_sections(bad, fallback_title="q", max_sections=6) is None
    assert parse_subsections("nonsense", max_children=3) == ()


@pytest.mark.parametrize(("items", "max_tokens"), [(2, 256), (6, 1024), (20, 1024), (3, 384), (20, 4096)])
def test_the_longest_answer_a_schema_allows_fits_the_token_budget(items: int, max_tokens: int):
    """A random model fills every string and array to its bound; that answer must still fit."""
    limits = string_limits(items, max_tokens, with_title=True)
    assert limits is not None and limits.title >= 8
    schema = sections_schema(items, limits)
    item = {"title": "x" * limits.title, "summary": "x" * limits.summary}
    longest = json.dumps({"title": "x" * limits.title, "nodes": [item] * items})
    assert len(longest) <= max_tokens
    assert schema["properties"]["nodes"]["items"]["properties"]["title"]["maxLength"] == limits.title
    assert "$ref" not in json.dumps(schema)
    sub = subsections_schema(items, limits)
    assert sub["properties"]["nodes"]["maxItems"] == items and "minItems" not in sub["properties"]["nodes"]


def test_settings_refuse_a_token_budget_too_small_for_the_outline():
    with pytest.raises(SettingsError, match="outline_max_tokens"):
        settings(max_sections=20, outline_max_tokens=64)


async def test_outline_retries_an_unparsable_answer_then_fails_clearly():
    llm = FakeLlm(outline_answers=["nonsense", json.dumps({"title": "T", "nodes": [{"title": "a"}, {"title": "b"}]})])
    events = await collect(
        DocGenEngine(llm, settings()).generate_outline(OutlineRequest("q", max_depth=1), CancelToken())
    )
    result = events[-1]
    assert isinstance(result, OutlineResult) and result.attempts == 2 and len(result.outline.nodes) == 2

    llm = FakeLlm(outline_answers=["nonsense"])
    with pytest.raises(FailedPrecondition, match="response_format"):
        await collect(
            DocGenEngine(llm, settings(outline_attempts=2)).generate_outline(OutlineRequest("q"), CancelToken())
        )
    assert len(llm.prompts) == 2


async def test_outline_request_validation_names_every_bad_field():
    engine = DocGenEngine(FakeLlm(), settings())
    with pytest.raises(InvalidArgument) as caught:
        await collect(engine.generate_outline(OutlineRequest(" ", max_sections=1, max_depth=99), CancelToken()))
    assert {v.field for v in caught.value.violations} == {"query", "max_sections", "max_depth"}


# ---- documents -------------------------------------------------------------------------------


async def test_document_streams_sections_steps_and_a_fused_markdown_file():
    llm = FakeLlm(pieces=3)
    outline = six_sections()
    context = (ContextFile("notes.txt", "some notes"), ContextFile("big.txt", "x" * 50))
    engine = DocGenEngine(llm, settings(context_max_chars=20))
    events = await collect(engine.generate_document(DocumentRequest(outline, context=context), CancelToken()))

    stages = [e.stage for e in events if isinstance(e, ProgressUpdate)]
    assert list(dict.fromkeys(stages)) == ["writing", "references", "fusing"]
    steps = [e for e in events if isinstance(e, ProgressUpdate) and e.stage == "writing"]
    assert [e.step for e in steps] == list(range(0, 7)) and {e.total_steps for e in steps} == {6}
    texts = [e for e in events if isinstance(e, SectionText)]
    assert {t.index for t in texts} == set(range(1, 7))
    for index in range(1, 7):
        pieces = [t for t in texts if t.index == index]
        assert [p.offset for p in pieces] == [sum(len(p.text.encode()) for p in pieces[:i]) for i in range(3)]

    result = events[-1]
    assert isinstance(result, DocumentResult)
    data = document_bytes(events)
    assert result.document.size_bytes == len(data) and result.document.sha256 == hashlib.sha256(data).hexdigest()
    assert result.format is DocumentFormat.MARKDOWN and result.document.name == "six.md"
    markdown = data.decode()
    assert markdown.startswith("# Six\n")
    for node in outline.nodes:
        assert f"## {node.title}\n" in markdown
    assert markdown.index("Chapter 1") < markdown.index("Chapter 6") < markdown.index("## References")
    assert [(s.index, s.title, s.attempts, s.tokens) for s in result.sections] == [
        (n, f"Chapter {n}", 1, 3) for n in range(1, 7)
    ]
    # notes.txt fits the 20-character budget (every section used it); big.txt does not.
    assert [(r.number, r.name, r.sections) for r in result.references] == [
        (1, "notes.txt", (1, 2, 3, 4, 5, 6)),
        (2, "big.txt", ()),
    ]
    assert "1. notes.txt (sections 1, 2, 3, 4, 5, 6)" in markdown
    assert all("some notes" in p.user and "xxxxx" not in p.user for p in llm.prompts)


async def test_a_section_past_the_llms_window_is_asked_again_without_the_context_then_the_plans_detail():
    # Prompts of ~925 (One) and ~740 (Two) characters with everything; a window of 500 takes Two
    # without the context file, and One (whose long summary is in the plan too) with the plan's titles only.
    outline = Outline("Guide", (OutlineNode("One", "a " * 100), OutlineNode("Two", "short")))
    llm = FakeLlm(window_chars=500)
    request = DocumentRequest(outline, context=(ContextFile("notes.txt", "n" * 300),))
    events = await collect(DocGenEngine(llm, settings()).generate_document(request, CancelToken()))

    result = events[-1]
    assert isinstance(result, DocumentResult)
    assert [(s.index, s.attempts) for s in result.sections] == [(1, 3), (2, 2)]  # refused prompts count as calls
    answered = [p for p in llm.prompts if len(p.system) + len(p.user) <= 500]
    assert len(answered) == 2 and not any("nnnn" in p.user for p in answered)
    [one] = [p for p in answered if 'section "One"' in p.user]
    assert "- One\n- Two\n" in one.user  # the plan's titles, without the summaries
    assert [(r.name, r.sections) for r in result.references] == [("notes.txt", ())]  # no section used it


async def test_a_section_that_cannot_fit_the_llms_window_is_invalid_argument_naming_it():
    outline = Outline("Guide", (OutlineNode("One", "a " * 100),))
    with pytest.raises(InvalidArgument) as refused:
        await collect(
            DocGenEngine(FakeLlm(window_chars=100), settings()).generate_document(
                DocumentRequest(outline), CancelToken()
            )
        )
    assert refused.value.reason == PROMPT_TOO_LONG
    assert [v.field for v in refused.value.violations] == ["outline.nodes[0]"]
    assert "context window" in refused.value.violations[0].description


async def test_an_outline_query_past_the_llms_window_is_asked_again_without_the_context():
    llm = FakeLlm(window_chars=600)
    request = OutlineRequest("write a guide", context=(ContextFile("big.txt", "z" * 400),))
    events = await collect(DocGenEngine(llm, settings()).generate_outline(request, CancelToken()))
    assert isinstance(events[-1], OutlineResult) and events[-1].attempts == 2 + 3
    assert "zzzz" in llm.prompts[0].user and "zzzz" not in llm.prompts[1].user
    assert "write a guide" in llm.prompts[1].user


async def test_the_same_request_gives_the_same_document():
    outline = six_sections()
    first = await collect(
        DocGenEngine(FakeLlm(), settings()).generate_document(DocumentRequest(outline), CancelToken())
    )
    second = await collect(
        DocGenEngine(FakeLlm(), settings()).generate_document(DocumentRequest(outline), CancelToken())
    )
    assert document_bytes(first) == document_bytes(second)


@pytest.mark.parametrize("limit", [1, 2, 6])
async def test_concurrency_bound_is_honoured(limit: int):
    llm = FakeLlm(pieces=2, delay_s=0.01)
    engine = DocGenEngine(llm, settings())
    await collect(
        engine.generate_document(DocumentRequest(six_sections(), max_concurrent_sections=limit), CancelToken())
    )
    assert llm.max_in_flight == limit


async def test_default_concurrency_comes_from_the_settings():
    llm = FakeLlm(pieces=2, delay_s=0.01)
    await collect(
        DocGenEngine(llm, settings(default_max_concurrent_sections=3)).generate_document(
            DocumentRequest(six_sections()), CancelToken()
        )
    )
    assert llm.max_in_flight == 3


async def test_closing_the_stream_cancels_the_sections_in_flight():
    llm = FakeLlm(hang=True)
    events = DocGenEngine(llm, settings()).generate_document(
        DocumentRequest(six_sections(), max_concurrent_sections=3), CancelToken()
    )
    first = await events.__anext__()  # the "writing" progress; the sections are started
    assert isinstance(first, ProgressUpdate)
    consumer = asyncio.ensure_future(events.__anext__())
    await asyncio.wait_for(llm.started.wait(), 5)
    while llm.in_flight < 3:
        await asyncio.sleep(0)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    await events.aclose()
    assert llm.cancelled == 3 and llm.in_flight == 0
    assert len(llm.prompts) == 3  # no section started after the cancel


async def test_a_retryable_section_failure_is_retried():
    llm = FakeLlm(failures=[Unavailable("backend gone"), ResourceExhausted("busy", retry_after_s=0.0)])
    engine = DocGenEngine(llm, settings(section_retries=2))
    events = await collect(
        engine.generate_document(DocumentRequest(six_sections(), max_concurrent_sections=1), CancelToken())
    )
    result = events[-1]
    assert isinstance(result, DocumentResult)
    assert [s.attempts for s in result.sections] == [3, 1, 1, 1, 1, 1]


async def test_an_llm_that_stays_unavailable_fails_the_document_with_unavailable():
    llm = FakeLlm(failures=[Unavailable("no backend")] * 3)
    engine = DocGenEngine(llm, settings(section_retries=2))
    with pytest.raises(Unavailable) as caught:
        await collect(
            engine.generate_document(DocumentRequest(six_sections(), max_concurrent_sections=1), CancelToken())
        )
    assert caught.value.reason == "LLM_UNAVAILABLE" and "after 3 attempt(s)" in caught.value.message


async def test_a_non_retryable_failure_is_not_retried():
    llm = FakeLlm(failures=[NotFound("no such model")])
    with pytest.raises(NotFound):
        await collect(
            DocGenEngine(llm, settings(section_retries=3)).generate_document(
                DocumentRequest(six_sections(), max_concurrent_sections=1), CancelToken()
            )
        )
    assert sum('"Chapter 1"' in p.user for p in llm.prompts) == 1


async def test_the_callers_deadline_is_the_llm_calls_timeout():
    llm = FakeLlm()
    await collect(
        DocGenEngine(llm, settings()).generate_document(DocumentRequest(six_sections()), CancelToken.with_timeout(30))
    )
    assert all(t is not None and 0 < t <= 30 for t in llm.timeouts)


async def test_document_request_validation():
    engine = DocGenEngine(FakeLlm(), settings(max_concurrent_sections=4))
    bad = DocumentRequest(Outline("", (OutlineNode(""),)), max_concurrent_sections=9)
    with pytest.raises(InvalidArgument) as caught:
        await collect(engine.generate_document(bad, CancelToken()))
    assert {v.field for v in caught.value.violations} == {
        "outline.title",
        "outline.nodes[0].title",
        "max_concurrent_sections",
    }


async def test_docx_is_a_valid_word_document_with_every_title():
    outline = Outline("Report \x07", (OutlineNode("One"), OutlineNode("Two")))
    events = await collect(
        DocGenEngine(FakeLlm(), settings()).generate_document(
            DocumentRequest(outline, context=(ContextFile("a.txt", "ctx"),), format=DocumentFormat.DOCX),
            CancelToken(),
        )
    )
    result = events[-1]
    assert (
        isinstance(result, DocumentResult)
        and result.format is DocumentFormat.DOCX
        and result.document.name.endswith(".docx")
    )
    data = document_bytes(events)
    assert zipfile.is_zipfile(io.BytesIO(data))
    text = [p.text for p in docx.Document(io.BytesIO(data)).paragraphs]
    assert text[0] == "Report " and "One" in text and "Two" in text and "References" in text
    assert any(line.startswith("1. a.txt") for line in text)
