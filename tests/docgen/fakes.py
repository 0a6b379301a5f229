"""A fake LLM for DocGen tests: answers by a script, records concurrency, can fail or hang on cue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from capmesh.services.docgen.domain import LlmAnswer, Prompt
from capmesh.services.docgen.engine import OnText
from capmesh.services.runtime.errors import PROMPT_TOO_LONG, CapmeshError, InvalidArgument

OUTLINE = {
    "title": "A Guide",
    "nodes": [
        {"title": "Intro", "summary": "why"},
        {"title": "Method", "summary": "how"},
        {"title": "Results", "summary": "what"},
    ],
}
SUBSECTIONS = {"nodes": [{"title": f"Sub {n}", "summary": ""} for n in range(1, 6)]}


@dataclass
class FakeLlm:
    """Section prompts of an outline (a JSON Schema with a title) get `outline_answers` in turn (the
    last one repeats), subsection prompts (a schema without) five subsections;
    section prompts get a deterministic text in `pieces` deltas, after `delay_s` per delta. `failures`
    are raised, one per call, before answering; `hang` makes section calls wait until cancelled;
    a prompt longer than `window_chars` (system and user message) is refused as the LLM refuses a
    prompt past its context window."""

    outline_answers: list[str] = field(default_factory=lambda: [json.dumps(OUTLINE)])
    pieces: int = 3
    delay_s: float = 0.0
    failures: list[CapmeshError] = field(default_factory=list)
    hang: bool = False
    prompts: list[Prompt] = field(default_factory=list)
    timeouts: list[float | None] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    on_call: Callable[[Prompt], None] | None = None
    closed: bool = False
    window_chars: int | None = None

    async def complete(self, prompt: Prompt, on_text: OnText, timeout_s: float | None) -> LlmAnswer:
        self.prompts.append(prompt)
        self.timeouts.append(timeout_s)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.started.set()
        try:
            if self.failures:
                raise self.failures.pop(0)
            if self.window_chars is not None and len(prompt.system) + len(prompt.user) > self.window_chars:
                raise InvalidArgument.single("messages", "the prompt is too long", reason=PROMPT_TOO_LONG)
            if prompt.json_schema and "title" not in json.loads(prompt.json_schema)["properties"]:
                return LlmAnswer(json.dumps(SUBSECTIONS), tokens=10, model="fake")
            if prompt.json_schema:
                index = min(len(self.section_prompts()) - 1, len(self.outline_answers) - 1)
                return LlmAnswer(self.outline_answers[index], tokens=10, model="fake")
            if self.hang:
                await asyncio.Event().wait()
            text = ""
            for n in range(self.pieces):
                await asyncio.sleep(self.delay_s)
                piece = f"Part {n} of a section. "
                on_text(piece)
                text += piece
            return LlmAnswer(text, tokens=self.pieces, model="fake")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    def section_prompts(self) -> list[Prompt]:
        return [p for p in self.prompts if p.json_schema and "title" in json.loads(p.json_schema)["properties"]]

    async def close(self) -> None:
        self.closed = True
