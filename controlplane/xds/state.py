"""A stream's state per xDS type: what both protocols keep, and what each adds."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from controlplane.xds.cache import Resource
from controlplane.xds.subscriptions import NameSet, Subscription


class Owned(dict[str, Any]):
    """A mapping one stream made for itself and may write. Every other mapping a stream
    holds is shared (a snapshot's, another field's) and is only ever replaced."""


@dataclass
class TypeState:
    """What SotW and Delta keep alike for one type of one stream."""

    requested: bool = False
    # EDS/RDS subscriptions: `name_set.names`, shared by every stream naming the same.
    names: Set[str] = frozenset()
    name_set: NameSet | None = None
    # Newest sent, per name. Whenever it equals what the snapshot holds (a proxy
    # subscribed to everything, in step) it *is* the snapshot's mapping, shared by every
    # such stream; `own_sent()` makes a stream's own before a write.
    sent: Mapping[str, Resource] = field(default_factory=Owned)
    acked: Mapping[str, Resource] = field(default_factory=Owned)  # what the proxy holds
    dirty: set[str] = field(default_factory=set)  # newly subscribed: compare these too
    # Answer these whatever their version: Envoy re-requests them after their cluster
    # (listener) changed, and the new one stays warming until they come.
    resend: set[str] = field(default_factory=set)
    retained: set[str] = field(default_factory=set)  # removed clusters kept for routes
    rejected: set[str] = field(default_factory=set)  # EDS/RDS, Delta: sent version NACKed
    version: str = ""  # version_info of the last response
    nonce: str = ""  # nonce of the last response
    generation: int = 0  # snapshot generation the named resources were compared at
    answered: bool = False  # the proxy ACKed or NACKed `nonce`
    sent_at: float = 0.0  # monotonic
    large: bool = False  # the last response was at least LargeResponses.threshold bytes

    def own_sent(self) -> Owned:
        """`sent`, writable: a copy when it is shared, with the snapshot or with `acked`
        (a proxy in sync; `acked`, which the sync registry shows, stays as it was)."""
        if type(self.sent) is not Owned or self.sent is self.acked:
            self.sent = Owned(self.sent)
        assert isinstance(self.sent, Owned)
        return self.sent

    def own_acked(self) -> Owned:
        if type(self.acked) is not Owned or self.acked is self.sent:
            self.acked = Owned(self.acked)
        assert isinstance(self.acked, Owned)
        return self.acked

    def forget(self, names: Set[str]) -> None:
        """Unsubscribed: what was sent, held and rejected under these names."""
        if not names:
            return
        sent, acked = self.own_sent(), self.own_acked()
        for name in names:
            sent.pop(name, None)
            acked.pop(name, None)
            self.rejected.discard(name)


@dataclass
class SotwTypeState(TypeState):
    """State of the world: one response in flight per type."""

    subscription: Subscription | None = None  # the last request's names, as sent
    in_flight: Mapping[str, Resource] = field(default_factory=dict)  # in the `nonce` response


@dataclass
class DeltaTypeState(TypeState):
    """Delta: subscriptions by name, several responses in flight."""

    wildcard: bool = False  # subscribed to every resource of the type
    # responses not answered yet: nonce -> (resources sent, names removed, version,
    # snapshot generation)
    outstanding: dict[str, tuple[Mapping[str, Resource], set[str], str, int]] = field(
        default_factory=dict)
