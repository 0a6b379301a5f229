"""What the HTTP tests share: an event loop in a background thread that runs the servers (so the
tests themselves are plain synchronous clients: httpx, the openai package, schemathesis,
Chromium), uvicorn on port 0, and a small test-only image capability.

The mesh is the real thing: `start_gateway` (registry, router, proxy, files and jobs extensions
as far as they exist, the HTTP app under test) with real capability services registered to it —
espeak TTS and the tiny LLM — and, until the imagegen service exists, `PngServicer` below.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import socket
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
from capmesh.imagegen.v1 import imagegen_service_pb2, imagegen_service_pb2_grpc
from capmesh.services.runtime.errors import Violations
from capmesh.services.runtime.server import CapabilityService, RunningServer, create_server
from capmesh.services.runtime.settings import ServerSettings


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


class HttpServer:
    """uvicorn serving `app` in the current loop on 127.0.0.1 and a free port."""

    def __init__(self, app) -> None:
        import uvicorn

        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without
        # it every keep-alive request waits ~40 ms (Nagle against delayed ACKs).
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False))
        self._server.capture_signals = _no_signals
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                await self._task
            await asyncio.sleep(0.01)  # polls start-up; the server sets `started` when it listens

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._socket.close()


class _NoSignals:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _no_signals():
    return _NoSignals()


# ----------------------------------------------------------------- a test-only image capability

def tiny_png(width: int, height: int, shade: int) -> bytes:
    """A valid greyscale PNG of one shade (enough for file validity checks)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes([shade % 256]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class PngServicer(imagegen_service_pb2_grpc.ImageGenServiceServicer):
    """Stands in for the imagegen service until it exists: progress per step, then PNGs."""

    async def StreamGenerateImages(self, request, context):
        violations = Violations()
        violations.check(bool(request.prompt), "prompt", "must not be empty")
        violations.check(0 <= request.num_images <= 4, "num_images", "must be from 1 to 4")
        violations.raise_if_any()
        steps = request.steps if request.HasField("steps") else 2
        width, height = request.width or 16, request.height or 16
        for step in range(steps):
            yield imagegen_service_pb2.StreamGenerateImagesResponse(progress={
                "stage": "denoising", "percent": 100 * (step + 1) / steps, "step": step + 1, "total_steps": steps})
        images = []
        for index in range(request.num_images or 1):
            png = tiny_png(width, height, len(request.prompt) + index)
            yield imagegen_service_pb2.StreamGenerateImagesResponse(
                chunk=imagegen_service_pb2.ImageChunk(image_index=index, data=png, offset=0))
            images.append(imagegen_service_pb2.GeneratedImage(index=index, mime_type="image/png",
                                                              size_bytes=len(png), width=width, height=height))
        yield imagegen_service_pb2.StreamGenerateImagesResponse(
            result=imagegen_service_pb2.ImagesResult(images=images, seed=request.seed, model="png-test", steps=steps))


def png_service(settings: ServerSettings) -> CapabilityService:
    return CapabilityService(
        capability="imagegen", settings=settings,
        servicers=[(imagegen_service_pb2_grpc.add_ImageGenServiceServicer_to_server, PngServicer())],
        service_names=[imagegen_service_pb2.DESCRIPTOR.services_by_name["ImageGenService"].full_name],
        engine_name="png-test")


# ------------------------------------------------------------------------------------- the mesh

# Small limits, so that generated requests (schemathesis) stay quick on a CPU.
SMALL_LIMITS = {
    "imagegen": {"max_width": 64, "max_height": 64, "max_steps": 3, "max_images": 2},
    "videogen": {"max_width": 64, "max_height": 64, "max_frames": 8, "max_steps": 2},
    "talkinghead": {"max_frames": 16, "max_audio_s": 3.0, "max_steps": 2, "default_size": 64},
    "tts": {"max_text_chars": 400},
}


def real_service(capability: str, **overrides):
    """`build_service` of a capability's real service module, or None while it is not written."""
    try:
        module = importlib.import_module(f"capmesh.services.{capability}.main")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"capmesh.services.{capability}"):
            return None
        raise
    known = {f.name for f in dataclasses.fields(module.Settings)}
    limits = {k: v for k, v in SMALL_LIMITS.get(capability, {}).items() if k in known}
    return module.build_service(module.Settings(**limits, **overrides))


@dataclass
class Mesh:
    gateway: Any  # RunningGateway
    backends: list[RunningServer] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # capability -> "real" | "test"

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


async def wait_available(grpc_address: str, capabilities: set[str], timeout_s: float = 60.0) -> None:
    """Polls the registry until each capability has an AVAILABLE backend."""
    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        while True:
            view = await stub.ListCapabilities(registry_service_pb2.ListCapabilitiesRequest())
            ready = {c.capability for c in view.capabilities if c.state == registry_service_pb2.BACKEND_STATE_AVAILABLE}
            if capabilities <= ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"capabilities not available: {capabilities - ready}; view: {view}")
            await asyncio.sleep(0.05)


async def start_mesh(settings, capabilities=("tts", "llm", "imagegen", "videogen", "talkinghead")) -> Mesh:
    from capmesh.gateway.server.app import start_gateway

    running = await start_gateway(settings)
    mesh = Mesh(running)
    backend_settings = {"port": 0, "gateway": mesh.grpc_address, "grace_period_s": 0}
    for capability in capabilities:
        service = real_service(capability, **backend_settings)
        kind = "real"
        if service is None and capability == "imagegen":
            service, kind = png_service(ServerSettings(**backend_settings)), "test"
        if service is not None:
            mesh.backends.append(await create_server(service))
            mesh.kinds[capability] = kind
    await wait_available(mesh.grpc_address, set(mesh.kinds))
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
