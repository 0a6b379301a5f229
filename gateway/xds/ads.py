"""The Aggregated Discovery Service (envoy v3, state of the world) on the gateway's gRPC port.

Proxyless gRPC clients (`xds:///<capability>`) and Envoy open one ADS stream each and ask for
listeners, routes, clusters and endpoints by type; `resources.py` builds them from the registry.
Per stream and per type the server keeps what the client subscribed to and the nonce and version
it last sent:
- a request with a stale nonce (an answer to an older response) is ignored, as the protocol says;
- an ACK (the last nonce, no error) changes nothing; a NACK (`error_detail`) is logged and that
  content is not sent again; a request naming other resources is answered at once;
- on every registry change (a backend added, removed, or changing state) and when an ERROR
  backend's cooldown ends, each subscription gets a new response if, and only if, the resources it
  covers changed. The version is a digest of that content, the nonce a counter of the stream.
Listeners and clusters asked for with no names mean "all of them" (Envoy asks that way); routes and
endpoints are sent only by name.

One snapshot of the registry serves every stream, rebuilt once per registry version.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import structlog
from envoy.service.discovery.v3 import ads_pb2_grpc
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse

from capmesh.gateway.server.registry.registry import Registry
from capmesh.gateway.server.xds.resources import CLUSTER, LISTENER, TYPES, Snapshot, build_snapshot, version_of
from capmesh.services.runtime.tasks import stop_tasks

log = structlog.get_logger("capmesh.gateway.xds")

WILDCARD_TYPES = frozenset({LISTENER, CLUSTER})  # no names asked: every resource of the type


@dataclass
class _Subscription:
    names: frozenset[str] | None  # None: every resource of the type
    nonce: str = ""
    version: str = ""  # of the last response sent


class _Changed:
    """The registry changed (or a cooldown ended): recheck every subscription."""


_CHANGED = _Changed()
Inbox = asyncio.Queue[DiscoveryRequest | _Changed | None]  # None: the client closed its side


class AggregatedDiscovery(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._snapshot: Snapshot | None = None
        self._built_for = -1  # the registry version the snapshot shows

    async def snapshot(self) -> Snapshot:
        snapshot, version = self._snapshot, self._registry.version
        expired = snapshot is not None and snapshot.expires_at is not None and time.monotonic() >= snapshot.expires_at
        if snapshot is None or self._built_for != version or expired:
            snapshot = await build_snapshot(self._registry)
            self._snapshot, self._built_for = snapshot, version
        return snapshot

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[DiscoveryResponse]:
        inbox: Inbox = asyncio.Queue()
        stream = _Stream(context.peer())
        tasks = [
            asyncio.ensure_future(self._read(request_iterator, inbox)),
            asyncio.ensure_future(self._watch(inbox)),
        ]
        try:
            while True:
                item = await self._next(inbox)
                if item is None:
                    return  # the client closed its side
                snapshot = await self.snapshot()
                if isinstance(item, _Changed):
                    for response in stream.changed(snapshot):
                        yield response
                else:
                    response = stream.request(item, snapshot)
                    if response is not None:
                        yield response
        finally:
            await stop_tasks(tasks)
            log.info("xds.stream_closed", node=stream.node, peer=stream.peer)

    async def _next(self, inbox: Inbox) -> DiscoveryRequest | _Changed | None:
        """The next request or change; a change when the snapshot expires first."""
        expires = self._snapshot.expires_at if self._snapshot is not None else None
        if expires is None:
            return await inbox.get()
        try:
            return await asyncio.wait_for(inbox.get(), max(0.0, expires - time.monotonic()))
        except TimeoutError:
            return _CHANGED

    @staticmethod
    async def _read(requests: AsyncIterator[DiscoveryRequest], inbox: Inbox) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for request in requests:
                inbox.put_nowait(request)
        inbox.put_nowait(None)

    async def _watch(self, inbox: Inbox) -> None:
        version = self._registry.version
        while True:
            version = await self._registry.wait_changed(version)
            inbox.put_nowait(_CHANGED)


class _Stream:
    """One client's subscriptions and what it was last sent."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.node = ""
        self._subscriptions: dict[str, _Subscription] = {}
        self._nonces = 0

    def request(self, request: DiscoveryRequest, snapshot: Snapshot) -> DiscoveryResponse | None:
        kind = request.type_url
        if request.node.id and not self.node:
            self.node = request.node.id
            log.info("xds.stream_opened", node=self.node, peer=self.peer)
        if kind not in TYPES:
            log.warning("xds.unknown_type", type_url=kind, node=self.node)
            return None
        subscription = self._subscriptions.get(kind)
        if subscription is not None and request.response_nonce and request.response_nonce != subscription.nonce:
            return None  # stale: answers a response older than the last one sent
        if request.HasField("error_detail"):
            log.warning(
                "xds.nack",
                type_url=kind,
                node=self.node,
                version=request.version_info,
                error=request.error_detail.message,
            )
        names = frozenset(request.resource_names) - {"*"}
        wanted = None if kind in WILDCARD_TYPES and (not names or "*" in request.resource_names) else names
        if subscription is not None and subscription.names == wanted:
            return None  # an ACK or a NACK of what it has: nothing new to say
        subscription = self._subscriptions[kind] = _Subscription(wanted)
        return self._respond(kind, subscription, snapshot, force=True)

    def changed(self, snapshot: Snapshot) -> list[DiscoveryResponse]:
        responses = []
        for kind, subscription in self._subscriptions.items():
            response = self._respond(kind, subscription, snapshot, force=False)
            if response is not None:
                responses.append(response)
        return responses

    def _respond(
        self, kind: str, subscription: _Subscription, snapshot: Snapshot, *, force: bool
    ) -> DiscoveryResponse | None:
        available = snapshot.resources[kind]
        names = sorted(available) if subscription.names is None else sorted(subscription.names & available.keys())
        chosen = {name: available[name] for name in names}
        version = version_of(chosen)
        if not force and version == subscription.version:
            return None
        self._nonces += 1
        subscription.nonce, subscription.version = str(self._nonces), version
        return DiscoveryResponse(
            version_info=version, resources=list(chosen.values()), type_url=kind, nonce=subscription.nonce
        )
