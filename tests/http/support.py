"""What the HTTP tests share: an event loop in a background thread that runs the servers (so the
tests themselves are plain synchronous clients: httpx, the openai package, schemathesis,
Chromium), and the mesh they call.

The mesh is the real thing: `start_gateway` (registry, router, proxy, files, jobs and the HTTP app
under test) with every capability's real service registered to it, on small limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import struct
import threading
import time
import zlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx

from capmesh.gateway.v1 import registry_service_pb2, registry_service_pb2_grpc
from capmesh.services.runtime.server import RunningServer, create_server


class BackgroundLoop:
    """An asyncio loop running in a daemon thread; `run(coro)` waits for a result from it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="http-tests-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def tiny_png(width: int, height: int, shade: int) -> bytes:
    """A valid greyscale PNG of one shade (enough for file validity checks)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([shade % 256]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------------- the mesh

# Small limits, so that generated requests (schemathesis) stay quick on a CPU.
SMALL_LIMITS = {
    "imagegen": {"max_width": 64, "max_height": 64, "max_steps": 3, "max_images": 2},
    "videogen": {"max_width": 64, "max_height": 64, "max_frames": 8, "max_steps": 2},
    "talkinghead": {"max_frames": 16, "max_audio_s": 3.0, "max_steps": 2, "default_size": 64},
    "tts": {"max_text_chars": 400},
    "docgen": {
        "max_sections": 4,
        "default_max_sections": 4,
        "outline_max_tokens": 256,
        "outline_attempts": 1,  # one LLM call per outline keeps generated requests quick
        "section_max_tokens": 8,
    },
}


def real_service(capability: str, **overrides):
    """`build_service` of a capability's service module, on the small limits it knows."""
    module = importlib.import_module(f"capmesh.services.{capability}.main")
    known = {f.name for f in dataclasses.fields(module.Settings)}
    limits = {k: v for k, v in SMALL_LIMITS.get(capability, {}).items() if k in known}
    return module.build_service(module.Settings(**limits, **overrides))


@dataclass
class Mesh:
    gateway: Any  # RunningGateway
    backends: list[RunningServer] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return self.gateway.http_url

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.gateway.grpc_port}"

    async def stop(self) -> None:
        for backend in self.backends:
            await backend.shutdown(grace_s=0)
        await self.gateway.stop(grace_s=0)


async def wait_available(
    grpc_address: str, capabilities: set[str], timeout_s: float = 60.0, metadata: tuple[tuple[str, str], ...] = ()
) -> None:
    """Polls the registry until each capability has an AVAILABLE backend."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        while True:
            view = await stub.ListCapabilities(registry_service_pb2.ListCapabilitiesRequest(), metadata=metadata)
            ready = {c.capability for c in view.capabilities if c.state == registry_service_pb2.BACKEND_STATE_AVAILABLE}
            if capabilities <= ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"capabilities not available: {capabilities - ready}; view: {view}")
            await asyncio.sleep(0.05)


async def start_mesh(
    settings,
    capabilities=("tts", "llm", "imagegen", "videogen", "talkinghead", "docgen"),
    *,
    backend_settings: dict[str, Any] | None = None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Mesh:
    """The gateway and the capabilities' services; `backend_settings` adds to every service's
    settings (a credential), `metadata` goes with the registry polls (an API key)."""
    from capmesh.gateway.server.app import start_gateway

    running = await start_gateway(settings)
    mesh = Mesh(running)
    backend = {"port": 0, "gateway": mesh.grpc_address, "grace_period_s": 0, **(backend_settings or {})}
    for capability in capabilities:
        mesh.backends.append(await create_server(real_service(capability, **backend)))
    await wait_available(mesh.grpc_address, set(capabilities), metadata=metadata)
    return mesh


def sse_events(text: str) -> list[dict]:
    """Parses an SSE body into events: {"id", "event", "data"} (comments dropped)."""
    events = []
    for block in text.split("\n\n"):
        event: dict = {"id": None, "event": "message", "data": []}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                event["data"].append(value)
            elif name in ("id", "event"):
                event[name] = value
        if event["data"]:
            event["data"] = "\n".join(event["data"])
            events.append(event)
    return events


def client(base_url: str, **kwargs) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=60, **kwargs)
