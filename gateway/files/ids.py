"""File ids: opaque, unguessable, and strictly shaped so that none can name a path outside the store."""

from __future__ import annotations

import re
import secrets

from capmesh.services.runtime.errors import InvalidArgument

# token_urlsafe(24) gives 32 characters of [A-Za-z0-9_-]: 192 random bits, no dots, no slashes.
_ID_BYTES = 24
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")


def new_file_id() -> str:
    """A fresh id; never one starting with '-', which command lines would read as an option."""
    while True:
        file_id = secrets.token_urlsafe(_ID_BYTES)
        if not file_id.startswith("-"):
            return file_id


def validate_file_id(file_id: str, field: str = "file_id") -> str:
    """Returns the id unchanged, or raises INVALID_ARGUMENT for anything that is not an id we issue."""
    if not _ID_PATTERN.fullmatch(file_id or ""):
        raise InvalidArgument.single(
            field, "is not a valid file id (32 characters of A-Z, a-z, 0-9, '_' and '-')", reason="INVALID_FILE_ID"
        )
    return file_id
