"""The ADS server (state of the world): one reader and one sender per stream.

The reader records what the proxy says (subscriptions, ACK, NACK) and wakes the sender;
only the sender writes, so a stream's responses are strictly ordered. Rules that bite
(see docs/architecture.md):

- A NACK names the last *accepted* version; the rejected one is never resent. A new
  version has to come from a new snapshot.
- A response whose nonce is not the latest one sent for its type is stale and ignored.
- After a cluster or listener changes, Envoy re-requests its EDS/RDS names with the
  same version and nonce as before, which looks exactly like an ACK: the sender forgets
  what it sent for the names those resources depend on, so they are answered again.
- Push order CDS, EDS, LDS, RDS. Listeners and routes wait for the proxy's answer to
  CDS, which Envoy sends once the changed clusters have their endpoints; clusters the
  new routes no longer use stay until the routes are answered (make before break).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.status.sync import ProxySync, SyncRegistry
from controlplane.translate.proxy import ProxyView, proxy_from_node
from controlplane.xds import types, wire
from controlplane.xds.cache import Resource, Snapshot, SnapshotCache, TypeResources

log = structlog.get_logger("controlplane.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_stream_ids = itertools.count(1)


@dataclass
class TypeState:
    requested: bool = False
    names: set[str] = field(default_factory=set)  # EDS/RDS subscriptions
    # Newest sent, per name. For CDS/LDS this is the snapshot's own (shared, read-only)
    # mapping unless clusters are retained; EDS/RDS streams keep a dict of their own.
    sent: Mapping[str, Resource] = field(default_factory=dict)
    in_flight: Mapping[str, Resource] = field(default_factory=dict)  # in the `nonce` response
    acked: Mapping[str, Resource] = field(default_factory=dict)  # what the proxy holds
    dirty: set[str] = field(default_factory=set)  # names to answer whatever their version
    retained: set[str] = field(default_factory=set)  # removed clusters kept for routes
    version: str = ""  # version_info of the last response
    nonce: str = ""  # nonce of the last response
    generation: int = 0  # snapshot generation the named resources were compared at
    answered: bool = False  # the proxy ACKed or NACKed `nonce`
    sent_at: float = 0.0  # monotonic
    raw_names: tuple[str, ...] = ()  # SotW: the last request's names, as sent
    rejected: set[str] = field(default_factory=set)  # SotW EDS/RDS: sent version NACKed
    wildcard: bool = False  # delta: subscribed to every resource of the type
    # delta: responses not answered yet, nonce -> (resources sent, names removed)
    outstanding: dict[str, tuple[dict[str, Resource], set[str]]] = field(default_factory=dict)

    def unshare(self) -> None:
        """Before `sent` changes: when it is also `acked` (a proxy in sync), give `sent` a
        copy of its own; `acked`, which the sync registry shows, stays as it is."""
        if self.sent is self.acked:
            self.sent = dict(self.sent)


class Stream:
    """What SotW and Delta streams share: lifecycle, the node, the push order and its
    gates. Subclasses read requests and build responses."""

    def __init__(self, server: AdsServer, context: grpc.aio.ServicerContext) -> None:
        self.server = server
        self.cache = server.cache
        self.context = context
        self.id = next(_stream_ids)
        self.peer = context.peer() or ""
        self.proxy: ProxyView | None = None
        self.sync: ProxySync | None = None
        self.states = {t: TypeState() for t in types.PUSH_ORDER}
        self.wake = self.cache.watch()
        self._nonces = itertools.count(1)

    # -- lifecycle --------------------------------------------------------------------------
    async def run(self, requests: Any) -> None:
        reader = asyncio.create_task(self._read(requests), name=f"ads-read-{self.id}")
        sender = asyncio.create_task(self._send_loop(), name=f"ads-send-{self.id}")
        try:
            done, _ = await asyncio.wait({reader, sender},
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    log.warning("stream_error", stream=self.id, node=self.node_id,
                                error=f"{type(exc).__name__}: {exc}")
        finally:
            # Bookkeeping first: it must happen even if a task is slow to wind down.
            self.cache.unwatch(self.wake)
            self.server.registry.disconnect(self.id)
            if self.proxy is not None:
                log.info("disconnected", stream=self.id, node=self.node_id)
            for task in (reader, sender):
                task.cancel()
            await asyncio.gather(reader, sender, return_exceptions=True)

    @property
    def node_id(self) -> str:
        return self.proxy.node_id if self.proxy else ""

    async def _read(self, requests: Any) -> None:
        async for request in requests:
            self.on_request(request)

    # -- requests ---------------------------------------------------------------------------
    def _connect(self, request: Any) -> None:
        if request.HasField("node"):
            self.proxy = proxy_from_node(request.node)
        else:
            self.proxy = ProxyView(node_id=f"unknown-{self.id}")
            log.warning("no_node", stream=self.id, peer=self.peer)
        p = self.proxy
        self.sync = ProxySync(stream_id=self.id, node_id=p.node_id, cluster=p.cluster,
                              peer=self.peer, connected_at=time.time(), metadata=p.metadata,
                              build_version=p.build_version)
        self.server.registry.connect(self.sync)
        log.info("connected", stream=self.id, node=p.node_id, cluster=p.cluster,
                 peer=self.peer, bind_ip=p.bind_ip, namespace=p.namespace)

    # -- responses --------------------------------------------------------------------------
    async def _send_loop(self) -> None:
        await self.cache.ready.wait()  # never serve before the initial load finished
        while True:
            await self.wake.wait()
            self.wake.clear()
            snap = self.cache.snapshot
            if self.proxy is None or snap is None:
                continue
            await self.push(types.CLUSTER, snap, retain=True)
            await self.push(types.ENDPOINT, snap)
            # Envoy ACKs CDS only once the changed clusters warmed (got their endpoints):
            # until then, routes must not point at them. The ACK wakes this loop again.
            if self._waiting(types.CLUSTER):
                continue
            await self.push(types.LISTENER, snap)
            await self.push(types.ROUTE, snap)
            if self.states[types.CLUSTER].retained:
                if self._waiting(types.LISTENER) or self._waiting(types.ROUTE):
                    continue
                # Routes moved off the removed clusters and were answered: drop them now.
                await self.push(types.CLUSTER, snap, retain=False)
            if self.sync is not None:
                self.server.registry.pass_done(self.sync, snap.generation)

    def _waiting(self, type_url: str) -> bool:
        """Sent, not answered yet, and not given up on (a silent proxy must not stall the
        rest of its config forever)."""
        st = self.states[type_url]
        return (bool(st.nonce) and not st.answered
                and time.monotonic() - st.sent_at < self.server.answer_timeout)

    def on_request(self, request: Any) -> None:
        raise NotImplementedError

    def _state_for(self, request: Any) -> TypeState | None:
        """The type's state, connecting the proxy on its first request."""
        if self.proxy is None:
            self._connect(request)
        st = self.states.get(request.type_url)
        if st is None:
            log.warning("unsupported_type", node=self.node_id, type=request.type_url)
        return st

    async def push(self, type_url: str, snap: Snapshot, *, retain: bool = False) -> None:
        raise NotImplementedError

    def _current(self, type_url: str, snap: Snapshot
                 ) -> tuple[TypeResources, frozenset[str] | None]:
        """The type's resources for this proxy, and the names changed since the stream
        last compared them (None: compare everything; per-proxy types always do)."""
        assert self.proxy is not None
        res = snap.resources(type_url, self.proxy)
        if type_url not in snap.source.shared_types:
            return res, None
        return res, self.cache.changed_since(type_url, self.states[type_url].generation)

    def _invalidate_dependents(self, type_url: str, changed: list[Resource]) -> None:
        """After a cluster (listener) changed, Envoy re-requests its EDS (RDS) names with
        the same version and nonce as before, and the rebuilt resource stays warming until
        answered: forget what was sent for them, so they go out again."""
        if type_url not in types.DEPENDENT:
            return
        dependent = self.states[types.DEPENDENT[type_url]]
        deps = [dep for resource in changed for dep in resource.deps]
        if deps:
            dependent.unshare()
        for dep in deps:
            dependent.sent.pop(dep, None)
            dependent.dirty.add(dep)

    def _new_nonce(self, type_url: str, version: str, generation: int) -> str:
        assert self.sync is not None
        st = self.states[type_url]
        nonce = f"{self.id}-{next(self._nonces)}"
        st.version, st.nonce, st.answered = version, nonce, False
        st.sent_at = time.monotonic()
        # Look again once the answer is overdue, whatever else happens.
        asyncio.get_running_loop().call_later(self.server.answer_timeout, self.wake.set)
        self.server.registry.sent(self.sync, type_url, version, nonce, generation)
        return nonce

    def _nack(self, type_url: str, nonce: str, accepted: str, message: str) -> None:
        assert self.sync is not None
        st = self.states[type_url]
        self.server.registry.nacked(self.sync, type_url, st.version, nonce, message)
        log.warning("nack", node=self.node_id, type=types.short(type_url), version=st.version,
                    nonce=nonce, accepted_version=accepted, error=message)

    def _ack(self, type_url: str, nonce: str, version: str) -> None:
        assert self.sync is not None
        st = self.states[type_url]
        self.server.registry.acked(self.sync, type_url, version, nonce, st.acked)
        log.info("ack", node=self.node_id, type=types.short(type_url), version=version,
                 nonce=nonce)


