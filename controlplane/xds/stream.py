"""What SotW and Delta streams share: the lifecycle (a reader and a sender task), the
node, the push order and its gates, nonces, and reporting to the callbacks.

The reader records what the proxy says and wakes the sender; only the sender writes, so
a stream's responses are strictly ordered. Rules both protocols keep (see
docs/architecture.md, "The ADS streams"):

- Push order CDS, EDS, LDS, RDS. Listeners and routes wait for the proxy's answer to
  CDS, which Envoy sends once the changed clusters have their endpoints; clusters the
  new routes no longer use stay until the routes are answered (make before break).
- After a cluster or listener changes, Envoy re-requests its EDS/RDS names with the
  same version and nonce as before, which looks exactly like an ACK: the names those
  resources depend on go into the dependent type's `resend` set and are answered again
  whatever their version.
- An answer naming a nonce this stream never sent is a protocol error: recorded like a
  NACK (never SYNCED), logged (rate-limited, see JunkLog), never taken as an ACK.
- A node over its limits (xds/node.py) ends the stream before anything is recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import structlog

from controlplane.model.proxy import ProxyView
from controlplane.xds import types
from controlplane.xds.cache import Resource, Snapshot, SnapshotCache, TypeResources
from controlplane.xds.callbacks import StreamCallbacks
from controlplane.xds.clientlog import JunkLog, clip
from controlplane.xds.flow import Deadlines, LargeResponses
from controlplane.xds.node import StreamRejected, check_node, proxy_from_node
from controlplane.xds.state import TypeState
from controlplane.xds.subscriptions import Subscriptions

log = structlog.get_logger("controlplane.xds")

_stream_ids = itertools.count(1)

StateT = TypeVar("StateT", bound=TypeState)


@dataclass
class Shared:
    """What every stream of one server uses: the cache, the callbacks, flow control."""

    cache: SnapshotCache
    callbacks: StreamCallbacks
    answer_timeout: float  # seconds a response may go unanswered before pushes go on
    large: LargeResponses
    deadlines: Deadlines
    subscriptions: Subscriptions
    junk_log_interval: float  # seconds between a stream's repeated warnings


class Stream(Generic[StateT]):
    """One ADS connection. Subclasses read requests (`on_request`) and build responses
    (`push`); `states` holds their kind of TypeState (`new_state`) per type."""

    def __init__(self, shared: Shared, context: grpc.aio.ServicerContext) -> None:
        self.shared = shared
        self.cache = shared.cache
        self.callbacks = shared.callbacks
        self.context = context
        self.id = next(_stream_ids)
        self.peer = context.peer() or ""
        self.proxy: ProxyView | None = None
        self.states: dict[str, StateT] = {t: self.new_state() for t in types.PUSH_ORDER}
        self.wake = self.cache.watch()
        self._nonce_count = 0  # this stream's own nonces are `<id>-1` .. `<id>-<count>`
        self._generation_sent = 0  # newest snapshot generation of a response sent
        self._holds_large = False  # one of the server's LargeResponses places
        self.junk = JunkLog(shared.junk_log_interval)
        # For whoever must know the stream has nothing more to say (tests): requests
        # handled, responses written, and whether the sender waits with no wake-up due.
        self.handled = 0
        self.written = 0
        self._parked = False  # the sender waits for a wake-up
        self._blocked = False  # ...or for something no wake-up changes

    def new_state(self) -> StateT:
        raise NotImplementedError

    @property
    def idle(self) -> bool:
        """The sender has done all it can for now: it waits for the initial load, for a
        place for a large response, or for a wake-up that has not come."""
        return self._blocked or (self._parked and not self.wake.is_set())

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
                self.shared.large.release()
            self.cache.unwatch(self.wake)
            self.callbacks.closed(self.id)
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
            self.handled += 1
            del request  # not kept while waiting for the next one

    def _connect(self, node_size: int, node: Callable[[], Any]) -> None:
        parsed = node()
        if parsed is not None:
            check_node(parsed, node_size, self.id, self.peer)
            self.proxy = proxy_from_node(parsed)
        else:
            self.proxy = ProxyView(node_id=f"unknown-{self.id}")
            log.warning("no_node", stream=self.id, peer=self.peer)
        p = self.proxy
        self.callbacks.opened(self.id, self.peer, p)
        log.info("connected", stream=self.id, node=p.node_id, cluster=p.cluster,
                 peer=self.peer, bind_ip=p.bind_ip, namespace=p.namespace)

    # -- the push pass -----------------------------------------------------------------------
    async def _send_loop(self) -> None:
        self._blocked = True
        await self.cache.ready.wait()  # never serve before the initial load finished
        self._blocked = False
        while True:
            self._parked = True
            await self.wake.wait()
            self._parked = False
            self.wake.clear()
            self._release_large()  # an answer may be overdue: that is what woke us
            snap = self.cache.snapshot
            if self.proxy is None or snap is None:
                continue
            await self.push(types.CLUSTER, snap, retain=True)
            await self.push(types.ENDPOINT, snap)
            await self.push(types.SECRET, snap)
            # Envoy ACKs CDS only once the changed clusters warmed (got their endpoints
            # and the secrets of their TLS):
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
            self.callbacks.pass_done(self.id, snap.generation)

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
                and time.monotonic() - st.sent_at < self.shared.answer_timeout)

    def _release_large(self) -> None:
        if self._holds_large and not any(
                st.large and self._waiting(t) for t, st in self.states.items()):
            self._holds_large = False
            self.shared.large.release()

    async def push(self, type_url: str, snap: Snapshot, *, retain: bool = False) -> None:
        raise NotImplementedError

    def _current(self, type_url: str, snap: Snapshot
                 ) -> tuple[TypeResources, frozenset[str] | None]:
        """The type's resources for this proxy, and the names changed since the stream
        last compared them (None: compare everything; per-proxy types always do)."""
        assert self.proxy is not None
        res = snap.resources(type_url, self.proxy)
        generation = self.states[type_url].generation
        if (type_url not in snap.source.shared_types or not generation
                or snap.source.group_key(type_url, self.proxy) is not None):
            # A stream's first pass compares everything: a reconnecting Delta proxy may
            # hold resources that no recent change names. So does a proxy served a
            # shared type's own group (endpoints by locality): the change log follows
            # the shared set.
            return res, None
        return res, self.cache.changed_since(type_url, generation)

    def _invalidate_dependents(self, type_url: str, changed: list[Resource]) -> None:
        """After a cluster (listener) changed, Envoy re-requests its EDS (RDS) names with
        the same version and nonce as before, and the rebuilt resource stays warming until
        answered: mark them to be sent again (`resend`)."""
        if type_url not in types.DEPENDENT:
            return
        dependent = self.states[types.DEPENDENT[type_url]]
        for resource in changed:
            dependent.resend.update(resource.deps)

    # -- requests ---------------------------------------------------------------------------
    def on_request(self, request: Any) -> None:
        raise NotImplementedError

    def _node(self, request: Any) -> Callable[[], Any]:
        """The request's node, parsed when called."""
        return lambda: request.node if request.HasField("node") else None

    def _node_size(self, request: Any) -> int:
        return int(request.node.ByteSize()) if request.HasField("node") else 0

    def _state_for(self, request: Any) -> StateT | None:
        """The type's state, connecting the proxy on its first request; None for a type
        this server does not serve."""
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

    # -- what the stream reports ------------------------------------------------------------
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
        st.large = size >= self.shared.large.threshold
        return nonce

    async def _sending(self, type_url: str, version: str, nonce: str,
                       generation: int) -> None:
        """Wait for a place if the response is large (LargeResponses), then record it as
        sent: the clock for its answer starts now."""
        st = self.states[type_url]
        if st.large and not self._holds_large:
            # Holding one place at most, and keeping it until every large response
            # was answered, a holder never waits for another: no deadlock.
            self._blocked = True
            try:
                await self.shared.large.acquire()
            finally:
                self._blocked = False
            self._holds_large = True
        st.sent_at = time.monotonic()
        self._generation_sent = max(self._generation_sent, generation)
        self.shared.deadlines.add(st.sent_at + self.shared.answer_timeout, self.wake, st,
                                  nonce)
        self.callbacks.sent(self.id, type_url, version, nonce, generation)

    async def _write_bytes(self, data: bytes) -> None:
        self.written += 1
        await self.context.write(data)

    def _protocol_error(self, type_url: str, nonce: str, version: str, message: str) -> None:
        """An answer that cannot be true: recorded like a NACK (so never SYNCED), not
        taken as Envoy's rejection of the config."""
        self.callbacks.protocol_error(self.id, type_url, version, clip(nonce), message)
        self.junk.warn("protocol_error", type_url, stream=self.id, node=self.node_id,
                       nonce=clip(nonce), error=message)

    def _nack(self, type_url: str, nonce: str, accepted: str, message: str,
              version: str | None = None, generation: int | None = None) -> None:
        """`version`, `generation`: of the rejected response, when it is not the last
        one sent (Delta: several in flight)."""
        rejected = self.states[type_url].version if version is None else version
        self.callbacks.nacked(self.id, type_url, rejected, nonce, message, generation)
        log.warning("nack", node=self.node_id, type=types.short(type_url), version=rejected,
                    nonce=nonce, accepted_version=clip(accepted), error=message)

    def _ack(self, type_url: str, nonce: str, version: str) -> None:
        st = self.states[type_url]
        self.callbacks.acked(self.id, type_url, version, nonce, st.acked)
        log.info("ack", node=self.node_id, type=types.short(type_url), version=version,
                 nonce=nonce)
