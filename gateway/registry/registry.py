"""The registry: every backend this gateway knows, its health, and change notification.

Health is validated lazily: a capability is never probed by running a task. The liveness probe
(grpc.health.v1 Watch, see health.py) sets the first state; call outcomes drive it after that:
- UNKNOWN -> AVAILABLE when the probe says SERVING;
- any state -> UNAVAILABLE when the backend is unreachable or NOT_SERVING;
- `failure_threshold` backend-caused failures in a row -> ERROR with a cooldown and the last error;
- a successful call -> AVAILABLE.
An ERROR backend takes calls again once its cooldown is over; the next call decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog

from capmesh.gateway.server import metrics
from capmesh.gateway.server.config import GatewaySettings
from capmesh.gateway.server.registry.health import HealthWatcher
from capmesh.gateway.server.registry.model import (
    BACKEND_CHANNEL_OPTIONS,
    BACKEND_FAILURE_CODES,
    BackendEntry,
    BackendRecord,
    State,
)
from capmesh.gateway.server.routing.services import ServiceInfo, load_catalog
from capmesh.gateway.v1 import registry_service_pb2 as pb
from capmesh.services.runtime.trust import mesh_channel, mesh_metadata

log = structlog.get_logger("capmesh.gateway.registry")

Listener = Callable[[], None]


def summarise(states: list[State]) -> State:
    """AVAILABLE if any backend is, else ERROR if any is, else UNAVAILABLE if any is, else UNKNOWN."""
    for state in (State.AVAILABLE, State.ERROR, State.UNAVAILABLE):
        if state in states:
            return state
    return State.UNKNOWN


class Registry:
    def __init__(self, settings: GatewaySettings, catalog: dict[str, ServiceInfo] | None = None) -> None:
        self.settings = settings
        self.catalog = catalog if catalog is not None else load_catalog()
        self.entries: dict[str, BackendEntry] = {}
        self._by_service: dict[str, list[BackendEntry]] = {}
        self._watchers: dict[str, HealthWatcher] = {}
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self.version = 0
        self.queued: dict[str, int] = {}  # capability -> calls waiting for a backend (the router's)
        # The mesh secret, built once, for the metadata of every call the gateway makes to a backend
        # (BackendCall, the health probe, the unload): per-call metadata costs nothing, where
        # channel interceptors adding it cost each relayed call ~10 % more of the gateway's CPU.
        self.credentials = mesh_metadata(settings.mesh_secret)
        metrics.backend_states.watch(self.state_rows)

    def dial(self, address: str) -> grpc.aio.Channel:
        """A channel to a backend that presents the mesh's certificate (mTLS) when it has one; the
        secret goes with each call (`credentials`)."""
        settings = self.settings
        return mesh_channel(
            address,
            ca_file=settings.backend_tls_ca_file,
            cert_file=settings.backend_tls_cert_file,
            key_file=settings.backend_tls_key_file,
            options=BACKEND_CHANNEL_OPTIONS,
        )

    def heartbeat_plan(self) -> tuple[float, float]:
        """(heartbeat interval, lease) in seconds for registered backends, now.

        Each heartbeat is a gRPC call; at a fixed 2 s, 1000 backends kept 40 % of a core busy while
        nothing else happened. So the interval grows with the registry, keeping all heartbeats
        together under `heartbeat_budget_per_s`, and the lease keeps its ratio to the interval. A
        longer lease does not slow failure detection: the health Watch stream marks a dead backend
        UNAVAILABLE at once; the lease only decides when a backend that vanished without
        deregistering is forgotten."""
        settings = self.settings
        needed_interval = len(self.entries) / settings.heartbeat_budget_per_s
        scale = max(1.0, needed_interval / settings.heartbeat_interval_s)
        return settings.heartbeat_interval_s * scale, settings.lease_s * scale

    # -- change notification --------------------------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self._listeners:
            listener()

    async def wait_changed(self, version: int) -> int:
        """Returns the current version once it differs from `version`."""
        while self.version == version:
            await self._changed.wait()
        return self.version

    # -- membership -----------------------------------------------------------------------------
    def services_of(self, record: BackendRecord) -> tuple[str, ...]:
        """The services a backend serves: those it named, else its capability's contract."""
        if record.services:
            return record.services
        return tuple(name for name, info in self.catalog.items() if info.capability == record.capability)

    def upsert(self, record: BackendRecord, *, ttl_s: float | None = None) -> BackendEntry:
        """Adds or updates a backend; a new address means a new entry (new channel, new probe).
        With `ttl_s`, the registration expires that long from now unless renewed (memory mode)."""
        entry = self.entries.get(record.backend_id)
        if entry is not None and entry.record.address == record.address and entry.record.services == record.services:
            if record != entry.record:
                entry.record = record
                entry.loaded = set(record.loaded_models)
                self._reindex()
                self._notify()
        else:
            if entry is not None:
                self._drop(entry)
            entry = BackendEntry(record, self.dial(record.address))
            self.entries[record.backend_id] = entry
            watcher = HealthWatcher(entry, self.on_probe, self.credentials)
            self._watchers[record.backend_id] = watcher
            watcher.start()
            self._reindex()
            self._log(entry).info("backend.added", address=record.address, source=record.source)
            self._notify()
        if ttl_s is not None:
            entry.registration_expires = time.monotonic() + ttl_s
        return entry

    def update_load(self, backend_id: str, loaded_models: tuple[str, ...]) -> None:
        entry = self.entries.get(backend_id)
        if entry is not None and set(loaded_models) != entry.loaded:
            entry.loaded = set(loaded_models)
            entry.record = entry.record.with_load(tuple(loaded_models))
            self._notify()

    def remove(self, backend_id: str) -> bool:
        entry = self.entries.pop(backend_id, None)
        if entry is None:
            return False
        self._drop(entry)
        self._reindex()
        self._log(entry).info("backend.removed")
        self._notify()
        return True

    def _drop(self, entry: BackendEntry) -> None:
        watcher = self._watchers.pop(entry.backend_id, None)
        if watcher is not None:
            watcher.stop()
        entry.retire()

    def _reindex(self) -> None:
        index: dict[str, list[BackendEntry]] = {}
        for entry in sorted(self.entries.values(), key=lambda e: e.backend_id):
            for service in self.services_of(entry.record):
                index.setdefault(service, []).append(entry)
        self._by_service = index

    def backends_for(self, service: str) -> list[BackendEntry]:
        return self._by_service.get(service, [])

    def capability_for_service(self, service: str) -> str | None:
        """The capability of the backends serving `service`, else the contract's, else None."""
        entries = self._by_service.get(service)
        if entries:
            return entries[0].record.capability
        info = self.catalog.get(service)
        return info.capability if info is not None else None

    def expire_registrations(self, now: float) -> list[str]:
        """Registered backends (not static ones) whose registration expired, removed (memory mode)."""
        expired = [
            e.backend_id
            for e in self.entries.values()
            if e.record.source != "static" and e.registration_expires and now > e.registration_expires
        ]
        for backend_id in expired:
            log.warning("backend.registration_expired", backend=backend_id)
            self.remove(backend_id)
        return expired

    # -- health ---------------------------------------------------------------------------------
    def on_probe(self, entry: BackendEntry, serving: bool, error: str = "") -> None:
        if self.entries.get(entry.backend_id) is not entry:
            return  # a probe of an entry that was replaced or removed
        entry.serving = serving
        before = entry.state
        if not serving:
            entry.state = State.UNAVAILABLE
            if error:
                entry.last_error = error
        elif entry.state in (State.UNKNOWN, State.UNAVAILABLE):
            # ERROR is left to call outcomes and the cooldown: the probe answering proves liveness,
            # not that calls succeed.
            entry.state = State.AVAILABLE
        self._transition(entry, before)

    def on_call_result(self, entry: BackendEntry, code: grpc.StatusCode, message: str = "") -> None:
        before = entry.state
        if code is grpc.StatusCode.OK:
            entry.consecutive_failures = 0
            entry.last_success_wall = time.time()
            if entry.serving and entry.state is not State.AVAILABLE:
                entry.state = State.AVAILABLE
        elif code in BACKEND_FAILURE_CODES:
            entry.consecutive_failures += 1
            entry.last_error = f"{code.name}: {message}"
            entry.last_error_wall = time.time()
            if entry.consecutive_failures >= self.settings.failure_threshold and entry.state is not State.UNAVAILABLE:
                entry.state = State.ERROR
                entry.cooldown_until = time.monotonic() + self.settings.cooldown_s
        else:
            return
        self._transition(entry, before)

    @staticmethod
    def _log(entry: BackendEntry) -> Any:
        """Each line about a backend names it and its capability."""
        return log.bind(backend=entry.backend_id, capability=entry.record.capability)

    def _transition(self, entry: BackendEntry, before: State) -> None:
        if entry.state is before:
            return
        self._log(entry).info(
            "backend.state", state=entry.state.name, previous=before.name, last_error=entry.last_error or None
        )
        self._notify()

    def state_rows(self) -> Iterator[tuple[str, str, str, bool]]:
        """What `capmesh_backend_state` shows: each backend's states, its current one marked."""
        for entry in list(self.entries.values()):
            for state in State:
                yield entry.record.capability, entry.backend_id, state.name, state is entry.state

    # -- views ----------------------------------------------------------------------------------
    def capabilities(self) -> list[pb.CapabilityStatus]:
        now = time.monotonic()
        grouped: dict[str, list[BackendEntry]] = {}
        for entry in self.entries.values():
            grouped.setdefault(entry.record.capability, []).append(entry)
        view = []
        for capability in sorted(grouped):
            entries = sorted(grouped[capability], key=lambda e: e.backend_id)
            services = sorted({s for e in entries for s in self.services_of(e.record)})
            view.append(
                pb.CapabilityStatus(
                    capability=capability,
                    state=summarise([e.state for e in entries]).to_proto(),
                    backends=[e.to_proto(now) for e in entries],
                    services=services,
                    queued=self.queued.get(capability, 0),
                )
            )
        return view

    async def close(self) -> None:
        metrics.backend_states.forget(self.state_rows)
        for watcher in self._watchers.values():
            watcher.stop()
        await asyncio.gather(*(w.wait_stopped() for w in self._watchers.values()), return_exceptions=True)
        self._watchers.clear()
        await asyncio.gather(*(e.close() for e in self.entries.values()), return_exceptions=True)
        self.entries.clear()
        self._by_service = {}
