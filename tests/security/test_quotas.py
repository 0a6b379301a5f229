"""Quotas per key.

- Two gateway processes sharing one real redis-server: a key limited to N requests a minute gets
  exactly N through both together; the rest are RESOURCE_EXHAUSTED with RetryInfo (gRPC) or 429
  with Retry-After (HTTP).
- In one process (memory counters): concurrent calls and LLM tokens per minute, counted from the
  usage the LLM reports.
"""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest

from capmesh.client import from_rpc_error, sync_channel
from capmesh.gateway.server.auth.keys import Principal, Quota, Role
from capmesh.gateway.server.quotas import MemoryCounters, Quotas
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.gateway.v1 import registry_service_pb2_grpc
from capmesh.llm.v1 import llm_service_pb2 as llm
from capmesh.llm.v1 import llm_service_pb2_grpc
from capmesh.services.runtime.errors import ResourceExhausted
from tests.security.support import GatewayProcess, RecorderProcess, wait_available, write_keys
from tests.support.redis_server import RedisServer

LIMIT = 5
KEY = "limited-key"
SECRET = "quota-test-secret"


@pytest.mark.e2e
def test_a_per_minute_quota_holds_across_two_gateways_sharing_redis(tmp_path):
    keys = write_keys(tmp_path / "keys.jsonl", [{"id": "limited", "key": KEY, "requests_per_minute": LIMIT}])
    with RedisServer() as redis:
        env = {"CAPMESH_GATEWAY_KEYS_FILE": str(keys), "CAPMESH_GATEWAY_REDIS_URL": redis.url}
        with (
            GatewayProcess({**env, "CAPMESH_GATEWAY_FILES_DIR": str(tmp_path / "a")}) as first,
            GatewayProcess({**env, "CAPMESH_GATEWAY_FILES_DIR": str(tmp_path / "b")}) as second,
        ):
            outcomes: list[str] = []
            for index in range(4 * LIMIT):
                address = (first, second)[index % 2].address
                with sync_channel(address, api_key=KEY) as channel:
                    registry = registry_service_pb2_grpc.RegistryServiceStub(channel)
                    try:
                        registry.ListCapabilities(pb.ListCapabilitiesRequest(), timeout=10)
                        outcomes.append("ok")
                    except grpc.RpcError as exc:
                        error = from_rpc_error(exc)
                        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
                        assert error.reason == "QUOTA_REQUESTS_PER_MINUTE"
                        assert error.retry_after_s is not None and 0 < error.retry_after_s <= 60
                        outcomes.append("refused")
            assert outcomes.count("ok") == LIMIT, outcomes
            assert outcomes[:LIMIT] == ["ok"] * LIMIT
            with httpx.Client(base_url=second.http_url, timeout=30) as http:
                refused = http.get("/v1/capabilities", headers={"Authorization": f"Bearer {KEY}"})
                assert refused.status_code == 429
                assert 1 <= int(refused.headers["retry-after"]) <= 60
                assert refused.json()["details"][0]["reason"] == "QUOTA_REQUESTS_PER_MINUTE"
                openai = http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
                assert openai.status_code == 429 and openai.json()["error"]["type"] == "rate_limit_error"


@pytest.mark.e2e
def test_llm_tokens_per_minute_count_the_usage_the_llm_reports(tmp_path):
    keys = write_keys(tmp_path / "keys.jsonl", [{"id": "writer", "key": KEY, "llm_tokens_per_minute": 10}])
    env = {"CAPMESH_GATEWAY_KEYS_FILE": str(keys), "CAPMESH_MESH_SECRET": SECRET}
    with (
        GatewayProcess({**env, "CAPMESH_GATEWAY_FILES_DIR": str(tmp_path / "files")}) as gateway,
        RecorderProcess({"CAPMESH_MESH_SECRET": SECRET, "CAPMESH_RECORDER_GATEWAY": gateway.address}),
    ):
        wait_available(gateway.address, "llm", metadata=(("x-api-key", KEY),))
        with sync_channel(gateway.address, api_key=KEY) as channel:
            chat = llm_service_pb2_grpc.LlmServiceStub(channel).Chat
            request = llm.ChatRequest(messages=[llm.ChatMessage(content="tokens:6")])
            assert chat(request, timeout=30).usage.total_tokens == 6
            assert chat(request, timeout=30).usage.total_tokens == 6  # 6 < 10 left when it started
            with pytest.raises(grpc.RpcError) as caught:
                chat(request, timeout=30)
            error = from_rpc_error(caught.value)
            assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_LLM_TOKENS_PER_MINUTE")
        with httpx.Client(base_url=gateway.http_url, timeout=30) as http:
            refused = http.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "tokens:1"}]},
                headers={"Authorization": f"Bearer {KEY}"},
            )
            assert refused.status_code == 429 and "retry-after" in refused.headers


async def test_concurrent_calls_are_limited_and_released():
    quotas = Quotas(MemoryCounters())
    key = Principal("busy", Role.CLIENT, Quota(concurrent_calls=2))
    first, second = await quotas.admit(key), await quotas.admit(key)
    with pytest.raises(ResourceExhausted) as caught:
        await quotas.admit(key)
    assert caught.value.reason == "QUOTA_CONCURRENT_CALLS" and caught.value.retry_after_s
    await first.release()
    third = await quotas.admit(key)
    await asyncio.gather(second.release(), third.release())
    await (await quotas.admit(key)).release()


async def test_a_minute_window_opens_again():
    now = [0.0]
    quotas = Quotas(MemoryCounters(clock=lambda: now[0]))
    key = Principal("k", Role.CLIENT, Quota(requests_per_minute=2))
    await quotas.admit(key)
    now[0] = 30.0
    await quotas.admit(key)
    with pytest.raises(ResourceExhausted) as caught:
        await quotas.admit(key)
    assert caught.value.retry_after_s == pytest.approx(30.0)
    now[0] = 60.5
    await quotas.admit(key)


async def test_the_mesh_credential_and_keys_without_quotas_are_unlimited():
    quotas = Quotas(MemoryCounters())
    for principal in (Principal("mesh", Role.BACKEND), Principal("free", Role.CLIENT)):
        for _ in range(100):
            await (await quotas.admit(principal)).release()
