"""`capmesh chat` against an in-process LLM server: one-shot output, and Ctrl-C in the chat."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import replace

import grpc
import pytest

from capmesh.llm.v1 import llm_service_pb2 as pb
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.llm.main import build_service
from capmesh.services.runtime.server import create_server


@pytest.fixture
async def server(llm_settings):
    service = build_service(replace(llm_settings, default_max_tokens=2000))
    running = await create_server(service)
    yield f"127.0.0.1:{running.port}", service.servicers[0][1].engine
    await running.shutdown(grace_s=0)


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Runs `capmesh` in its own process, as a user would."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from capmesh.cli.main import app; app()",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


async def test_one_shot_prints_the_streamed_answer(server):
    address, _ = server
    code, out, _ = await run_cli("chat", "-m", "hello", "-n", "12", "-t", "0", "--address", address)
    assert code == 0
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await llm_service_pb2_grpc.LlmServiceStub(channel).Chat(
            pb.ChatRequest(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hello")], temperature=0, max_tokens=12)
        )
    assert out == reply.message.content + "\n"


async def test_sampling_controls_reach_the_server(server):
    address, _ = server
    base = ("chat", "-m", "hello", "-n", "30", "-t", "0", "--address", address)
    _, plain, _ = await run_cli(*base)
    code, penalised, _ = await run_cli(*base, "--frequency-penalty", "2", "--top-k", "5")
    assert code == 0 and penalised != plain
    code, _, err = await run_cli(*base, "--presence-penalty", "3")
    assert code == 1 and "presence_penalty" in err


async def test_one_shot_reports_invalid_arguments(server):
    address, _ = server
    code, out, err = await run_cli("chat", "-m", "hi", "--temperature", "5", "--address", address)
    assert code == 1 and out == ""
    assert "INVALID_ARGUMENT" in err and "temperature" in err


async def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(server):
    address, engine = server
    chat = await asyncio.create_subprocess_exec(  # its own process: SIGINT must reach only the CLI
        sys.executable,
        "-c",
        "from capmesh.cli.main import app; app()",
        "chat",
        "-t",
        "0",
        "--address",
        address,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        chat.stdin.write(b"tell me a long story\n")
        await chat.stdin.drain()
        assert await asyncio.wait_for(chat.stdout.read(1), 30)  # the answer is streaming
        chat.send_signal(signal.SIGINT)
        await asyncio.wait_for(read_until(chat.stderr, b"answer stopped"), 30)
        assert await asyncio.to_thread(engine.wait_idle, 10.0)
        chat.stdin.write(b"/exit\n")
        await chat.stdin.drain()
        assert await asyncio.wait_for(chat.wait(), 30) == 0
    finally:
        if chat.returncode is None:
            chat.kill()
            await chat.wait()


async def read_until(stream: asyncio.StreamReader, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        piece = await stream.read(1024)
        if not piece:
            raise AssertionError(f"the stream ended before {marker!r}: {seen!r}")
        seen += piece
    return seen
