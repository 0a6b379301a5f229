"""Per-key quotas: requests per minute, concurrent calls and LLM tokens per minute.

Counters live in Redis when the gateway has one, so every gateway sharing it shares each key's
budget; otherwise in this process. Windows are fixed, one minute long, and start with a key's first
request in them (the counter's expiry is set then, by Redis's clock): a key limited to N requests a
minute gets exactly N through all gateways together until the window ends, and the refusal's
RetryInfo says when it does. Each Redis step is one Lua script, so two gateways never both take
the last unit.

LLM tokens are counted after the fact, from the `usage` the LLM reports at the end of a call (the
unary response, or the stream's `result`): a call starts while the key's window still has tokens
left, so the last call of a window may take it past the limit, and the next calls wait for the
window to end. Concurrent calls are counted up and down; in Redis each key's count expires an hour
after its last call, so a gateway that dies mid-call cannot hold a key's slots for ever.
Callers with the backend credential (the mesh secret) have no quota.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from google.protobuf import message_factory

from capmesh.gateway.server.auth.keys import Principal
from capmesh.llm.v1 import llm_service_pb2
from capmesh.services.runtime.errors import ResourceExhausted, Unavailable

log = structlog.get_logger("capmesh.quotas")

WINDOW_S = 60.0
CONCURRENCY_TTL_S = 3600
KEY_PREFIX = "capmesh:quota:"
LLM_SERVICE = llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"]
LLM_PREFIX = f"/{LLM_SERVICE.full_name}/"


class Counters(Protocol):
    async def add(self, key: str, amount: int, window_s: float) -> tuple[int, float]:
        """Adds `amount` to the window's count (starting a window if none is open); returns the
        count and the seconds left in the window."""
        ...

    async def peek(self, key: str) -> tuple[int, float]: ...

    async def acquire(self, key: str, limit: int) -> bool:
        """Takes one of `limit` slots; False when all are taken."""
        ...

    async def release(self, key: str) -> None: ...


class MemoryCounters:
    """This gateway's own counters (no Redis)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        import time

        self._clock = clock or time.monotonic
        self._windows: dict[str, tuple[int, float]] = {}
        self._slots: dict[str, int] = {}

    def _open(self, key: str) -> tuple[int, float]:
        count, ends = self._windows.get(key, (0, 0.0))
        return (0, 0.0) if ends <= self._clock() else (count, ends)

    async def add(self, key: str, amount: int, window_s: float) -> tuple[int, float]:
        count, ends = self._open(key)
        if not ends:
            ends = self._clock() + window_s
        self._windows[key] = (count + amount, ends)
        return count + amount, ends - self._clock()

    async def peek(self, key: str) -> tuple[int, float]:
        count, ends = self._open(key)
        return count, max(0.0, ends - self._clock())

    async def acquire(self, key: str, limit: int) -> bool:
        if self._slots.get(key, 0) >= limit:
            return False
        self._slots[key] = self._slots.get(key, 0) + 1
        return True

    async def release(self, key: str) -> None:
        left = self._slots.get(key, 0) - 1
        if left > 0:
            self._slots[key] = left
        else:
            self._slots.pop(key, None)


_ADD = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
return {n, ttl}
"""
_PEEK = """
local n = redis.call('GET', KEYS[1])
return {tonumber(n or '0'), redis.call('PTTL', KEYS[1])}
"""
_ACQUIRE = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
"""
_RELEASE = """
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
"""


class RedisCounters:
    """Counters in Redis, shared by every gateway that uses it."""

    def __init__(self, redis: Any) -> None:
        self._add = redis.register_script(_ADD)
        self._peek = redis.register_script(_PEEK)
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    async def add(self, key: str, amount: int, window_s: float) -> tuple[int, float]:
        count, ttl_ms = await self._call(self._add, key, amount, int(window_s * 1000))
        return int(count), int(ttl_ms) / 1000

    async def peek(self, key: str) -> tuple[int, float]:
        count, ttl_ms = await self._call(self._peek, key)
        return int(count), max(0, int(ttl_ms)) / 1000

    async def acquire(self, key: str, limit: int) -> bool:
        return bool(await self._call(self._acquire, key, limit, CONCURRENCY_TTL_S))

    async def release(self, key: str) -> None:
        await self._call(self._release, key)

    async def _call(self, script: Any, key: str, *args: int) -> Any:
        from redis.exceptions import RedisError

        try:
            return await script(keys=[key], args=list(args))
        except RedisError as exc:
            raise Unavailable(
                f"the quota store (Redis) is unreachable: {exc}", reason="QUOTA_STORE_UNAVAILABLE", retry_after_s=1.0
            ) from exc


