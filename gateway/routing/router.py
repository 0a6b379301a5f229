"""Picks a backend for each call and runs calls as raw bytes, retrying where that is safe.

Choice among the backends that serve the method's service:
- only routable ones (AVAILABLE, or ERROR whose cooldown is over) with room under their maximum
  concurrency (and, in exclusive GPU mode, whose device group lets them run now);
- preferring those that already have the requested model loaded (switching models costs far more
  than waiting a little: for up to `AFFINITY_PATIENCE_S` a call waits for such a backend);
- the less loaded of two random choices.
Only methods that run a model (the catalogue's `model_slot_methods`) take a slot: listing, status
and the like go to any routable backend, uncounted and never queued.
Every backend busy: the call joins the shortest line a backend keeps itself (where it sees its
`queue_position` in progress messages); all those full too, it waits in the gateway's bounded route
queue, then gets RESOURCE_EXHAUSTED with RetryInfo.
None routable: UNAVAILABLE naming the capability and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import grpc
import structlog

from capmesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from capmesh.gateway.server import metrics
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.registry.model import BackendEntry, State
from capmesh.gateway.server.registry.registry import Registry
from capmesh.gateway.server.routing.call import BackendCall, Metadata, Request, remaining_s
from capmesh.gateway.server.routing.services import MethodInfo, is_reserved, service_of
from capmesh.gateway.server.routing.wire import read_string_field
from capmesh.services.runtime.errors import (
    CapmeshError,
    DeadlineExceeded,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = structlog.get_logger("capmesh.gateway.router")

AFFINITY_PATIENCE_S = 0.5  # how long a call waits for a backend that has its model loaded
UNLOAD_TIMEOUT_S = 60.0
BUSY_RETRY_AFTER_S = 1.0


class Slot:
    """A reserved place for one call on one backend (counted against its max_concurrency unless
    the method runs no model); `release(code)` exactly once when the call ends (later calls do nothing)."""

    __slots__ = ("_released", "capability", "counted", "entry", "model", "router")

    def __init__(self, router: Router, entry: BackendEntry, capability: str, model: str, counted: bool) -> None:
        self.router = router
        self.entry = entry
        self.capability = capability
        self.model = model
        self.counted = counted
        self._released = False

    def release(self, code: grpc.StatusCode, message: str = "") -> None:
        if not self._released:
            self._released = True
            self.router._release(self, code, message)


class _Group:
    """An exclusive-mode device group: the member that may hold models now."""

    def __init__(self) -> None:
        self.holder: str | None = None
        self.ready = asyncio.Event()
        self.ready.set()


class _Blocked(Exception):
    """No backend can take the call now; `error` is raised if waiting does not help."""

    def __init__(self, error: CapmeshError, wait: bool, for_affinity: bool = False) -> None:
        self.error = error
        self.wait = wait
        self.for_affinity = for_affinity  # only because a backend with the model loaded is busy


class Router:
    def __init__(self, registry: Registry, settings: GatewaySettings) -> None:
        self.registry = registry
        self.settings = settings
        self.exclusive = settings.gpu_mode == "exclusive"
        self.methods: dict[str, MethodInfo] = {m.path: m for info in registry.catalog.values() for m in info.methods}
        self._wake: asyncio.Event | None = None
        self._groups: dict[str, _Group] = {}
        self._in_flight_gauges: dict[str, Any] = {}
        self._enforcing: dict[str, asyncio.Task[None]] = {}  # device group -> its unload of intruders
        registry.add_listener(self._wake_waiters)
        registry.add_listener(self._enforce_groups)

    # -- what is routable -----------------------------------------------------------------------
    def method_info(self, path: str) -> MethodInfo | None:
        """A contract method, or a method of a service that only registered backends name (served
        as a bidirectional stream, which carries every call shape)."""
        info = self.methods.get(path)
        if info is not None:
            return info
        service = service_of(path)
        if service and not is_reserved(service) and self.registry.backends_for(service):
            return MethodInfo(path, service, client_streaming=True, server_streaming=True)
        return None

    def capability_of(self, method: str) -> str:
        """ "/capmesh.tts.v1.TtsService/StreamSynthesize" -> "tts"; NotFound if no one serves it."""
        info = self.method_info(method)
        capability = self.registry.capability_for_service(info.service) if info is not None else None
        if capability is None:
            raise NotFound(f"no capability serves {method}", reason="METHOD_NOT_FOUND")
        return capability

    def call(
        self,
        method: str,
        request: Request,
        *,
        metadata: Metadata = (),
        deadline: float | None = None,
        on_backend: Callable[[str], None] | None = None,
    ) -> BackendCall:
        """A call of `method` ("/package.Service/Method") on a healthy backend, for callers inside the
        gateway (job runner, HTTP bridge); NotFound when no capability serves the method."""
        info = self.method_info(method)
        if info is None:
            raise NotFound(f"no capability serves {method}", reason="METHOD_NOT_FOUND")
        return BackendCall(self, info, request, metadata=metadata, deadline=deadline, on_backend=on_backend)

    # -- choosing -------------------------------------------------------------------------------
    async def acquire(
        self,
        info: MethodInfo,
        request: bytes | None,
        *,
        deadline: float | None = None,
        exclude: frozenset[str] | set[str] = frozenset(),
    ) -> Slot:
        """Reserves a slot on the best backend for the call, waiting in the queue if all are busy."""
        capability = self.registry.capability_for_service(info.service) or info.service
        started = time.monotonic()
        waiting = False
        try:
            while True:
                now = time.monotonic()
                try:
                    entry, model = self._pick(
                        info, capability, request, exclude, now, patient=now - started < AFFINITY_PATIENCE_S
                    )
                    return await self._reserve(entry, capability, model, deadline, counted=info.model_slot)
                except _Blocked as blocked:
                    if not blocked.wait:
                        raise blocked.error from None
                    if not waiting and not blocked.for_affinity:
                        if self.registry.queued.get(capability, 0) >= self.settings.route_wait_queue:
                            raise ResourceExhausted(
                                f"capability {capability!r}: every backend is busy and the wait queue is full "
                                f"({self.settings.route_wait_queue} calls)",
                                retry_after_s=BUSY_RETRY_AFTER_S,
                                reason="ROUTE_QUEUE_FULL",
                            ) from None
                        waiting = True
                        self._queue_changed(capability, +1)
                    limit = started + self.settings.route_wait_s
                    if deadline is not None and deadline < limit:
                        limit = deadline
                    if now >= limit:
                        if deadline is not None and now >= deadline:
                            raise DeadlineExceeded(
                                f"the deadline passed while waiting for a backend of {capability!r}"
                            ) from None
                        raise blocked.error from None
                    if blocked.for_affinity:
                        limit = min(limit, started + AFFINITY_PATIENCE_S)
                    if self._wake is None:
                        self._wake = asyncio.Event()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), limit - now)
        finally:
            if waiting:
                self._queue_changed(capability, -1)

    def _pick(
        self, info: MethodInfo, capability: str, request: bytes | None, exclude, now: float, patient: bool
    ) -> tuple[BackendEntry, str]:
        entries = self.registry.backends_for(info.service)
        if not entries:
            raise _Blocked(
                Unavailable(
                    f"capability {capability!r} has no backend registered (serving {info.service})", reason="NO_BACKEND"
                ),
                wait=False,
            )
        routable = [e for e in entries if e.routable(now) and e.backend_id not in exclude]
        if not routable:
            raise self._why_none(entries, capability, exclude, now)
        if not info.model_slot:  # runs no model: whatever the load, no queue, no device group
            if len(routable) == 1:
                return routable[0], ""
            first, second = random.sample(routable, 2)
            return (first if first.load() <= second.load() else second), ""
        free = [e for e in routable if e.has_room() and self._group_allows(e)]
        model, for_affinity = "", False
        if info.model_field and request and len(routable) > 1:
            model = read_string_field(request, info.model_field)
            if model:
                affine = [e for e in free if model in e.loaded]
                if affine:
                    free = affine
                elif free and patient and any(model in e.loaded for e in routable):
                    free, for_affinity = [], True
        if not free and not for_affinity:
            lines = [e for e in routable if e.has_line_room() and self._group_allows(e)]
            if lines:
                return min(lines, key=lambda e: e.load()), model
        if not free:
            raise _Blocked(
                ResourceExhausted(
                    f"capability {capability!r}: all {len(routable)} available backends are busy",
                    retry_after_s=BUSY_RETRY_AFTER_S,
                    reason="ALL_BACKENDS_BUSY",
                ),
                wait=True,
                for_affinity=for_affinity,
            )
        if len(free) == 1:
            return free[0], model
        first, second = random.sample(free, 2)
        return (first if first.load() <= second.load() else second), model

    def _why_none(self, entries: list[BackendEntry], capability: str, exclude, now: float) -> _Blocked:
        pending = [e for e in entries if e.state is State.UNKNOWN and e.backend_id not in exclude]
        if pending:
            return _Blocked(
                Unavailable(
                    f"capability {capability!r}: {len(pending)} backends have not answered their health probe yet",
                    reason="PROBE_PENDING",
                ),
                wait=True,
            )
        cooling = [e for e in entries if e.state is State.ERROR and e.backend_id not in exclude]
        down = [e for e in entries if e.state is State.UNAVAILABLE and e.backend_id not in exclude]
        tried = [e for e in entries if e.backend_id in exclude]
        reasons = []
        if cooling:
            reasons.append(f"{len(cooling)} in cooldown after errors (last: {cooling[0].last_error})")
        if down:
            reasons.append(f"{len(down)} not serving or unreachable")
        if tried:
            reasons.append(f"{len(tried)} already failed this call")
        retry_after = min((e.cooldown_remaining(now) for e in cooling), default=None)
        return _Blocked(
            Unavailable(
                f"capability {capability!r} has no available backend: " + ", ".join(reasons),
                reason="NO_AVAILABLE_BACKEND",
                retry_after_s=retry_after,
            ),
            wait=False,
        )

    # -- exclusive GPU groups -------------------------------------------------------------------
    def _group_members(self, group: str) -> list[BackendEntry]:
        return [e for e in self.registry.entries.values() if e.record.device_group == group]

    def _group_allows(self, entry: BackendEntry) -> bool:
        group_name = entry.record.device_group
        if not self.exclusive or not group_name:
            return True
        group = self._groups.get(group_name)
        if group is None or group.holder in (None, entry.backend_id):
            return True
        # Switching the group to this member needs every other member idle first.
        return all(m.in_flight == 0 for m in self._group_members(group_name) if m is not entry)

    async def _reserve(
        self, entry: BackendEntry, capability: str, model: str, deadline: float | None, *, counted: bool
    ) -> Slot:
        self._in_flight_gauge(capability).inc()
        slot = Slot(self, entry, capability, model, counted)
        if not counted:
            entry.passing += 1
            return slot
        entry.in_flight += 1
        group_name = entry.record.device_group
        if not self.exclusive or not group_name:
            return slot
        try:
            group = self._groups.setdefault(group_name, _Group())
            if group.holder != entry.backend_id:
                await self._switch(group, group_name, entry, deadline)
            elif not group.ready.is_set():
                await group.ready.wait()
        except BaseException:
            slot.release(grpc.StatusCode.CANCELLED)
            raise
        return slot

    async def _switch(self, group: _Group, group_name: str, entry: BackendEntry, deadline: float | None) -> None:
        """Makes `entry` the group's holder: every other member that holds models unloads first."""
        previous = group.holder
        group.holder = entry.backend_id
        group.ready = asyncio.Event()
        try:
            holders = [
                m for m in self._group_members(group_name) if m is not entry and (m.backend_id == previous or m.loaded)
            ]
            timeout = min(UNLOAD_TIMEOUT_S, remaining_s(deadline) or UNLOAD_TIMEOUT_S)
            for member in holders:
                log.info("gpu_group.unload", group=group_name, holder=member.backend_id, next=entry.backend_id)
                await self._unload(group_name, member, timeout)
        finally:
            group.ready.set()

    def _enforce_groups(self) -> None:
        """Keeps each exclusive device group to one member with models, whatever loaded them.

        Models also load outside the gateway's switching (`AdminService/LoadModels` on a backend,
        `eager_load`, a call straight to a backend): what backends report (heartbeats' and
        registrations' `loaded_models`) and what the router saw calls use decide. When two members
        hold models, the group's holder keeps them (else the busiest member, which becomes the
        holder) and every other member is asked to unload; a member's own running call still
        finishes first (its model manager defers the unload)."""
        if not self.exclusive:
            return
        holding: dict[str, list[BackendEntry]] = {}
        for entry in self.registry.entries.values():
            if entry.record.device_group and entry.loaded and not entry.retired:
                holding.setdefault(entry.record.device_group, []).append(entry)
        for name, members in holding.items():
            group = self._groups.setdefault(name, _Group())
            if len(members) < 2 or not group.ready.is_set() or name in self._enforcing:
                continue  # nothing to do, or a switch or an earlier enforcement is under way
            keeper = next((m for m in members if m.backend_id == group.holder), None)
            if keeper is None:
                keeper = max(members, key=lambda m: (m.in_flight, m.backend_id))
                group.holder = keeper.backend_id
            intruders = [m for m in members if m is not keeper]
            self._enforcing[name] = asyncio.get_running_loop().create_task(
                self._unload_intruders(name, keeper, intruders)
            )

    async def _unload_intruders(self, group_name: str, keeper: BackendEntry, intruders: list[BackendEntry]) -> None:
        try:
            await self._unload_each(group_name, keeper, intruders)
        finally:
            self._enforcing.pop(group_name, None)
        self._wake_waiters()

    async def _unload_each(self, group_name: str, keeper: BackendEntry, intruders: list[BackendEntry]) -> None:
        for member in intruders:
            log.warning(
                "gpu_group.enforce",
                group=group_name,
                holder=keeper.backend_id,
                unloading=member.backend_id,
                loaded=sorted(member.loaded),
            )
            await self._unload(group_name, member, UNLOAD_TIMEOUT_S)

    async def _unload(self, group_name: str, member: BackendEntry, timeout: float) -> None:
        """Asks one member of a device group to unload its models; a failure is logged, not raised."""
        try:
            await admin_service_pb2_grpc.AdminServiceStub(member.channel).UnloadModels(
                admin_service_pb2.UnloadModelsRequest(), metadata=self.registry.credentials, timeout=timeout
            )
            member.loaded.clear()
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "gpu_group.unload_failed",
                group=group_name,
                holder=member.backend_id,
                code=exc.code().name,
                error=exc.details(),
            )

    # -- bookkeeping ----------------------------------------------------------------------------
    def _release(self, slot: Slot, code: grpc.StatusCode, message: str) -> None:
        entry = slot.entry
        if slot.counted:
            entry.in_flight -= 1
        else:
            entry.passing -= 1
        self._in_flight_gauge(slot.capability).dec()
        if entry.retired:
            if entry.in_flight == 0 and entry.passing == 0:
                asyncio.get_running_loop().create_task(entry.close())
        else:
            if code is grpc.StatusCode.OK and slot.model:
                entry.loaded.add(slot.model)
            self.registry.on_call_result(entry, code, message)
        self._wake_waiters()

    def _in_flight_gauge(self, capability: str):
        gauge = self._in_flight_gauges.get(capability)
        if gauge is None:
            gauge = self._in_flight_gauges[capability] = metrics.rpc_in_flight.labels(capability)
        return gauge

    def _wake_waiters(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def _queue_changed(self, capability: str, delta: int) -> None:
        depth = self.registry.queued.get(capability, 0) + delta
        self.registry.queued[capability] = depth
        metrics.route_queue_depth.labels(capability).set(depth)
