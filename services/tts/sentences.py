"""Splits text into sentences, the unit that TTS renders and streams.

A sentence ends at . ! ? … followed by whitespace, at the CJK full stops
。！？ (no space follows them), or at a blank line. Common abbreviations ("Dr.", "e.g.") and
decimals ("3.14") do not end a sentence. A sentence longer than `max_chars` is cut at the last
comma or space before the limit, so that no single piece delays the first audio for long.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "no",
        "fig",
        "inc",
        "ltd",
        "co",
        "mt",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)

# A Latin end mark (with any closing quotes/brackets) then whitespace; or a CJK end mark; or a blank line.
_BOUNDARY = re.compile(r"""(?<=[.!?…])["'”’)\]]*\s+|(?<=[。！？])["'”’」』）]*\s*|\n\s*\n""")

DEFAULT_MAX_CHARS = 300


def split_sentences(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Returns the non-empty sentences of `text`, in order, whitespace-trimmed."""
    pieces: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        candidate = text[start : match.start()]
        if _ends_with_abbreviation(candidate):
            continue
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    sentences = [" ".join(p.split()) for p in pieces]
    return [part for s in sentences if s for part in _cut_long(s, max_chars)]


def _ends_with_abbreviation(candidate: str) -> bool:
    if not candidate.endswith("."):
        return False
    words = candidate[:-1].split()
    return bool(words) and words[-1].lower().lstrip("(\"'") in _ABBREVIATIONS


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    parts: list[str] = []
    while len(sentence) > max_chars:
        window = sentence[:max_chars]
        cut = max(window.rfind(", "), window.rfind("、"), window.rfind("，"))
        if cut <= 0:
            cut = window.rfind(" ")
        cut = cut + 1 if cut > 0 else max_chars
        parts.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        parts.append(sentence)
    return parts