@dataclass
class Admission:
    """A call let in under its key's quota; `release` (once, when the call ends) frees its slot."""

    release: Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class Quotas:
    def __init__(self, counters: Counters) -> None:
        self._counters = counters

    @staticmethod
    def _key(principal: Principal, what: str) -> str:
        return f"{KEY_PREFIX}{principal.key_id or 'anonymous'}:{what}"

    async def admit(self, principal: Principal) -> Admission:
        """Lets one request in or raises RESOURCE_EXHAUSTED with RetryInfo."""
        quota = principal.quota
        if not quota.requests_per_minute and not quota.concurrent_calls:
            return Admission(_nothing)
        release: Callable[[], Awaitable[None]] = _nothing
        if quota.concurrent_calls:
            slots = self._key(principal, "calls")
            if not await self._counters.acquire(slots, quota.concurrent_calls):
                raise ResourceExhausted(
                    f"key {principal.key_id!r} already has {quota.concurrent_calls} calls running (its quota)",
                    reason="QUOTA_CONCURRENT_CALLS",
                    retry_after_s=1.0,
                )

            async def release_slot() -> None:
                await self._counters.release(slots)

            release = release_slot
        if quota.requests_per_minute:
            count, left_s = await self._counters.add(self._key(principal, "requests"), 1, WINDOW_S)
            if count > quota.requests_per_minute:
                await release()
                raise ResourceExhausted(
                    f"key {principal.key_id!r} used its {quota.requests_per_minute} requests this minute",
                    reason="QUOTA_REQUESTS_PER_MINUTE",
                    retry_after_s=left_s,
                )
        return Admission(release)

    def meter(self, principal: Principal | None, method: str) -> TokenMeter | None:
        """A meter for an LLM call of a key with a token quota; None when there is nothing to count."""
        if principal is None or not principal.quota.llm_tokens_per_minute or not method.startswith(LLM_PREFIX):
            return None
        return TokenMeter(self, principal, method)

    async def check_tokens(self, principal: Principal) -> None:
        limit = principal.quota.llm_tokens_per_minute
        used, left_s = await self._counters.peek(self._key(principal, "llm_tokens"))
        if used >= limit:
            raise ResourceExhausted(
                f"key {principal.key_id!r} used its {limit} LLM tokens this minute",
                reason="QUOTA_LLM_TOKENS_PER_MINUTE",
                retry_after_s=left_s or WINDOW_S,
            )

    async def spend_tokens(self, principal: Principal, tokens: int) -> None:
        if tokens > 0:
            await self._counters.add(self._key(principal, "llm_tokens"), tokens, WINDOW_S)


class TokenMeter:
    """Counts one LLM call's tokens: `start` refuses a key whose window has none left, `see` reads
    each response message, `settle` adds what the call used to the key's window."""

    def __init__(self, quotas: Quotas, principal: Principal, method: str) -> None:
        self._quotas = quotas
        self._principal = principal
        descriptor = LLM_SERVICE.methods_by_name.get(method.rpartition("/")[2])
        self._response = message_factory.GetMessageClass(descriptor.output_type) if descriptor else None
        self.tokens = 0

    async def start(self) -> None:
        await self._quotas.check_tokens(self._principal)

    def see(self, raw: bytes) -> None:
        if self._response is None:
            return
        try:
            message = self._response.FromString(raw)
        except Exception:  # not ours to judge: the caller gets the bytes as they are
            return
        self.tokens = max(self.tokens, usage_total(message))

    async def settle(self) -> None:
        await self._quotas.spend_tokens(self._principal, self.tokens)


def usage_total(message: Any) -> int:
    """`usage.total_tokens` of an LLM response: at the top (ChatResponse) or in its set event
    (StreamChatResponse.result); 0 when the message carries none."""
    for descriptor, value in message.ListFields():
        if descriptor.name == "usage":
            return int(value.total_tokens)
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and not descriptor.is_repeated:
            for inner, inner_value in value.ListFields():
                if inner.name == "usage":
                    return int(inner_value.total_tokens)
    return 0


def build_quotas(redis: Any) -> Quotas:
    return Quotas(RedisCounters(redis) if redis is not None else MemoryCounters())
