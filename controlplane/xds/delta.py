"""Incremental ADS (`DeltaAggregatedResources`): only changed resources go out,
deletions as `removed_resources`, subscriptions change by name, several responses may
be in flight (each answer names its nonce), and what a reconnecting proxy already holds
(`initial_resource_versions`) is not sent again.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Set
from dataclasses import dataclass

import structlog
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds import types, wire
from controlplane.xds.cache import Resource, Snapshot
from controlplane.xds.clientlog import clip
from controlplane.xds.state import DeltaTypeState, Owned
from controlplane.xds.stream import Stream

log = structlog.get_logger("controlplane.xds")


@dataclass(frozen=True)
class _Held:
    """A resource a reconnecting proxy reported holding: only its name and version."""

    name: str
    version: str



class DeltaStream(Stream[DeltaTypeState]):
    """Incremental xDS: only changed resources go out, deletions as removed_resources,
    subscriptions change by name, and what a reconnecting proxy already holds
    (initial_resource_versions) is not sent again. `sent` holds, per name, the version
    the proxy was last sent (a rejected one included, so it is never resent)."""

    def new_state(self) -> DeltaTypeState:
        return DeltaTypeState()

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
            st.name_set = self.shared.subscriptions.name_set(
                (st.names - unsubscribe) | subscribe)
            st.names = st.name_set.names
            st.dirty |= subscribe
            self.callbacks.subscribed(self.id, type_url, st.names)
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
            candidates: Set[str] = (set(res.items) | set(st.sent)) if changed is None else (
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
        await self._write_bytes(data)