class SotwStream(Stream):
    """State of the world: every response carries the type's whole set (CDS, LDS) or the
    changed subscribed resources (EDS, RDS)."""

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        st = self._state_for(request)
        if st is None:
            return
        type_url = request.type_url
        nonce = request.response_nonce
        if nonce and nonce != st.nonce:
            log.debug("stale_nonce", node=self.node_id, type=types.short(type_url),
                      nonce=nonce, latest=st.nonce)
            return
        if nonce:
            if request.HasField("error_detail"):
                # The proxy kept what it had before: that is what later diffs start from.
                if type_url in types.WILDCARD_TYPES:
                    st.sent = dict(st.acked)
                else:
                    st.rejected.update(st.in_flight)
                self._nack(type_url, nonce, request.version_info, request.error_detail.message)
            else:
                if type_url in types.WILDCARD_TYPES:
                    st.acked = st.in_flight
                else:
                    st.rejected.difference_update(st.in_flight)
                    if st.rejected:
                        st.acked.update(st.in_flight)
                    else:
                        # It holds everything it was sent: one mapping serves as both,
                        # until the next push copies `sent` (see TypeState.unshare).
                        st.acked = st.sent
                self._ack(type_url, nonce, request.version_info)
            st.answered = True
            st.in_flight = {}  # answered: holding it would keep a copy per stream
        raw = tuple(request.resource_names)
        if st.requested and raw == st.raw_names:
            # An ACK repeating the same subscriptions (the common case): nothing to diff.
            self.wake.set()
            return
        # Interned: thousands of streams subscribe to the same thousands of names, and each
        # request brings fresh copies of every one of them.
        raw = tuple(map(sys.intern, raw))
        st.raw_names = raw
        names = set(raw)
        if type_url not in types.WILDCARD_TYPES:
            for gone in st.names - names:
                st.sent.pop(gone, None)
                st.acked.pop(gone, None)
                st.rejected.discard(gone)
            st.dirty |= names if not st.requested else names - st.names
            st.names = names
        st.requested = True
        # The request's own tuple, shared rather than copied: at thousands of names per
        # proxy, copies are most of a stream's memory. Views sort it when shown.
        self.server.registry.subscribed(self.sync, type_url, raw)
        self.wake.set()

    async def push(self, type_url: str, snap: Snapshot, *, retain: bool = False) -> None:
        if type_url in types.WILDCARD_TYPES:
            await self._push_all(type_url, snap, retain=retain)
        else:
            await self._push_named(type_url, snap)

    async def _push_all(self, type_url: str, snap: Snapshot, *, retain: bool) -> None:
        assert self.proxy is not None
        st = self.states[type_url]
        if not st.requested:
            return
        res = snap.resources(type_url, self.proxy)
        if res.version == st.version:
            return  # current (the same set), or rejected: never resent
        items = res.items  # shared by every stream: read, never written
        version = res.version
        retained: dict[str, Resource] = {}
        if retain and type_url == types.CLUSTER and self.states[types.LISTENER].requested:
            retained = {n: r for n, r in st.sent.items() if n not in items}
            if retained:
                version = f"{res.version}+{len(retained)}"
        if version == st.version:
            return
        old_sent = st.sent
        changed = [r for n, r in items.items()
                   if (old := old_sent.get(n)) is None or old.version != r.version]
        # State first, then the write: the answer may be read before the write returns.
        st.sent = {**items, **retained} if retained else items
        st.retained = set(retained)
        self._invalidate_dependents(type_url, changed)
        await self._send(type_url, version, [*items.values(), *retained.values()],
                         snap.generation, in_flight=st.sent)

    async def _push_named(self, type_url: str, snap: Snapshot) -> None:
        assert self.proxy is not None
        st = self.states[type_url]
        if not st.requested:
            return
        res, changed = self._current(type_url, snap)
        candidates = st.names if changed is None else (changed & st.names) | st.dirty
        to_send = sorted(
            n for n in candidates
            if n in st.names and (r := res.items.get(n)) is not None
            and ((old := st.sent.get(n)) is None or old.version != r.version))
        st.dirty.clear()
        st.generation = snap.generation
        if not to_send:
            return
        resources = [res.items[n] for n in to_send]
        st.unshare()
        for r in resources:
            st.sent[r.name] = r
        await self._send(type_url, res.version, resources, snap.generation)

    async def _send(self, type_url: str, version: str, resources: list[Resource],
                    generation: int, in_flight: Mapping[str, Resource] | None = None) -> None:
        nonce = self._new_nonce(type_url, version, generation)
        self.states[type_url].in_flight = (in_flight if in_flight is not None
                                           else {r.name: r for r in resources})
        data = wire.discovery_response(version, [r.entry for r in resources], type_url, nonce)
        log.info("push", node=self.node_id, type=types.short(type_url), version=version,
                 nonce=nonce, resources=len(resources), bytes=len(data))
        await self.context.write(data)


