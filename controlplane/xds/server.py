"""The ADS server (state of the world): one reader and one sender per stream.

The reader records what the proxy says (subscriptions, ACK, NACK) and wakes the sender;
only the sender writes, so a stream's responses are strictly ordered. Rules that bite
(see docs/architecture.md):

- A NACK names the last *accepted* version; the rejected one is never resent. A new
  version has to come from a new snapshot.
- A response whose nonce is not the latest one sent for its type is stale and ignored.
  An answer naming a nonce this stream never sent, or ACKing the latest nonce with a
  version other than the one it carried, is a protocol error: recorded like a NACK
  (never SYNCED), logged (rate-limited, see JunkLog), never taken as an ACK.
- Only the first answer to a nonce counts; a later one is a re-request (below).
- A node whose id, cluster or metadata is over its limit (MAX_NODE_*) is refused with
  INVALID_ARGUMENT before anything is recorded: a 15 MB node id made every
  `proxy-status` fail and every log line of the stream 15 MB.
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
from collections import deque
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.status.sync import ProxySync, SyncRegistry
from controlplane.translate.proxy import ProxyView, proxy_from_node
from controlplane.xds import types, wire
from controlplane.xds.cache import Resource, Snapshot, SnapshotCache, TypeResources
from controlplane.xds.requests import SotwRequest
from controlplane.xds.subscriptions import NameSet, Subscription, Subscriptions

log = structlog.get_logger("controlplane.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_stream_ids = itertools.count(1)

# What a node may carry. An Istio sidecar's id is about 100 characters, its metadata a few
# kB, and Envoy's whole node (its extension list included) some 20 kB; these leave wide
# room and keep one proxy's row and log lines small.
MAX_NODE_BYTES = 256 * 1024  # the serialized Node
MAX_NODE_ID = 1024  # characters
MAX_NODE_CLUSTER = 1024  # characters
MAX_NODE_METADATA_BYTES = 64 * 1024  # serialized
CLIP = 128  # characters of a client's string kept in a log line or message


def clip(text: str, limit: int = CLIP) -> str:
    """A client's string for a log line: whole when short, else its start and length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} characters)"


