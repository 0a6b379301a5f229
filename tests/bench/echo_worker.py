"""A benchmark worker for tests/bench: doubles `x`, fails on `fail`."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.processes import serve_requests


async def _double(request: dict[str, Any]) -> dict[str, Any]:
    if "fail" in request:
        raise ValueError("asked to fail")
    print("a library's stray line on stdout", flush=True)  # the protocol must not mistake it for a reply
    return {"double": 2 * request["x"]}


if __name__ == "__main__":
    asyncio.run(serve_requests(_double))