class DeltaStream(Stream):
    """Incremental xDS: only changed resources go out, deletions as removed_resources,
    subscriptions change by name, and what a reconnecting proxy already holds
    (initial_resource_versions) is not sent again. `sent` holds, per name, the version
    the proxy was last sent (a rejected one included, so it is never resent)."""

    def on_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        st = self._state_for(request)
        if st is None:
            return
        type_url = request.type_url
        nonce = request.response_nonce
        if nonce:
            answered = st.outstanding.pop(nonce, None)
            if answered is None:
                log.debug("stale_nonce", node=self.node_id, type=types.short(type_url),
                          nonce=nonce)
            elif request.HasField("error_detail"):
                self._nack(type_url, nonce, "", request.error_detail.message)
            else:
                updates, removed = answered
                st.acked.update(updates)
                for name in removed:
                    st.acked.pop(name, None)
                self._ack(type_url, nonce, st.version)
            st.answered = not st.outstanding
        subscribe = set(map(sys.intern, request.resource_names_subscribe))
        unsubscribe = set(request.resource_names_unsubscribe)
        if not st.requested:
            # Legacy wildcard: a first CDS/LDS request naming nothing means everything.
            st.wildcard = "*" in subscribe or (type_url in types.WILDCARD_TYPES
                                               and not subscribe)
            # What a reconnecting proxy holds: not sent again unless it changed.
            st.sent = {name: _Held(name, version) for name, version in
                       request.initial_resource_versions.items()}  # type: ignore[misc]
        if "*" in subscribe:
            st.wildcard = True
        if "*" in unsubscribe:
            st.wildcard = False
        subscribe.discard("*")
        unsubscribe.discard("*")
        for name in unsubscribe:
            st.names.discard(name)
            st.sent.pop(name, None)
            st.acked.pop(name, None)
        st.dirty |= subscribe - st.names
        st.names |= subscribe
        st.requested = True
        self.server.registry.subscribed(self.sync, type_url, tuple(sorted(st.names)))
        self.wake.set()

    async def push(self, type_url: str, snap: Snapshot, *, retain: bool = False) -> None:
        assert self.proxy is not None
        st = self.states[type_url]
        if not st.requested:
            return
        res, changed = self._current(type_url, snap)
        if st.wildcard:
            scope: set[str] | dict[str, Resource] = res.items
            candidates = (set(res.items) | set(st.sent)) if changed is None else (
                changed | st.dirty | st.retained)
        else:
            scope = st.names
            candidates = st.names if changed is None else (changed & st.names) | st.dirty
        st.dirty.clear()
        st.generation = snap.generation
        updates = [r for n in sorted(candidates)
                   if (n in scope or n in st.names) and (r := res.items.get(n)) is not None
                   and ((old := st.sent.get(n)) is None or old.version != r.version)]
        removed = sorted(n for n in candidates if n not in res.items and n in st.sent)
        keep: list[str] = []
        if retain and type_url == types.CLUSTER and self.states[types.LISTENER].requested:
            # Make before break: removed clusters go once routes moved off them.
            keep, removed = removed, []
        st.retained = set(keep)
        if not updates and not removed:
            return
        for r in updates:
            st.sent[r.name] = r
        for name in removed:
            st.sent.pop(name, None)
        self._invalidate_dependents(type_url, updates)
        nonce = self._new_nonce(type_url, res.version, snap.generation)
        st.outstanding[nonce] = ({r.name: r for r in updates}, set(removed))
        data = wire.delta_discovery_response(res.version, [r.delta_entry for r in updates],
                                             type_url, removed, nonce)
        log.info("push", node=self.node_id, type=types.short(type_url), version=res.version,
                 nonce=nonce, resources=len(updates), removed=len(removed), bytes=len(data),
                 delta=True)
        await self.context.write(data)


@dataclass(frozen=True)
class _Held:
    """A resource a reconnecting proxy reported holding: only its name and version."""

    name: str
    version: str


class AdsServer:
    def __init__(self, cache: SnapshotCache, registry: SyncRegistry,
                 answer_timeout: float = 5.0) -> None:
        self.cache = cache
        self.registry = registry
        self.answer_timeout = answer_timeout
        self.streams: dict[int, Stream] = {}

    async def _serve(self, stream: Stream, requests: Any) -> None:
        self.streams[stream.id] = stream
        try:
            await stream.run(requests)
        finally:
            self.streams.pop(stream.id, None)

    async def _sotw(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        await self._serve(SotwStream(self, context), requests)

    async def _delta(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        await self._serve(DeltaStream(self, context), requests)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=None,  # responses are assembled as bytes (wire.py)
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=None,
            ),
        })


async def start_grpc_server(handlers: list[grpc.GenericRpcHandler], address: str
                            ) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[
        ("grpc.max_send_message_length", 256 * 1024 * 1024),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ])
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port
