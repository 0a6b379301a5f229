"""The DocGen engine: an outline from a query, then a document from an outline, written by an LLM.

DocGen depends on the LLM capability, not on an engine: it reaches a model only through the small
`Llm` protocol below (in the service, `GatewayLlm` calls `capmesh.llm.v1.LlmService` through the
gateway, so continuous batching, routing and failover apply to every section). The engine is
async because it only waits on those calls; it never touches grpc.

Writing a document: every top-level node of the outline is one section, written by one LLM call
in its own asyncio task, at most `max_concurrent_sections` at a time (a semaphore). Tasks put
their events (text as it streams, the finished section, a failure) on one queue that the stream
reads, so text reaches the caller while the LLM writes it. A section whose call failed retryably
(UNAVAILABLE, RESOURCE_EXHAUSTED) is tried again after a doubling backoff, a bounded number of
times; any other failure, or running out of retries, fails the document with that error. When the
caller goes away (the stream is closed or its task cancelled) or the deadline passes, the `finally`
below cancels every section task, which cancels its in-flight LLM call. Every LLM call gets what
is left of the caller's deadline as its own timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, replace
from typing import Protocol

import structlog

from capmesh.services.docgen.config import DocgenSettings
from capmesh.services.docgen.document import references_for, render
from capmesh.services.docgen.domain import (
    ContextFile,
    DocumentRequest,
    DocumentResult,
    LlmAnswer,
    Outline,
    OutlineNode,
    OutlineRequest,
    OutlineResult,
    Prompt,
    SectionStats,
    SectionText,
    WrittenSection,
)
from capmesh.services.docgen.outline import (
    outline_text,
    parse_sections,
    parse_subsections,
    sections_schema,
    string_limits,
    subsections_schema,
)
from capmesh.services.runtime.cancellation import CancelToken
from capmesh.services.runtime.chunks import ProducedFile, file_chunks
from capmesh.services.runtime.errors import (
    PROMPT_TOO_LONG,
    CapmeshError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    Violations,
)
from capmesh.services.runtime.progress import ProgressUpdate, StepTimer

log = structlog.get_logger("capmesh.docgen")

STAGE_ANALYZING = "analyzing"
STAGE_OUTLINING = "outlining"
STAGE_EXPANDING = "expanding"
STAGE_WRITING = "writing"
STAGE_FUSING = "fusing"
STAGE_REFERENCES = "references"

# Retrying helps only when the LLM capability was busy or briefly unreachable.
RETRYABLE = (Unavailable, ResourceExhausted)

OnText = Callable[[str], None]


class Llm(Protocol):
    """What DocGen needs from the LLM capability: one streamed answer to a prompt.

    `complete` calls `on_text` with each piece of text as it arrives and returns the whole answer.
    It raises capmesh domain errors (Unavailable / ResourceExhausted when retrying may help), and
    cancelling the task that awaits it cancels the call.
    """

    async def complete(self, prompt: Prompt, on_text: OnText, timeout_s: float | None) -> LlmAnswer: ...

    async def close(self) -> None: ...


@dataclass
class _Expansion:
    """One outline's subsection calls: the outline so far, the prompt they vary, their shared
    concurrency bound, and the number of LLM calls made."""

    outline: Outline
    base: Prompt
    language: str
    max_depth: int
    cancel: CancelToken
    limit: asyncio.Semaphore
    calls: int = 0


@dataclass(frozen=True)
class _Done:
    section: WrittenSection


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class DocGenEngine:
    name = "llm-gateway"

    def __init__(self, llm: Llm, settings: DocgenSettings) -> None:
        self.llm = llm
        self.settings = settings

    async def close(self) -> None:
        await self.llm.close()

    # ---- validation -------------------------------------------------------------------------

    def validate_outline_request(self, request: OutlineRequest) -> None:
        s = self.settings
        v = Violations()
        v.check(bool(request.query.strip()), "query", "is required: what the document should be about")
        v.check(len(request.query) <= s.max_query_chars, "query", f"must be at most {s.max_query_chars} characters")
        v.check(
            request.max_sections == 0 or 2 <= request.max_sections <= s.max_sections,
            "max_sections",
            f"must be between 2 and {s.max_sections} (0 for the default of {s.default_max_sections})",
        )
        v.check(
            request.max_depth == 0 or 1 <= request.max_depth <= s.max_depth,
            "max_depth",
            f"must be between 1 and {s.max_depth} (0 for the default of {s.default_max_depth})",
        )
        v.raise_if_any()

    def validate_document_request(self, request: DocumentRequest) -> None:
        s = self.settings
        v = Violations()
        outline = request.outline
        v.check(bool(outline.title.strip()), "outline.title", "is required")
        v.check(bool(outline.nodes), "outline.nodes", "must have at least one section")
        v.check(len(outline.nodes) <= s.max_sections, "outline.nodes", f"must have at most {s.max_sections} sections")
        for index, node in enumerate(outline.nodes):
            v.check(bool(node.title.strip()), f"outline.nodes[{index}].title", "is required")
        v.check(
            0 <= request.max_concurrent_sections <= s.max_concurrent_sections,
            "max_concurrent_sections",
            f"must be between 1 and {s.max_concurrent_sections} "
            f"(0 for the default of {s.default_max_concurrent_sections})",
        )
        v.raise_if_any()

    # ---- outline ----------------------------------------------------------------------------

    async def generate_outline(self, request: OutlineRequest, cancel: CancelToken) -> AsyncGenerator[object, None]:
        """Yields ProgressUpdate events, then one OutlineResult: the title and top-level sections
        from one LLM call, then each section's subsections from one call each, level by level."""
        self.validate_outline_request(request)
        s = self.settings
        max_sections = request.max_sections or s.default_max_sections
        max_depth = request.max_depth or s.default_max_depth
        yield ProgressUpdate(STAGE_ANALYZING, 5.0, f"reading the query and {len(request.context)} context file(s)")
        context, _ = self._context_block(request.context)
        limits = string_limits(max_sections, s.outline_max_tokens, with_title=True)
        assert limits is not None  # the settings check that the largest outline fits
        prompt = Prompt(
            system=(
                "You plan documents. Answer with JSON only: the document's title and its top-level "
                f"sections (2 to {max_sections}), each with a title and a one-sentence summary."
                + _language_rule(request.language)
            ),
            user=f"Plan a document for this request:\n{request.query.strip()}" + context,
            model=request.model or s.default_model,
            max_tokens=s.outline_max_tokens,
            temperature=s.temperature,
            json_schema=json.dumps(sections_schema(max_sections, limits)),
        )
        # A query with context files longer than the LLM's window is asked again without them.
        prompts = [prompt, replace(prompt, user=f"Plan a document for this request:\n{request.query.strip()}")]
        too_long = FieldViolation("query", "is longer than the LLM's context window")
        calls = 0
        outline: Outline | None = None
        answer: LlmAnswer | None = None
        for attempt in range(1, s.outline_attempts + 1):
            yield ProgressUpdate(
                STAGE_OUTLINING, 10.0, f"asking the LLM for the sections (attempt {attempt} of {s.outline_attempts})"
            )
            answer, took, prompt = await self._call_fitting(prompts, too_long, _ignore_text, cancel)
            prompts = [prompt]  # the next attempt starts from the prompt that fitted
            calls += took
            outline = parse_sections(answer.text, fallback_title=request.query, max_sections=max_sections)
            if outline is not None:
                break
            log.warning("docgen.outline_unparsable", attempt=attempt, chars=len(answer.text))
        if outline is None or answer is None:
            raise FailedPrecondition(
                f"the LLM did not answer with an outline (JSON with a title and at least 2 sections) in "
                f"{s.outline_attempts} attempt(s); the LLM service must enforce response_format json_schema",
                reason="OUTLINE_UNPARSABLE",
            )
        if max_depth > 1:
            yield ProgressUpdate(
                STAGE_EXPANDING, 40.0, f"asking the LLM for the subsections of {len(outline.nodes)} sections"
            )
            job = _Expansion(
                outline,
                prompt,
                request.language,
                max_depth,
                cancel,
                asyncio.Semaphore(s.default_max_concurrent_sections),
            )
            outline = Outline(outline.title, await self._expand_all(job, outline.nodes, 2))
            calls += job.calls
        yield ProgressUpdate(STAGE_OUTLINING, 100.0, f"{len(outline.nodes)} sections")
        yield OutlineResult(outline=outline, model=answer.model, attempts=calls)

    async def _expand_all(self, job: _Expansion, nodes: tuple[OutlineNode, ...], depth: int) -> tuple[OutlineNode, ...]:
        """`nodes` with their subsections down to the outline's depth, asked concurrently (a
        TaskGroup, so one failure, or the caller leaving, cancels the rest)."""
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._expand(job, node, depth)) for node in nodes]
        return tuple(task.result() for task in tasks)

    async def _expand(self, job: _Expansion, node: OutlineNode, depth: int) -> OutlineNode:
        s = self.settings
        limits = string_limits(s.max_children, s.outline_max_tokens, with_title=False)
        assert limits is not None  # the settings check that the largest list fits
        prompt = replace(
            job.base,
            system=(
                f"You plan documents. Answer with JSON only: the subsections (0 to {s.max_children}) of one "
                "section, each with a title and a one-sentence summary." + _language_rule(job.language)
            ),
            json_schema=json.dumps(subsections_schema(s.max_children, limits)),
        )
        ask = f'List the subsections of "{node.title}".'
        # The whole plan, then the top-level titles only, then the section alone: the first that fits.
        prompts = [
            replace(prompt, user=f"The document's plan:\n{outline_text(job.outline, brief)}\n\n{ask}")
            for brief in (False, True)
        ] + [replace(prompt, user=ask)]
        too_long = FieldViolation("query", "leads to an outline too long for the LLM's context window")
        async with job.limit:
            answer, took, _ = await self._call_fitting(prompts, too_long, _ignore_text, job.cancel)
        job.calls += took
        children = parse_subsections(answer.text, max_children=s.max_children)
        if depth < job.max_depth and children:
            children = await self._expand_all(job, children, depth + 1)
        return OutlineNode(node.title, node.summary, children)

    # ---- document ---------------------------------------------------------------------------

    async def generate_document(self, request: DocumentRequest, cancel: CancelToken) -> AsyncGenerator[object, None]:
        """Yields ProgressUpdate and SectionText events while the sections are written, then
        FileChunk pieces of the fused file, then one DocumentResult."""
        self.validate_document_request(request)
        s = self.settings
        outline = request.outline
        total = len(outline.nodes)
        context, used = self._context_block(request.context)
        model = request.model or s.default_model
        limit = asyncio.Semaphore(request.max_concurrent_sections or s.default_max_concurrent_sections)
        queue: asyncio.Queue[object] = asyncio.Queue()

        async def write(index: int, node: OutlineNode) -> None:
            try:
                async with limit:
                    section = await self._write_section(
                        index, node, outline, context, model, request.language, cancel, queue.put_nowait
                    )
                queue.put_nowait(_Done(section))
            except Exception as exc:  # delivered to the stream, which raises it
                queue.put_nowait(_Failed(exc))

        yield ProgressUpdate(STAGE_WRITING, 0.0, f"writing {total} sections", step=0, total_steps=total)
        timer = StepTimer(total)
        tasks = [asyncio.create_task(write(index, node)) for index, node in enumerate(outline.nodes, start=1)]
        written: dict[int, WrittenSection] = {}
        try:
            while len(written) < total:
                event = await queue.get()
                if isinstance(event, _Failed):
                    raise event.error
                if isinstance(event, _Done):
                    written[event.section.stats.index] = event.section
                    yield ProgressUpdate(
                        STAGE_WRITING,
                        90.0 * len(written) / total,
                        f"section {event.section.stats.index} written: {event.section.stats.title}",
                        step=len(written),
                        total_steps=total,
                        eta_seconds=timer.eta_after(len(written)),
                    )
                else:
                    yield event
        finally:
            # On success every task has ended; on failure or when the caller left, this cancels the
            # sections still writing, and with them their LLM calls.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        sections = [written[index] for index in sorted(written)]
        references = references_for(
            [f.name for f in request.context], used, [s.stats.index for s in sections if s.used_context]
        )
        yield ProgressUpdate(STAGE_REFERENCES, 92.0, f"{len(references)} reference(s) from the context files")
        yield ProgressUpdate(STAGE_FUSING, 96.0, f"fusing {total} sections into one {request.format.value} document")
        data = await asyncio.to_thread(render, request.format, outline.title, sections, references)
        for chunk in file_chunks(data, s.chunk_bytes):
            yield chunk
        yield DocumentResult(
            document=ProducedFile.of(
                data, request.format.mime_type, name=f"{_slug(outline.title)}.{request.format.extension}"
            ),
            format=request.format,
            sections=tuple(section.stats for section in sections),
            references=references,
            model=next((section.model for section in sections if section.model), model),
        )

    async def _write_section(
        self,
        index: int,
        node: OutlineNode,
        outline: Outline,
        context: str,
        model: str,
        language: str,
        cancel: CancelToken,
        emit: Callable[[object], None],
    ) -> WrittenSection:
        subsections = "".join(f"\n- {child.title}" for child in node.children)
        section = (
            f'Write the section "{node.title}".'
            + (f"\nIt should say: {node.summary}" if node.summary else "")
            + (f"\nIts subsections:{subsections}" if subsections else "")
        )
        plan, brief_plan = (f"The document's plan:\n{outline_text(outline, brief)}\n\n" for brief in (False, True))
        base = Prompt(
            system=(
                "You write one section of a document, as Markdown prose without the section's own heading. "
                "Cover its subsections in order." + _language_rule(language)
            ),
            user="",
            model=model,
            max_tokens=self.settings.section_max_tokens,
            temperature=self.settings.temperature,
        )
        # Longest first; for a small context window, the context files go first, then the plan's detail.
        prompts = [
            replace(base, user=user)
            for user in (plan + section + context, plan + section, brief_plan + section, section)
        ]
        too_long = FieldViolation(
            f"outline.nodes[{index - 1}]", "is longer than the LLM's context window, even without the plan"
        )
        started = time.monotonic()
        offset = 0
        attempt = 0

        def on_text(text: str) -> None:
            nonlocal offset
            emit(SectionText(index=index, offset=offset, text=text, attempt=attempt))
            offset += len(text.encode())

        def on_attempt(number: int) -> None:
            nonlocal attempt
            attempt = number

        answer, attempts, prompt = await self._call_fitting(prompts, too_long, on_text, cancel, on_attempt)
        stats = SectionStats(
            index=index,
            title=node.title,
            characters=len(answer.text),
            tokens=answer.tokens,
            seconds=time.monotonic() - started,
            attempts=attempts,
        )
        return WrittenSection(
            stats=stats, text=answer.text, model=answer.model, used_context=bool(context) and prompt == prompts[0]
        )

    async def _call(
        self,
        prompt: Prompt,
        on_text: OnText,
        cancel: CancelToken,
        on_attempt: Callable[[int], None] | None = None,
    ) -> tuple[LlmAnswer, int]:
        """The answer and the number of calls it took; a retryable failure is tried again after a
        doubling backoff, at most `section_retries` times and never past the caller's deadline."""
        retries = self.settings.section_retries
        for attempt in range(retries + 1):
            if on_attempt is not None:
                on_attempt(attempt)
            remaining = cancel.time_remaining()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded("the deadline passed before the LLM answered")
            try:
                return await self.llm.complete(prompt, on_text, remaining), attempt + 1
            except RETRYABLE as exc:
                if attempt == retries:
                    raise _unavailable(exc, attempt + 1) from exc
                delay = max(exc.retry_after_s or 0.0, self.settings.retry_backoff_s * 2**attempt)
                remaining = cancel.time_remaining()
                if remaining is not None and delay >= remaining:
                    raise _unavailable(exc, attempt + 1) from exc
                log.info("docgen.llm_retry", attempt=attempt + 1, delay_s=delay, error=exc.message)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _call_fitting(
        self,
        prompts: list[Prompt],
        too_long: FieldViolation,
        on_text: OnText,
        cancel: CancelToken,
        on_attempt: Callable[[int], None] | None = None,
    ) -> tuple[LlmAnswer, int, Prompt]:
        """`_call` with the first of `prompts` (longest first) that fits the LLM's context window:
        the answer, the calls it took and the prompt that was answered. The LLM refuses a prompt
        longer than its window (PROMPT_TOO_LONG) before any token, so the next one is asked; when
        even the last is too long, the caller's request is: INVALID_ARGUMENT on `too_long`."""
        calls = 0
        for prompt in _distinct(prompts):
            try:
                answer, took = await self._call(prompt, on_text, cancel, on_attempt)
            except InvalidArgument as exc:
                if exc.reason != PROMPT_TOO_LONG:
                    raise
                calls += 1
                log.info("docgen.prompt_too_long", chars=len(prompt.system) + len(prompt.user), error=exc.message)
                failure = exc
                continue
            return answer, calls + took, prompt
        raise InvalidArgument(
            [FieldViolation(too_long.field, f"{too_long.description}: {failure.message}")], reason=PROMPT_TOO_LONG
        ) from failure

    def _context_block(self, files: tuple[ContextFile, ...]) -> tuple[str, list[bool]]:
        """The context files as prompt text within `context_max_chars`, and which files fit."""
        budget = self.settings.context_max_chars
        parts: list[str] = []
        used: list[bool] = []
        for number, file in enumerate(files, start=1):
            fits = 0 < len(file.text) <= budget
            used.append(fits)
            if fits:
                parts.append(f"\n\n[{number}] {file.name}:\n{file.text}")
                budget -= len(file.text)
        return ("\n\nContext files:" + "".join(parts)) if parts else "", used


def _distinct(prompts: list[Prompt]) -> list[Prompt]:
    """`prompts` without repeats (a shorter form that came out the same as a longer one)."""
    return [prompt for number, prompt in enumerate(prompts) if prompt not in prompts[:number]]


def _unavailable(exc: CapmeshError, attempts: int) -> CapmeshError:
    """The error that fails the call once retries are spent: UNAVAILABLE naming the LLM capability."""
    if isinstance(exc, Unavailable):
        return Unavailable(
            f"the LLM capability is unavailable after {attempts} attempt(s): {exc.message}",
            reason="LLM_UNAVAILABLE",
            retry_after_s=exc.retry_after_s,
        )
    return exc


def _ignore_text(_text: str) -> None:
    """Outline answers are parsed whole; their streamed text is not shown."""


def _language_rule(language: str) -> str:
    return f" Write in {language.strip()}." if language.strip() else ""


def _slug(title: str) -> str:
    slug = re.sub(r"[^\w]+", "-", title.lower(), flags=re.UNICODE).strip("-")
    return slug[:60] or "document"