class StreamRejected(Exception):
    """Ends the stream with this gRPC status: the request can never be served."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class JunkLog:
    """A stream's warnings about requests it cannot use (an unknown type URL, an answer
    to a response never sent): the first of each event and type at once, then at most
    one line per `interval` seconds carrying how many were not logged (`suppressed`),
    and the rest when the stream ends. A client repeating a bad request wrote a
    warning per request."""

    KEYS = 32  # (event, type) pairs tracked per stream; further types share one count

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # -> [suppressed, last line]

    def warn(self, event: str, type_url: str, **fields: Any) -> None:
        key = (event, type_url)
        if key not in self._seen and len(self._seen) >= self.KEYS:
            key = (event, "")  # a client sending endless distinct types: one count
        entry = self._seen.get(key)
        now = self.clock()
        if entry is None:
            self._seen[key] = [0, now]
            log.warning(event, type=clip(type_url), **fields)
        elif now - entry[1] >= self.interval:
            log.warning(event, type=clip(type_url), suppressed=int(entry[0]), **fields)
            entry[0], entry[1] = 0, now
        else:
            entry[0] += 1

    def flush(self, **fields: Any) -> None:
        """The counts not logged yet (the stream ends)."""
        for (event, type_url), entry in self._seen.items():
            if entry[0]:
                log.warning(event, type=clip(type_url) or "(other types)",
                            suppressed=int(entry[0]), stream_ended=True, **fields)
                entry[0] = 0


class Owned(dict[str, Any]):
    """A mapping one stream made for itself and may write. Every other mapping a stream
    holds is shared (a snapshot's, another field's) and is only ever replaced."""


@dataclass
class TypeState:
    requested: bool = False
    # EDS/RDS subscriptions: `name_set.names`, shared by every stream naming the same.
    names: Set[str] = frozenset()
    name_set: NameSet | None = None
    subscription: Subscription | None = None  # SotW: the last request's names, as sent
    # Newest sent, per name. Whenever it equals what the snapshot holds (a proxy
    # subscribed to everything, in step) it *is* the snapshot's mapping, shared by every
    # such stream; `own_sent()` makes a stream's own before a write.
    sent: Mapping[str, Resource] = field(default_factory=Owned)
    in_flight: Mapping[str, Resource] = field(default_factory=dict)  # in the `nonce` response
    acked: Mapping[str, Resource] = field(default_factory=Owned)  # what the proxy holds
    dirty: set[str] = field(default_factory=set)  # newly subscribed: compare these too
    # Answer these whatever their version: Envoy re-requests them after their cluster
    # (listener) changed, and the new one stays warming until they come.
    resend: set[str] = field(default_factory=set)
    retained: set[str] = field(default_factory=set)  # removed clusters kept for routes
    version: str = ""  # version_info of the last response
    nonce: str = ""  # nonce of the last response
    generation: int = 0  # snapshot generation the named resources were compared at
    answered: bool = False  # the proxy ACKed or NACKed `nonce`
    sent_at: float = 0.0  # monotonic
    large: bool = False  # the last response was at least LargeResponses.threshold bytes
    rejected: set[str] = field(default_factory=set)  # EDS/RDS, Delta: sent version NACKed
    wildcard: bool = False  # delta: subscribed to every resource of the type
    # delta: responses not answered yet, nonce -> (resources sent, names removed, version,
    # snapshot generation)
    outstanding: dict[str, tuple[Mapping[str, Resource], set[str], str, int]] = field(
        default_factory=dict)

    def own_sent(self) -> Owned:
        """`sent`, writable: a copy when it is shared, with the snapshot or with `acked`
        (a proxy in sync; `acked`, which the sync registry shows, stays as it was)."""
        if type(self.sent) is not Owned or self.sent is self.acked:
            self.sent = Owned(self.sent)
        return self.sent  # type: ignore[return-value]

    def forget(self, names: Set[str]) -> None:
        """Unsubscribed: what was sent, held and rejected under these names."""
        if not names:
            return
        sent, acked = self.own_sent(), self.own_acked()
        for name in names:
            sent.pop(name, None)
            acked.pop(name, None)
            self.rejected.discard(name)

    def own_acked(self) -> Owned:
        if type(self.acked) is not Owned or self.acked is self.sent:
            self.acked = Owned(self.acked)
        return self.acked  # type: ignore[return-value]


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
        self._nonce_count = 0  # this stream's own nonces are `<id>-1` .. `<id>-<count>`
        self._generation_sent = 0  # newest snapshot generation of a response sent
        self._holds_large = False  # one of the server's LargeResponses places
        self.junk = JunkLog(server.junk_log_interval)

    # -- lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        reader = asyncio.create_task(self._read(), name=f"ads-read-{self.id}")
        sender = asyncio.create_task(self._send_loop(), name=f"ads-send-{self.id}")
        try:
            done, _ = await asyncio.wait({reader, sender},
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if isinstance(exc, StreamRejected):
                        # Returning with a status set ends the call with it.
                        self.context.set_code(exc.code)
                        self.context.set_details(exc.details)
                        continue
                    log.warning("stream_error", stream=self.id, node=self.node_id,
                                error=f"{type(exc).__name__}: {exc}")
        finally:
            self.junk.flush(stream=self.id, node=self.node_id)
            # Bookkeeping first: it must happen even if a task is slow to wind down.
            if self._holds_large:
                self._holds_large = False
                self.server.large.release()
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

    async def _read(self) -> None:
        """`context.read()`, not `async for` over the handler's requests: grpc.aio's iterator
        holds the last message until the next one comes, and a SotW ACK of endpoints
        is 140 kB (every subscribed name): after an endpoint change every stream kept
        its ACK until its next request."""
        read = self.context.read
        while True:
            request = await read()
            if request is grpc.aio.EOF:
                return
            self.on_request(request)
            del request  # not kept while waiting for the next one

    # -- requests ---------------------------------------------------------------------------
    def _reject_node(self, field_name: str, size: int, limit: int, unit: str,
                     value: str = "") -> None:
        details = f"{field_name} is {size} {unit}, over the limit of {limit} {unit}"
        log.warning("node_rejected", stream=self.id, peer=self.peer, field=field_name,
                    size=size, limit=limit, value=clip(value) if value else None)
        raise StreamRejected(grpc.StatusCode.INVALID_ARGUMENT, details)

    def _check_node(self, node: Any, size: int) -> None:
        """Refuse a node over its limits (MAX_NODE_*), before anything records or logs
        it: the field at fault if one is, else the node as a whole."""
        if len(node.id) > MAX_NODE_ID:
            self._reject_node("node.id", len(node.id), MAX_NODE_ID, "characters", node.id)
        if len(node.cluster) > MAX_NODE_CLUSTER:
            self._reject_node("node.cluster", len(node.cluster), MAX_NODE_CLUSTER, "characters",
                              node.cluster)
        if node.HasField("metadata") and (
                metadata := node.metadata.ByteSize()) > MAX_NODE_METADATA_BYTES:
            self._reject_node("node.metadata", metadata, MAX_NODE_METADATA_BYTES, "bytes")
        if size > MAX_NODE_BYTES:
            self._reject_node("node", size, MAX_NODE_BYTES, "bytes")

    def _connect(self, node_size: int, node: Any) -> None:
        node = node()
        if node is not None:
            self._check_node(node, node_size)
            self.proxy = proxy_from_node(node)
        else:
            self.proxy = ProxyView(node_id=f"unknown-{self.id}")
            log.warning("no_node", stream=self.id, peer=self.peer)
        p = self.proxy
        others = self.server.registry.by_node(p.node_id)
        if others:
            # Kept apart (rows are per stream), but worth a look: an Envoy hot restart,
            # a reconnect before the old stream was seen to end, or a forged node id.
            log.warning("duplicate_node_id", stream=self.id, node=p.node_id, peer=self.peer,
                        other_streams=[o.stream_id for o in others],
                        other_peers=[o.peer for o in others])
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
            self._release_large()  # an answer may be overdue: that is what woke us
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

    def _answer_unblocks(self, type_url: str) -> bool:
        """Whether an answer for `type_url` can let the sender send something: the CDS
        answer opens the gate for listeners and routes, and their answers let retained
        clusters go. (New snapshots and overdue answers wake the sender themselves.)"""
        if type_url == types.CLUSTER:
            return True
        if type_url in (types.LISTENER, types.ROUTE):
            return bool(self.states[types.CLUSTER].retained)
        return False

    def _waiting(self, type_url: str) -> bool:
        """Sent, not answered yet, and not given up on (a silent proxy must not stall the
        rest of its config forever)."""
        st = self.states[type_url]
        return (bool(st.nonce) and not st.answered
                and time.monotonic() - st.sent_at < self.server.answer_timeout)

    def _release_large(self) -> None:
        if self._holds_large and not any(
                st.large and self._waiting(t) for t, st in self.states.items()):
            self._holds_large = False
            self.server.large.release()

    def on_request(self, request: Any) -> None:
        raise NotImplementedError

    def _node(self, request: Any) -> Callable[[], Any]:
        """The request's node, parsed when called."""
        return lambda: request.node if request.HasField("node") else None

    def _node_size(self, request: Any) -> int:
        return request.node.ByteSize() if request.HasField("node") else 0

    def _state_for(self, request: Any) -> TypeState | None:
        """The type's state, connecting the proxy on its first request."""
        if self.proxy is None:
            self._connect(self._node_size(request), self._node(request))
        st = self.states.get(request.type_url)
        if st is None:
            self.junk.warn("unsupported_type", request.type_url, stream=self.id,
                           node=self.node_id)
        return st

    def _issued(self, nonce: str) -> bool:
        """Whether this stream may have sent `nonce`: one of its own (`<id>-<n>`), or a
        shared response's (`<generation>.<n>`) of a generation it was sent. (Shared
        nonces are not remembered one by one; a made-up one of that form passes here,
        is taken as stale and changes nothing.)"""
        own, sep, n = nonce.partition("-")
        if sep:
            return (own == str(self.id) and n.isdigit() and len(n) < 20
                    and 0 < int(n) <= self._nonce_count)
        generation, sep, n = nonce.partition(".")
        return bool(sep) and generation.isdigit() and n.isdigit() and len(generation) < 20 \
            and int(generation) <= self._generation_sent

    def _protocol_error(self, type_url: str, nonce: str, version: str, message: str) -> None:
        """An answer that cannot be true: recorded like a NACK (so never SYNCED), not
        taken as Envoy's rejection of the config."""
        assert self.sync is not None
        self.server.registry.protocol_error(self.sync, type_url, version, clip(nonce),
                                            message)
        self.junk.warn("protocol_error", type_url, stream=self.id, node=self.node_id,
                       nonce=clip(nonce), error=message)

    async def push(self, type_url: str, snap: Snapshot, *, retain: bool = False) -> None:
        raise NotImplementedError

    def _current(self, type_url: str, snap: Snapshot
                 ) -> tuple[TypeResources, frozenset[str] | None]:
        """The type's resources for this proxy, and the names changed since the stream
        last compared them (None: compare everything; per-proxy types always do)."""
        assert self.proxy is not None
        res = snap.resources(type_url, self.proxy)
        generation = self.states[type_url].generation
        if type_url not in snap.source.shared_types or not generation:
            # A stream's first pass compares everything: a reconnecting Delta proxy may
            # hold resources that no recent change names.
            return res, None
        return res, self.cache.changed_since(type_url, generation)

    def _invalidate_dependents(self, type_url: str, changed: list[Resource]) -> None:
        """After a cluster (listener) changed, Envoy re-requests its EDS (RDS) names with
        the same version and nonce as before, and the rebuilt resource stays warming until
        answered: forget what was sent for them, so they go out again."""
        if type_url not in types.DEPENDENT:
            return
        dependent = self.states[types.DEPENDENT[type_url]]
        for resource in changed:
            dependent.resend.update(resource.deps)

    def _new_nonce(self, type_url: str, version: str, size: int,
                   shared: str | None = None) -> str:
        """Number the next response of the type (`size` bytes), or give it the nonce of a
        response shared with other streams (Snapshot.response). From here on, answers to
        the previous one are stale, even while the response waits for `_sending`."""
        st = self.states[type_url]
        if shared is None:
            self._nonce_count += 1
            nonce = f"{self.id}-{self._nonce_count}"
        else:
            nonce = shared
        st.version, st.nonce, st.answered = version, nonce, False
        st.large = size >= self.server.large.threshold
        return nonce

    async def _sending(self, type_url: str, version: str, nonce: str,
                       generation: int) -> None:
        """Wait for a place if the response is large (LargeResponses), then record it as
        sent: the clock for its answer starts now."""
        assert self.sync is not None
        st = self.states[type_url]
        if st.large and not self._holds_large:
            # Holding one place at most, and keeping it until every large response
            # was answered, a holder never waits for another: no deadlock.
            await self.server.large.acquire()
            self._holds_large = True
        st.sent_at = time.monotonic()
        self._generation_sent = max(self._generation_sent, generation)
        self.server.deadlines.add(st.sent_at + self.server.answer_timeout, self.wake, st,
                                  nonce)
        self.server.registry.sent(self.sync, type_url, version, nonce, generation)

    def _nack(self, type_url: str, nonce: str, accepted: str, message: str,
              version: str | None = None, generation: int | None = None) -> None:
        """`version`, `generation`: of the rejected response, when it is not the last
        one sent (Delta: several in flight)."""
        assert self.sync is not None
        rejected = self.states[type_url].version if version is None else version
        self.server.registry.nacked(self.sync, type_url, rejected, nonce, message,
                                    generation)
        log.warning("nack", node=self.node_id, type=types.short(type_url), version=rejected,
                    nonce=nonce, accepted_version=clip(accepted), error=message)

    def _ack(self, type_url: str, nonce: str, version: str) -> None:
        assert self.sync is not None
        st = self.states[type_url]
        self.server.registry.acked(self.sync, type_url, version, nonce, st.acked)
        log.info("ack", node=self.node_id, type=types.short(type_url), version=version,
                 nonce=nonce)


