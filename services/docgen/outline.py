"""The outline's JSON Schemas for constrained decoding, and turning the LLM's JSON into outline nodes.

An outline is asked for breadth first: one call for the title and the top-level sections (their
titles and summaries), then one call per section for its subsections, level by level down to the
request's depth. Each call's schema is flat (no nesting, no recursion) and sized so that even an
answer that fills every string and array to its bound fits in the call's token budget: a grammar
engine that enforces it (the LLM service's `response_format`) therefore makes even a random-weight
model, which writes every string to its maximum length, end with complete JSON. Under constrained
decoding every token is at least one character of the answer, so characters bound tokens; the
string lengths shrink when many sections must share the budget.

Parsing still enforces the limits itself and normalises what a schema cannot say, so the outline is
usable whatever the LLM wrote: titles become one trimmed line, and a blank title becomes
"Section N" (the document's: the query).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from capmesh.services.docgen.domain import Outline, OutlineNode

MAX_TITLE_CHARS = 80
MAX_SUMMARY_CHARS = 160
MIN_TITLE_CHARS = 8
MIN_SECTIONS = 2
BUDGET_SHARE = 0.9  # of the token budget the worst-case answer may use
# Compact JSON with ", " and ": " separators: the characters one item or the whole answer adds
# besides its strings: `{"title": "", "summary": ""}, ` and `{"title": "", "nodes": []}`.
ITEM_OVERHEAD = len('{"title": "", "summary": ""}, ')
ANSWER_OVERHEAD = len('{"title": "", "nodes": []}')

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class StringLimits:
    title: int
    summary: int


def string_limits(items: int, max_tokens: int, *, with_title: bool) -> StringLimits | None:
    """The longest title and summary that let `items` items (and the document title) fit in
    `max_tokens`; None when even the shortest titles do not fit."""
    budget = int(max_tokens * BUDGET_SHARE) - ANSWER_OVERHEAD - items * ITEM_OVERHEAD
    per_item = budget // (items + (1 if with_title else 0))
    if per_item < MIN_TITLE_CHARS:
        return None
    title = min(MAX_TITLE_CHARS, max(MIN_TITLE_CHARS, per_item // 3))
    return StringLimits(title=title, summary=min(MAX_SUMMARY_CHARS, per_item - title))


def _item(limits: StringLimits) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": limits.title},
            "summary": {"type": "string", "maxLength": limits.summary},
        },
        "required": ["title", "summary"],
        "additionalProperties": False,
    }


def sections_schema(max_sections: int, limits: StringLimits) -> dict[str, Any]:
    """{"title": str, "nodes": [{"title", "summary"}, ...]} with 2..max_sections nodes."""
    return {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": limits.title},
            "nodes": {"type": "array", "minItems": MIN_SECTIONS, "maxItems": max_sections, "items": _item(limits)},
        },
        "required": ["title", "nodes"],
        "additionalProperties": False,
    }


def subsections_schema(max_children: int, limits: StringLimits) -> dict[str, Any]:
    """{"nodes": [{"title", "summary"}, ...]} with 0..max_children nodes."""
    return {
        "type": "object",
        "properties": {"nodes": {"type": "array", "maxItems": max_children, "items": _item(limits)}},
        "required": ["nodes"],
        "additionalProperties": False,
    }


def one_line(text: str, limit: int) -> str:
    return _SPACE.sub(" ", text).strip()[:limit].strip()


def _answer(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("nodes"), list) else None


def parse_items(items: list[Any], limit: int) -> tuple[OutlineNode, ...]:
    """Up to `limit` nodes (without children) from the answer's list; non-objects are skipped."""
    nodes: list[OutlineNode] = []
    for item in items:
        if len(nodes) == limit:
            break
        if isinstance(item, dict):
            nodes.append(
                OutlineNode(
                    title=one_line(str(item.get("title") or ""), MAX_TITLE_CHARS) or f"Section {len(nodes) + 1}",
                    summary=one_line(str(item.get("summary") or ""), MAX_SUMMARY_CHARS),
                )
            )
    return tuple(nodes)


def parse_sections(text: str, *, fallback_title: str, max_sections: int) -> Outline | None:
    """The title and top-level sections in the LLM's answer; None when the answer is not one (no
    JSON object with a list of at least two sections)."""
    data = _answer(text)
    if data is None:
        return None
    nodes = parse_items(data["nodes"], max_sections)
    if len(nodes) < MIN_SECTIONS:
        return None
    title = one_line(str(data.get("title") or ""), MAX_TITLE_CHARS) or one_line(fallback_title, MAX_TITLE_CHARS)
    return Outline(title=title or "Untitled", nodes=nodes)


def parse_subsections(text: str, *, max_children: int) -> tuple[OutlineNode, ...]:
    """The subsections in the LLM's answer; none when the answer is not a list of them."""
    data = _answer(text)
    return parse_items(data["nodes"], max_children) if data is not None else ()


def outline_text(outline: Outline, brief: bool = False) -> str:
    """The outline as an indented list of titles (and summaries), for prompts; `brief`: the title
    and the top-level section titles only (a plan that fits a smaller context window)."""
    lines = [outline.title]

    def add(nodes: tuple[OutlineNode, ...], indent: int) -> None:
        for node in nodes:
            summary = f": {node.summary}" if node.summary and not brief else ""
            lines.append(f"{'  ' * indent}- {node.title}{summary}")
            if not brief:
                add(node.children, indent + 1)

    add(outline.nodes, 0)
    return "\n".join(lines)
