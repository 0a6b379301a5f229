"""Defect 2: grpc.health.v1.Health/Check through the gateway answers for a capability's short name
("tts") as well as for its services' full names; real gateway and backend processes."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capmesh.llm.v1 import llm_service_pb2
from tests.defects.support import echo_backend, gateway_process
from tests.jobs.support import eventually

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
LLM_SERVICE = llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name


async def test_health_answers_for_the_capabilitys_short_name() -> None:
    gateway, address, _ = gateway_process()
    backend = None
    channel = grpc.aio.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)

    async def status(service: str) -> int:
        return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status

    try:
        # A catalogued capability without a backend is known, and not serving (before: NOT_FOUND).
        assert await status("tts") == NOT_SERVING
        assert await status("llm") == NOT_SERVING
        backend = echo_backend("A", address)  # registers as capability "echo" serving the LLM contract
        await eventually(lambda: _is(status, "echo", SERVING), what="echo SERVING")
        assert await status(LLM_SERVICE) == SERVING
        assert await status("tts") == NOT_SERVING
        with_unknown = grpc.aio.AioRpcError
        try:
            await status("nope")
        except with_unknown as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
        else:
            raise AssertionError("an unknown name stays NOT_FOUND")
        backend.kill()
        await eventually(lambda: _is(status, "echo", NOT_SERVING), what="echo NOT_SERVING after its backend died")
    finally:
        await channel.close()
        for process in (backend, gateway):
            if process is not None:
                process.kill()


async def _is(status, service: str, expected: int) -> bool:
    return await status(service) == expected
