"""DocGen service settings, read from `CAPMESH_DOCGEN_*` variables and CLI flags."""

from __future__ import annotations

from dataclasses import dataclass

from capmesh.services.docgen.outline import string_limits
from capmesh.services.runtime.settings import ServerSettings, check

ENV_PREFIX = "DOCGEN"


@dataclass(frozen=True)
class DocgenSettings(ServerSettings):
    # A call mostly waits on the LLM capability (no GPU here), so many may run at once.
    max_concurrency: int = 16
    default_model: str = ""  # "" lets the LLM service pick its default model
    default_max_sections: int = 6  # an outline's top-level sections when the request says 0
    max_sections: int = 20  # the most top-level sections an outline or a document may have
    default_max_depth: int = 2  # an outline's nesting when the request says 0 (1: no subsections)
    max_depth: int = 4
    max_children: int = 3  # the most subsections one outline section may have
    default_max_concurrent_sections: int = 4  # sections written at once when the request says 0
    max_concurrent_sections: int = 16
    max_query_chars: int = 4000
    max_context_files: int = 16
    context_max_chars: int = 12000  # context text put into one prompt; files beyond it are left out
    outline_max_tokens: int = 1024
    outline_attempts: int = 2  # LLM calls for an outline whose answer does not parse as one
    section_max_tokens: int = 512
    section_retries: int = 2  # extra attempts for a section whose LLM call failed retryably
    retry_backoff_s: float = 0.5  # the first retry's wait; it doubles per retry
    temperature: float = 0.7
    chunk_bytes: int = 256 * 1024  # largest piece of the document file sent in one message

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_sections >= 2, "max_sections", self.max_sections, "must be at least 2")
        check(
            2 <= self.default_max_sections <= self.max_sections,
            "default_max_sections",
            self.default_max_sections,
            f"must be between 2 and max_sections ({self.max_sections})",
        )
        check(self.max_depth >= 1, "max_depth", self.max_depth, "must be at least 1")
        check(
            1 <= self.default_max_depth <= self.max_depth,
            "default_max_depth",
            self.default_max_depth,
            f"must be between 1 and max_depth ({self.max_depth})",
        )
        check(self.max_children >= 1, "max_children", self.max_children, "must be at least 1")
        check(
            self.max_concurrent_sections >= 1,
            "max_concurrent_sections",
            self.max_concurrent_sections,
            "must be at least 1",
        )
        check(
            1 <= self.default_max_concurrent_sections <= self.max_concurrent_sections,
            "default_max_concurrent_sections",
            self.default_max_concurrent_sections,
            f"must be between 1 and max_concurrent_sections ({self.max_concurrent_sections})",
        )
        check(self.max_query_chars >= 1, "max_query_chars", self.max_query_chars, "must be at least 1")
        check(self.max_context_files >= 0, "max_context_files", self.max_context_files, "must be 0 or more")
        check(self.context_max_chars >= 0, "context_max_chars", self.context_max_chars, "must be 0 or more")
        check(self.outline_max_tokens >= 64, "outline_max_tokens", self.outline_max_tokens, "must be at least 64")
        for items, with_title, what in (
            (self.max_sections, True, "max_sections"),
            (self.max_children, False, "max_children"),
        ):
            check(
                string_limits(items, self.outline_max_tokens, with_title=with_title) is not None,
                "outline_max_tokens",
                self.outline_max_tokens,
                f"is too small for an outline answer of {what} ({items}) sections",
            )
        check(self.outline_attempts >= 1, "outline_attempts", self.outline_attempts, "must be at least 1")
        check(self.section_max_tokens >= 1, "section_max_tokens", self.section_max_tokens, "must be at least 1")
        check(self.section_retries >= 0, "section_retries", self.section_retries, "must be 0 or more")
        check(self.retry_backoff_s >= 0, "retry_backoff_s", self.retry_backoff_s, "must be 0 or more")
        check(0 <= self.temperature <= 2, "temperature", self.temperature, "must be between 0 and 2")
        check(
            64 * 1024 <= self.chunk_bytes <= 2 * 1024 * 1024,
            "chunk_bytes",
            self.chunk_bytes,
            "must be between 65536 and 2097152 (messages stay under 4 MiB)",
        )
