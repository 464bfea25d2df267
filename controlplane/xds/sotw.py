"""State-of-the-world ADS (`StreamAggregatedResources`): every response carries the
type's whole set (CDS, LDS) or the changed subscribed resources (EDS, RDS).

- A NACK names the last *accepted* version; the rejected one is never resent. A new
  version has to come from a new snapshot.
- A response whose nonce is not the latest one sent for its type is stale and ignored;
  an ACK of the latest nonce with a version other than the one it carried is a protocol
  error.
- Only the first answer to a nonce counts; a later one is Envoy's EDS/RDS re-request
  after a cluster/listener change (see stream.py), and says only its names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from controlplane.xds import types, wire
from controlplane.xds.cache import Resource, Snapshot
from controlplane.xds.clientlog import clip
from controlplane.xds.requests import SotwRequest
from controlplane.xds.state import SotwTypeState
from controlplane.xds.stream import Stream

log = structlog.get_logger("controlplane.xds")


class SotwStream(Stream[SotwTypeState]):
    """State of the world: every response carries the type's whole set (CDS, LDS) or the
    changed subscribed resources (EDS, RDS)."""

    def new_state(self) -> SotwTypeState:
        return SotwTypeState()

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
        st.subscription = sub = self.shared.subscriptions.get(request.names())
        st.name_set = sub.name_set
        names = sub.names
        if type_url not in types.WILDCARD_TYPES:
            st.forget(st.names - names)
            st.dirty |= names - st.names
            st.names = names
        st.requested = True
        # Shared, not copied: views sort it when shown.
        self.callbacks.subscribed(self.id, type_url, sub.raw)
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
        await self._write_bytes(data)
