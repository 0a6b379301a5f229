"""Media-type detection from a file's first bytes (magic numbers), falling back to the declared type."""

from __future__ import annotations

import json

HEAD_BYTES = 4096  # enough for every signature below and a JSON/text sniff

OCTET_STREAM = "application/octet-stream"


def _magic(head: bytes) -> str:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        return "audio/mp4" if head[8:11] == b"M4A" else "video/mp4"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    return ""


def _text_kind(head: bytes, complete: bool) -> str:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the head is still text.
        if complete or exc.start < len(head) - 3:
            return ""
        text = head[: exc.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return ""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        if not complete:
            return "application/json"
        try:
            json.loads(text)
            return "application/json"
        except ValueError:
            pass
    return "text/plain; charset=utf-8"


def detect_mime_type(head: bytes, declared: str = "", *, complete: bool = False) -> str:
    """The type the bytes say they are; else the declared type; else JSON or text; else octet-stream.

    `complete` tells that `head` is the whole file (JSON is then parsed, not only sniffed).
    """
    return _magic(head) or declared.strip() or (_text_kind(head, complete) if head else "") or OCTET_STREAM