class SotwStream(Stream):
    """State of the world: every response carries the type's whole set (CDS, LDS) or the
    changed subscribed resources (EDS, RDS)."""

    def _node(self, request: SotwRequest) -> Callable[[], Any]:
        return request.node

    def _node_size(self, request: SotwRequest) -> int:
        return request.node_size()

    def on_request(self, request: SotwRequest) -> None:
        st = self._state_for(request)
        if st is None:
            return
        type_url = request.type_url
        nonce = request.response_nonce
        if nonce and nonce != st.nonce:
            if not self._issued(nonce):
                kind = "ACK" if request.error_message() is None else "NACK"
                self._protocol_error(type_url, nonce, clip(request.version_info),
                                     f"{kind} for nonce {clip(nonce)!r} which was never sent")
                return
            log.debug("stale_nonce", node=self.node_id, type=types.short(type_url),
                      nonce=clip(nonce), latest=st.nonce)
            return
        # Only the first answer to a nonce is one. A later one (after a cluster/listener
        # change Envoy re-requests EDS/RDS with the version and nonce it last answered)
        # counts as no ACK and no NACK: its names are all it says.
        if nonce and not st.answered:
            error = request.error_message()
            if error is None and request.version_info != st.version:
                # Never SYNCED by it: handled as a rejection, since what the proxy
                # holds is not known.
                error = (f"ACK for version {clip(request.version_info)!r} which was never "
                         f"sent (nonce {nonce!r} carried version {st.version!r})")
                protocol = True
            else:
                protocol = False
            if error is not None:
                # The proxy kept what it had before: that is what later diffs start from.
                if type_url in types.WILDCARD_TYPES:
                    st.sent = st.acked
                else:
                    st.rejected.update(st.in_flight)
                if protocol:
                    self._protocol_error(type_url, nonce, st.version, error)
                else:
                    self._nack(type_url, nonce, request.version_info, error)
            else:
                if type_url in types.WILDCARD_TYPES:
                    st.acked = st.in_flight
                else:
                    st.rejected.difference_update(st.in_flight)
                    if st.rejected:
                        st.own_acked().update(st.in_flight)
                    else:
                        # It holds everything it was sent: one mapping serves as both
                        # (see TypeState.own_sent).
                        st.acked = st.sent
                self._ack(type_url, nonce, request.version_info)
            st.answered = True
            st.in_flight = {}  # answered: holding it would keep a copy per stream
            self._release_large()
        if request.names_are(st.subscription):
            # An ACK repeating the same subscriptions (the common case): nothing to diff,
            # and a pass of the sender only if the answer lets something go out.
            if self._answer_unblocks(type_url):
                self.wake.set()
            return
        st.subscription = sub = self.server.subscriptions.get(request.names())
        st.name_set = sub.name_set
        names = sub.names
        if type_url not in types.WILDCARD_TYPES:
            st.forget(st.names - names)
            st.dirty |= names - st.names
            st.names = names
        st.requested = True
        # Shared, not copied: views sort it when shown.
        self.server.registry.subscribed(self.sync, type_url, sub.raw)
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
        if retained:
            await self._send(type_url, version, [*items.values(), *retained.values()],
                             snap, in_flight=st.sent)
        else:
            await self._send(type_url, version, res.joined(), snap, in_flight=items)

    async def _push_named(self, type_url: str, snap: Snapshot) -> None:
        assert self.proxy is not None
        st = self.states[type_url]
        if not st.requested:
            return
        res, changed = self._current(type_url, snap)
        names, items, sent, resend = st.names, res.items, st.sent, st.resend
        assert st.name_set is not None
        if changed is None and not sent and st.name_set.covers(res):
            # The first answer to a proxy subscribed to everything: the whole set, in a
            # response body every such stream shares (a connect storm is mostly these).
            st.dirty.clear()
            resend.clear()
            st.generation = snap.generation
            if items:
                st.sent = items
                await self._send(type_url, res.version, res.joined(), snap,
                                 in_flight=items)
            return
        candidates = names if changed is None else (changed & names) | st.dirty | resend
        to_send = sorted(
            n for n in candidates
            if n in names and (r := items.get(n)) is not None
            and (n in resend or (old := sent.get(n)) is None or old.version != r.version))
        st.dirty.clear()
        resend.clear()
        st.generation = snap.generation
        if st.name_set.covers(res):
            # After this push the proxy holds every resource at the snapshot's version
            # (each pass compares all that changed since the last one), and it
            # subscribes to all of them: the snapshot's mapping says what it was sent.
            st.sent = items
        elif to_send:
            own = st.own_sent()
            for n in to_send:
                own[n] = items[n]
        if to_send:
            await self._send(type_url, res.version, res.joined_subset(tuple(to_send)),
                             snap, in_flight={n: items[n] for n in to_send})

    async def _send(self, type_url: str, version: str, resources: list[Resource] | bytes,
                    snap: Snapshot, in_flight: Mapping[str, Resource] | None = None
                    ) -> None:
        """`resources`, or the joined entries of `in_flight` (TypeResources.joined or
        joined_subset): then the whole response is the one every stream sent the same
        bytes of this snapshot is written (Snapshot.response)."""
        data: bytes | None = None
        shared: str | None = None
        if isinstance(resources, bytes):
            assert in_flight is not None
            body = resources
            shared, data = snap.response(type_url, version, body)
        else:
            body = b"".join([r.entry for r in resources])
            if in_flight is None:
                in_flight = {r.name: r for r in resources}
        nonce = self._new_nonce(type_url, version, len(body), shared)
        await self._sending(type_url, version, nonce, snap.generation)
        self.states[type_url].in_flight = in_flight
        if data is None:
            data = wire.discovery_response(version, body, type_url, nonce)
        log.info("push", node=self.node_id, type=types.short(type_url), version=version,
                 nonce=nonce, resources=len(in_flight), bytes=len(data))
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
                if not self._issued(nonce):
                    kind = "NACK" if request.HasField("error_detail") else "ACK"
                    self._protocol_error(type_url, nonce, "",
                                         f"{kind} for nonce {clip(nonce)!r} which was "
                                         f"never sent")
                    return
                # Answered already (only the first answer counts) or not this type's.
                log.debug("stale_nonce", node=self.node_id, type=types.short(type_url),
                          nonce=clip(nonce))
            elif request.HasField("error_detail"):
                st.rejected.update(answered[0])
                self._nack(type_url, nonce, "", request.error_detail.message,
                           version=answered[2], generation=answered[3])
            else:
                updates, removed, version, _ = answered
                st.rejected.difference_update(updates)
                if not st.outstanding and not st.rejected:
                    # It holds everything it was sent: one mapping serves as both
                    # (see TypeState.own_sent).
                    st.acked = st.sent
                else:
                    acked = st.own_acked()
                    acked.update(updates)
                    for name in removed:
                        acked.pop(name, None)
                self._ack(type_url, nonce, version)
            st.answered = not st.outstanding
            self._release_large()
        subscribe = set(map(sys.intern, request.resource_names_subscribe))
        unsubscribe = set(request.resource_names_unsubscribe)
        if not st.requested:
            # Legacy wildcard: a first CDS/LDS request naming nothing means everything.
            st.wildcard = "*" in subscribe or (type_url in types.WILDCARD_TYPES
                                               and not subscribe)
            # What a reconnecting proxy holds: not sent again unless it changed.
            st.sent = Owned({name: _Held(name, version) for name, version in
                             request.initial_resource_versions.items()})
        if "*" in subscribe:
            st.wildcard = True
        if "*" in unsubscribe:
            st.wildcard = False
        subscribe.discard("*")
        unsubscribe.discard("*")
        unsubscribe &= st.names
        subscribe -= st.names
        st.forget(unsubscribe)
        if subscribe or unsubscribe or st.name_set is None:
            st.name_set = self.server.subscriptions.name_set(
                (st.names - unsubscribe) | subscribe)
            st.names = st.name_set.names
            st.dirty |= subscribe
            self.server.registry.subscribed(self.sync, type_url, st.names)
        st.requested = True
        self.wake.set()

    async def push(self, type_url: str, snap: Snapshot, *, retain: bool = False) -> None:
        assert self.proxy is not None
        st = self.states[type_url]
        if not st.requested:
            return
        res, changed = self._current(type_url, snap)
        resend = st.resend
        first_pass = not st.generation
        assert st.name_set is not None
        if (changed is None and not st.sent and not st.retained
                and (st.wildcard or st.name_set.covers(res))):
            # The first answer to a proxy that holds nothing and subscribes to everything:
            # the whole set, in a response body every such stream shares.
            st.dirty.clear()
            resend.clear()
            st.generation = snap.generation
            if res.items:
                st.sent = res.items
                self._invalidate_dependents(type_url, list(res.items.values()))
                await self._write(type_url, res.version, snap.generation, res.items,
                                  res.joined_delta(), [])
            elif not st.nonce:
                await self._write_empty(type_url, res.version, snap.generation)
            return
        if st.wildcard:
            scope: Set[str] | Mapping[str, Resource] = res.items
            candidates = (set(res.items) | set(st.sent)) if changed is None else (
                changed | st.dirty | st.retained | resend)
        else:
            scope = st.names
            candidates = st.names if changed is None else (
                (changed & st.names) | st.dirty | resend)
        st.dirty.clear()
        st.generation = snap.generation
        updates = [r for n in sorted(candidates)
                   if (n in scope or n in st.names) and (r := res.items.get(n)) is not None
                   and (n in resend or (old := st.sent.get(n)) is None
                        or old.version != r.version)]
        resend.clear()
        removed = sorted(n for n in candidates if n not in res.items and n in st.sent)
        keep: list[str] = []
        if retain and type_url == types.CLUSTER and self.states[types.LISTENER].requested:
            # Make before break: removed clusters go once routes moved off them.
            keep, removed = removed, []
        st.retained = set(keep)
        if not keep and (st.wildcard or st.name_set.covers(res)):
            # After this push the proxy was sent every resource in its scope at the
            # snapshot's version, and nothing else: the snapshot's mapping says so, shared
            # with every such stream.
            st.sent = res.items
        elif updates or removed or (first_pass and st.sent):
            sent = st.own_sent()
            for r in updates:
                sent[r.name] = r
            for name in removed:
                sent.pop(name, None)
            if first_pass:
                # What a reconnecting proxy reported holding at the current version: the
                # resource itself from now on (the registry shows what a proxy holds).
                for name, held in list(sent.items()):
                    if type(held) is _Held and (r := res.items.get(name)) is not None \
                            and r.version == held.version:
                        sent[name] = r
        if not updates and not removed:
            if not st.nonce:
                await self._write_empty(type_url, res.version, snap.generation)
            return
        self._invalidate_dependents(type_url, updates)
        await self._write(type_url, res.version, snap.generation,
                          {r.name: r for r in updates}, [r.delta_entry for r in updates],
                          removed)

    async def _write_empty(self, type_url: str, version: str, generation: int) -> None:
        """The first answer to a type when the proxy lacks nothing (a reconnect holding
        every current version, or nothing to hold): it says so, and its ACK shows the
        type in sync. Without it the type stayed NOT SENT, which proxy-status reports
        as a proxy waiting for config."""
        await self._write(type_url, version, generation, {}, [], [])

    async def _write(self, type_url: str, version: str, generation: int,
                     updates: Mapping[str, Resource], entries: list[bytes] | bytes,
                     removed: list[str]) -> None:
        """`entries`: the delta entries of `updates`, or those joined already."""
        st = self.states[type_url]
        size = len(entries) if isinstance(entries, bytes) else sum(map(len, entries))
        nonce = self._new_nonce(type_url, version, size)
        st.outstanding[nonce] = (updates, set(removed), version, generation)
        await self._sending(type_url, version, nonce, generation)
        data = wire.delta_discovery_response(version, entries, type_url, removed, nonce)
        log.info("push", node=self.node_id, type=types.short(type_url), version=version,
                 nonce=nonce, resources=len(updates), removed=len(removed), bytes=len(data),
                 delta=True)
        await self.context.write(data)


