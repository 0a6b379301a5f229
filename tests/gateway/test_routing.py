"""Routing: health-driven choice, failures and cooldown, the wait queue, affinity, GPU groups."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import grpc
import pytest

from capmesh.client import from_rpc_error
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.llm.v1 import llm_service_pb2_grpc
from tests.gateway.backends import UPLOAD_METHOD, chat_request, instant_models
from tests.gateway.conftest import backend_states, wait_available, wait_for


async def _who(stub, prompt: str = "hello", model: str = "") -> str:
    return (await stub.Chat(chat_request(prompt, model))).message.content


async def test_a_not_serving_backend_gets_no_new_calls(gateways, backends, channel_to):
    gateway = await gateways()
    first, _ = await backends("A", gateway.grpc_address)
    await backends("B", gateway.grpc_address)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 2)
    await first.set_serving(False)

    async def a_unavailable():
        states = await backend_states(channel)
        return any(s.state == pb.BACKEND_STATE_UNAVAILABLE for s in states.values())

    await wait_for(a_unavailable, what="A to be UNAVAILABLE")
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    assert {await _who(stub) for _ in range(20)} == {"B"}
    await first.set_serving(True)
    await wait_available(channel, 2)
    assert {await _who(stub) for _ in range(40)} == {"A", "B"}


async def test_internal_three_times_means_error_and_cooldown_then_a_success_heals(gateways, backends, channel_to):
    gateway = await gateways(failure_threshold=3, cooldown_s=0.5)
    await backends("A", gateway.grpc_address)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 1)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    for prompt in ["invalid"] * 5:  # caller mistakes never count against the backend
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Chat(chat_request(prompt))
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(chat_request("crash"))
        assert caught.value.code() == grpc.StatusCode.INTERNAL
    [status] = (await backend_states(channel)).values()
    assert status.state == pb.BACKEND_STATE_ERROR
    assert status.last_error.startswith("INTERNAL: internal error while handling")
    assert status.consecutive_failures == 3 and 0 < status.cooldown_remaining_seconds <= 0.5

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(chat_request("hello"))
    error = from_rpc_error(caught.value)
    assert error.code == grpc.StatusCode.UNAVAILABLE and "cooldown" in error.message
    assert error.retry_after_s is not None and error.retry_after_s <= 0.5

    async def cooled_down():
        [s] = (await backend_states(channel)).values()
        return s.cooldown_remaining_seconds == 0

    await wait_for(cooled_down, what="the cooldown to end")
    assert await _who(stub) == "A"
    [status] = (await backend_states(channel)).values()
    assert status.state == pb.BACKEND_STATE_AVAILABLE and status.consecutive_failures == 0
    assert status.HasField("last_success_time")


async def test_unavailable_is_retried_transparently_on_another_backend(gateways, backends, channel_to):
    gateway = await gateways(failure_threshold=3)
    _, sick = await backends("A", gateway.grpc_address)
    await backends("B", gateway.grpc_address)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 2)
    sick.unavailable = True
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    assert {await _who(stub) for _ in range(20)} == {"B"}
    assert 1 <= sick.calls <= 3  # it rested after three failures
    states = await backend_states(channel)
    assert [s.state for s in states.values()].count(pb.BACKEND_STATE_ERROR) == 1


async def test_busy_backends_make_calls_wait_then_resource_exhausted(gateways, backends, channel_to):
    gateway = await gateways(route_wait_queue=1, route_wait_s=0.3)
    # A backend that keeps no line of its own (max_queue 0): every call beyond its one slot waits in
    # the gateway's route queue (backends with a line get calls up to max_concurrency + max_queue).
    await backends("A", gateway.grpc_address, max_concurrency=1, max_queue=0)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 1)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)

    long_call = asyncio.ensure_future(stub.Chat(chat_request("sleep:0.8")))
    await wait_for(
        lambda: (
            gateway.gateway.registry.entries and next(iter(gateway.gateway.registry.entries.values())).in_flight == 1
        ),
        what="the first call",
    )
    waiting = asyncio.ensure_future(stub.Chat(chat_request("hello")))
    await wait_for(lambda: gateway.gateway.registry.queued.get("echo") == 1, what="the second call to queue")
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await stub.Chat(chat_request("hello"))
    error = from_rpc_error(full.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "ROUTE_QUEUE_FULL")
    assert error.retry_after_s and error.retry_after_s > 0
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await waiting
    assert from_rpc_error(busy.value).reason == "ALL_BACKENDS_BUSY"
    assert (await long_call).message.content == "A"


async def test_a_queued_call_runs_when_a_slot_frees(gateways, backends, channel_to):
    gateway = await gateways(route_wait_s=5)
    await backends("A", gateway.grpc_address, max_concurrency=1)
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 1)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    answers = await asyncio.gather(*(stub.Chat(chat_request("sleep:0.05")) for _ in range(4)))
    assert [a.message.content for a in answers] == ["A"] * 4


async def test_least_outstanding_spreads_and_a_loaded_model_attracts(gateways, backends, channel_to, tmp_path):
    first, _ = await backends("A")
    second, _ = await backends("B")
    path = tmp_path / "backends.json"
    path.write_text(
        json.dumps(
            {
                "backends": [
                    {
                        "address": f"127.0.0.1:{first.port}",
                        "capability": "echo",
                        "services": ["capmesh.llm.v1.LlmService"],
                        "loaded_models": ["alpha"],
                        "backend_id": "a",
                    },
                    {
                        "address": f"127.0.0.1:{second.port}",
                        "capability": "echo",
                        "services": ["capmesh.llm.v1.LlmService"],
                        "loaded_models": ["beta"],
                        "backend_id": "b",
                    },
                ]
            }
        )
    )
    gateway = await gateways(backends_file=str(path))
    channel = channel_to(gateway.grpc_address)
    states = await wait_available(channel, 2)
    assert {s.source for s in states.values()} == {"static"}
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)
    assert {await _who(stub, model="beta") for _ in range(10)} == {"B"}
    assert {await _who(stub, model="alpha") for _ in range(10)} == {"A"}
    spread = Counter(
        a.message.content for a in await asyncio.gather(*(stub.Chat(chat_request("sleep:0.05")) for _ in range(20)))
    )
    assert spread["A"] >= 5 and spread["B"] >= 5


async def test_a_static_file_with_mistakes_names_each(gateways, tmp_path):
    path = tmp_path / "backends.yaml"
    path.write_text("- address: 127.0.0.1:1\n- capability: tts\n  colour: blue\n")
    with pytest.raises(Exception) as caught:
        await gateways(backends_file=str(path))
    message = str(caught.value)
    assert "backends[0].capability: is required" in message
    assert "backends[1].address: is required" in message and "backends[1].colour" in message


async def _upload(channel) -> bytes:
    async def pieces():
        yield b"abc"

    return await channel.stream_unary(UPLOAD_METHOD)(pieces())


@pytest.mark.parametrize("gpu_mode", ["exclusive", "resident"])
async def test_exclusive_gpu_mode_unloads_the_holder_before_another_member_runs(
    gateways, backends, channel_to, gpu_mode
):
    gateway = await gateways(gpu_mode=gpu_mode)
    chat_models, upload_models = instant_models(), instant_models()
    await backends("A", gateway.grpc_address, device_group="gpu0", services=("llm",), models=chat_models)
    await backends(
        "B",
        gateway.grpc_address,
        device_group="gpu0",
        services=("upload",),
        models=upload_models,
        capability="uploader",
    )
    channel = channel_to(gateway.grpc_address)
    await wait_available(channel, 2)
    stub = llm_service_pb2_grpc.LlmServiceStub(channel)

    assert await _who(stub) == "A"
    assert chat_models.loaded_models() == ["m"]
    assert await _upload(channel) == b"B:3"
    assert upload_models.loaded_models() == ["m"]
    assert chat_models.loaded_models() == ([] if gpu_mode == "exclusive" else ["m"])

    # While A runs, B waits: one member of the group computes at a time.
    chat = asyncio.ensure_future(stub.Chat(chat_request("sleep:0.3")))
    await wait_for(lambda: chat_models.loaded_models() == ["m"], what="A to load")
    await _upload(channel)
    upload_done = time.monotonic()
    await chat
    chat_done = time.monotonic()
    if gpu_mode == "exclusive":
        assert upload_done >= chat_done - 0.05
        assert chat_models.loaded_models() == []
    else:
        assert upload_done < chat_done


async def test_a_call_waits_a_little_for_the_busy_backend_that_has_its_model(gateways, backends, channel_to, tmp_path):
    first, _ = await backends("A")
    second, _ = await backends("B")
    path = tmp_path / "backends.yaml"
    path.write_text(
        f"- {{address: '127.0.0.1:{first.port}', capability: echo, services: [capmesh.llm.v1.LlmService],"
        f" loaded_models: [alpha], max_concurrency: 1}}\n"
        f"- {{address: '127.0.0.1:{second.port}', capability: echo, services: [capmesh.llm.v1.LlmService]}}\n"
    )
    gateway = await gateways(backends_file=str(path))
    stub = llm_service_pb2_grpc.LlmServiceStub(channel_to(gateway.grpc_address))
    await wait_available(channel_to(gateway.grpc_address), 2)

    short = asyncio.ensure_future(stub.Chat(chat_request("sleep:0.15", "alpha")))
    await wait_for(
        lambda: sum(e.in_flight for e in gateway.gateway.registry.entries.values()) == 1, what="the first call"
    )
    assert await _who(stub, model="alpha") == "A"  # waited for A rather than loading alpha on B
    assert (await short).message.content == "A"

    long = asyncio.ensure_future(stub.Chat(chat_request("sleep:0.9", "alpha")))
    await wait_for(
        lambda: sum(e.in_flight for e in gateway.gateway.registry.entries.values()) == 1, what="the long call"
    )
    started = time.monotonic()
    assert await _who(stub, model="alpha") == "B"  # the patience ran out first
    assert 0.3 < time.monotonic() - started < 0.85
    await long
