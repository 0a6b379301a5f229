"""Where registrations live: in this gateway's memory, or in Redis shared by several gateways.

Both apply every change to the local `Registry` at once (read-your-writes). A registration expires
unless heartbeats renew it within `lease_s` (its TTL). The Redis one keeps each registered backend
as a record with that TTL, announces every change on a pub/sub channel that the other gateways
apply, and resynchronises from Redis every heartbeat interval so that a missed announcement or an
expired registration is noticed. Static backends are each
gateway's own configuration and never go to Redis.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import structlog
from redis.exceptions import RedisError

from capmesh.gateway.server.registry.model import BackendRecord
from capmesh.gateway.server.registry.registry import Registry
from capmesh.services.runtime.errors import Unavailable
from capmesh.services.runtime.tasks import stop_tasks

log = structlog.get_logger("capmesh.gateway.registry")


class MemoryRegistrations:
    """Registrations in this gateway's memory; expired ones are swept out."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        await stop_tasks([self._task])

    async def put(self, record: BackendRecord) -> None:
        self._registry.upsert(record, ttl_s=self._registry.heartbeat_plan()[1])

    async def renew(self, backend_id: str, loaded_models: tuple[str, ...]) -> bool:
        entry = self._registry.entries.get(backend_id)
        if entry is None or entry.record.source == "static":
            return False
        entry.registration_expires = time.monotonic() + self._registry.heartbeat_plan()[1]
        self._registry.update_load(backend_id, loaded_models)
        return True

    async def delete(self, backend_id: str) -> bool:
        return self._registry.remove(backend_id)

    async def _sweep(self) -> None:
        while True:
            # A tenth of the lease late at most, and no more often than needed: the lease grows
            # with the registry (Registry.heartbeat_plan), and each sweep visits every backend.
            interval = min(self._registry.settings.lease_s / 4, max(1.0, self._registry.heartbeat_plan()[1] / 10))
            await asyncio.sleep(interval)  # periodic expiry check
            self._registry.expire_registrations(time.monotonic())


def _redis_unavailable(method):
    """Registry writes against an unreachable Redis are UNAVAILABLE (retry later), not INTERNAL."""

    @functools.wraps(method)
    async def call(self, *args):
        try:
            return await method(self, *args)
        except RedisError as exc:
            raise Unavailable(
                f"the registry's Redis cannot be reached: {exc}", reason="REGISTRY_STORE_UNAVAILABLE", retry_after_s=1.0
            ) from exc

    return call


class RedisRegistrations:
    """Registrations in Redis, shared by every gateway on it."""

    PREFIX = "capmesh:registry:"

    def __init__(self, registry: Registry, redis) -> None:
        self._registry = registry
        self._redis = redis
        self._ids_key = self.PREFIX + "backends"
        self._channel = self.PREFIX + "changes"
        self._tasks: list[asyncio.Task] = []
        self._pubsub: Any = None  # redis.asyncio PubSub, opened by start()

    def _key(self, backend_id: str) -> str:
        return f"{self.PREFIX}backend:{backend_id}"

    def _ttl_ms(self) -> int:
        return int(self._registry.heartbeat_plan()[1] * 1000)

    async def start(self) -> None:
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(self._channel)
        await self.resync()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._resync_forever())]

    async def stop(self) -> None:
        # A cancellation landing inside a Redis read can be swallowed (see stop_tasks): cancel for sure.
        await stop_tasks(self._tasks)
        if self._pubsub is not None:
            await self._pubsub.aclose()

    @_redis_unavailable
    async def put(self, record: BackendRecord) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(record.backend_id), record.to_json(), px=self._ttl_ms())
            pipe.sadd(self._ids_key, record.backend_id)
            pipe.publish(self._channel, f"upsert {record.backend_id}")
            await pipe.execute()
        self._registry.upsert(record)

    @_redis_unavailable
    async def renew(self, backend_id: str, loaded_models: tuple[str, ...]) -> bool:
        entry = self._registry.entries.get(backend_id)
        if entry is not None and set(entry.record.loaded_models) == set(loaded_models):
            # The usual heartbeat: nothing changed, so only the lease is renewed, in one command
            # with nothing to parse (PEXPIRE answers 0 when the registration already expired).
            return bool(await self._redis.pexpire(self._key(backend_id), self._ttl_ms()))
        # GETEX reads the record and renews its lease in one round trip.
        raw = await self._redis.getex(self._key(backend_id), px=self._ttl_ms())
        if raw is None:
            return False
        record = BackendRecord.from_json(raw)
        if set(record.loaded_models) != set(loaded_models):
            record = record.with_load(tuple(loaded_models))
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._key(backend_id), record.to_json(), px=self._ttl_ms())
                pipe.publish(self._channel, f"upsert {backend_id}")
                await pipe.execute()
        self._registry.upsert(record)
        return True

    @_redis_unavailable
    async def delete(self, backend_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(backend_id))
            pipe.srem(self._ids_key, backend_id)
            pipe.publish(self._channel, f"remove {backend_id}")
            deleted, _, _ = await pipe.execute()
        return bool(self._registry.remove(backend_id)) or bool(deleted)

    async def resync(self) -> None:
        """Makes the local view match Redis: new and changed records in, expired ones out."""
        ids = sorted(i.decode() for i in await self._redis.smembers(self._ids_key))
        raws = await self._redis.mget([self._key(i) for i in ids]) if ids else []
        alive = set()
        for backend_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                await self._redis.srem(self._ids_key, backend_id)
                continue
            alive.add(backend_id)
            self._registry.upsert(BackendRecord.from_json(raw))
        for backend_id, entry in list(self._registry.entries.items()):
            if entry.record.source != "static" and backend_id not in alive:
                log.info("backend.registration_expired", backend=backend_id)
                self._registry.remove(backend_id)

    async def _listen(self) -> None:
        async for message in self._pubsub.listen():
            if message.get("type") != "message":
                continue
            action, _, backend_id = message["data"].decode().partition(" ")
            try:
                if action == "remove":
                    entry = self._registry.entries.get(backend_id)
                    if entry is not None and entry.record.source != "static":
                        self._registry.remove(backend_id)
                elif action == "upsert":
                    raw = await self._redis.get(self._key(backend_id))
                    if raw is not None:
                        self._registry.upsert(BackendRecord.from_json(raw))
            except Exception:
                log.exception("registry.announcement_failed", action=action, backend=backend_id)

    async def _resync_forever(self) -> None:
        while True:
            # Expiries happen on the heartbeat timescale, so the resync follows it as the registry grows.
            await asyncio.sleep(self._registry.heartbeat_plan()[0])  # periodic resync
            try:
                await self.resync()
            except Exception:
                log.warning("registry.resync_failed", exc_info=True)
