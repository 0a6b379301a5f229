"""A file an engine produces (an image, a video, a document): its pieces, streamed as they are
ready, and its description, sent with the result.

Engines emit a finished file as `FileChunk` events, at most a setting's `chunk_bytes` each, so that
no stream message nears gRPC's message limit and the caller's first bytes leave before the last are
encoded. Every capability's servicer turns them into the one chunk message, `common.v1.DataChunk`,
and a result's `ProducedFile` into the one description, `common.v1.Artifact`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK_BYTES = 1024 * 1024  # streamed payload pieces stay far below the 4 MiB message limit


@dataclass(frozen=True)
class FileChunk:
    """A piece of file `index` (0 for results with one file); `offset` is its position in that file."""

    data: bytes
    offset: int
    index: int = 0


@dataclass(frozen=True)
class ProducedFile:
    """What the caller checks the received chunks against: the type, the size and the SHA-256 of
    the whole file, and a suggested file name ("" for none)."""

    mime_type: str
    size_bytes: int
    sha256: str
    name: str = ""

    @classmethod
    def of(cls, data: bytes, mime_type: str, name: str = "") -> ProducedFile:
        return cls(mime_type, len(data), hashlib.sha256(data).hexdigest(), name)


def file_chunks(data: bytes, size: int = CHUNK_BYTES, index: int = 0) -> Iterator[FileChunk]:
    """`data` as FileChunks of at most `size` bytes, in order."""
    for offset in range(0, len(data), size):
        yield FileChunk(data[offset : offset + size], offset, index)
