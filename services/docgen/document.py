"""Fusing written sections into one document (Markdown or .docx), with its references.

References are simple and deterministic: one per context file, in the request's order, naming the
sections whose prompt carried that file (every section gets the same context, so a file that fit
into the prompt budget was used by every section, and a file that did not fit by none).
"""

from __future__ import annotations

import io

from capmesh.services.docgen.domain import DocumentFormat, Reference, WrittenSection

REFERENCES_HEADING = "References"


def references_for(names: list[str], used: list[bool], section_indexes: list[int]) -> tuple[Reference, ...]:
    return tuple(
        Reference(number=number, name=name, sections=tuple(section_indexes) if was_used else ())
        for number, (name, was_used) in enumerate(zip(names, used), start=1)
    )


def reference_line(reference: Reference) -> str:
    if not reference.sections:
        return f"{reference.name} (not used: beyond the context budget)"
    return f"{reference.name} (sections {', '.join(str(s) for s in reference.sections)})"


def to_markdown(title: str, sections: list[WrittenSection], references: tuple[Reference, ...]) -> str:
    parts = [f"# {title}\n"]
    for section in sections:
        parts.append(f"## {section.stats.title}\n\n{section.text.strip()}\n")
    if references:
        parts.append(f"## {REFERENCES_HEADING}\n\n" + "".join(f"{r.number}. {reference_line(r)}\n" for r in references))
    return "\n".join(parts)


def to_docx(title: str, sections: list[WrittenSection], references: tuple[Reference, ...]) -> bytes:
    import docx  # python-docx; imported here so the module loads without it for Markdown

    document = docx.Document()
    document.add_heading(title, level=0)
    for section in sections:
        document.add_heading(_printable(section.stats.title), level=1)
        for paragraph in section.text.strip().split("\n\n"):
            if paragraph.strip():
                document.add_paragraph(_printable(paragraph.strip()))
    if references:
        document.add_heading(REFERENCES_HEADING, level=1)
        for reference in references:
            document.add_paragraph(_printable(f"{reference.number}. {reference_line(reference)}"))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def render(
    format: DocumentFormat, title: str, sections: list[WrittenSection], references: tuple[Reference, ...]
) -> bytes:
    if format is DocumentFormat.DOCX:
        return to_docx(_printable(title), sections, references)
    return to_markdown(title, sections, references).encode()


def _printable(text: str) -> str:
    """XML 1.0 allows no control characters but tab and newline; a random model writes them."""
    return "".join(ch for ch in text if ch in "\t\n" or (ord(ch) >= 32 and not 0xD800 <= ord(ch) <= 0xDFFF))