class LargeResponses:
    """At most `limit` streams at a time with a large response (a first full answer,
    mostly) written and not yet answered.

    gRPC takes a copy of every response and holds it until the proxy has read it, and
    `write()` returns long before that. When thousands of proxies connect at once (a
    control plane restart), each is written its whole config — about 1.7 MB per proxy at
    1,000 services — and proxies slower to read than the server is to write made those
    copies pile up (5,000 simulated proxies: 1.6 GB; 0.86-1.03 GB with the limit). A
    proxy's answer proves it read the response, so the place is held until then (or
    until the answer is overdue, or the stream ends). Small responses (an endpoint
    change) never wait."""

    def __init__(self, limit: int, threshold: int = 256 * 1024) -> None:
        self.threshold = threshold if limit > 0 else sys.maxsize
        self._places = asyncio.Semaphore(max(limit, 1))
        self.waiting = 0
        self.held = 0

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self._places.acquire()
        finally:
            self.waiting -= 1
        self.held += 1

    def release(self) -> None:
        self.held -= 1
        self._places.release()


class Deadlines:
    """Answers to check for at given times, on one timer. A timer per response sent was a
    heap entry per stream per push; deadlines here come in order (sent time + one fixed
    timeout), so a queue and a single timer for its head do. A stream is woken only if
    that response is still its newest of the type and still unanswered: waking every
    stream pushed to, answer or not, cost a sender pass per proxy a few seconds after
    each push."""

    def __init__(self) -> None:
        self._queue: deque[tuple[float, asyncio.Event, TypeState, str]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, at: float, event: asyncio.Event, state: TypeState, nonce: str) -> None:
        self._queue.append((at, event, state, nonce))
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._queue[0][0] - time.monotonic()
        self._timer = loop.call_at(loop.time() + max(delay, 0.0), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = time.monotonic()
        queue = self._queue
        while queue and queue[0][0] <= now:
            _, event, state, nonce = queue.popleft()
            if state.nonce == nonce and not state.answered:
                event.set()
        if queue:
            self._arm()


@dataclass(frozen=True)
class _Held:
    """A resource a reconnecting proxy reported holding: only its name and version."""

    name: str
    version: str


class AdsServer:
    def __init__(self, cache: SnapshotCache, registry: SyncRegistry,
                 answer_timeout: float = 5.0, large_responses: int = 128) -> None:
        self.cache = cache
        self.registry = registry
        self.answer_timeout = answer_timeout
        self.large = LargeResponses(large_responses)
        self.subscriptions = Subscriptions()
        self.junk_log_interval = 60.0  # seconds between a stream's repeated warnings
        # Streams look again once an answer is overdue, whatever else happens.
        self.deadlines = Deadlines()
        self.streams: dict[int, Stream] = {}

    async def _serve(self, stream: Stream) -> None:
        self.streams[stream.id] = stream
        try:
            await stream.run()
        finally:
            self.streams.pop(stream.id, None)

    async def _sotw(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        await self._serve(SotwStream(self, context))  # reads with context.read()

    async def _delta(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        await self._serve(DeltaStream(self, context))

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw,
                request_deserializer=SotwRequest,  # read lazily: see requests.py
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
        # Streams that arrived but that grpc.aio has not picked up yet (it takes one per
        # event-loop round trip) wait in gRPC core's pending queue, which by default
        # refuses new ones at random past 1,000 waiting (all past 3,000) and cancels those
        # waiting over 30 s. When thousands of proxies connect at once (a restart, a
        # connect storm) that refuses most of them; each retries, and the retries keep
        # the queue full: 5,000 proxies never all got back. Queue them instead.
        ("grpc.server.max_pending_requests", 1 << 20),
        ("grpc.server.max_pending_requests_hard_limit", 1 << 20),
        ("grpc.server_max_unrequested_time_in_server", 24 * 3600),
    ])
    server.add_generic_rpc_handlers(handlers)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port
