"""What each connected proxy was sent and what it said back, per xDS type.

The ADS streams report here (`SyncRegistry` is their `xds.callbacks.StreamCallbacks`);
the admin API, metrics, convergence and quarantine read here or listen to its events.
It imports only the model (the proxy's identity), so it can be read without the protocol
machinery.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from controlplane.model.proxy import ProxyView

log = structlog.get_logger("controlplane.status")


class Status(enum.Enum):
    SYNCED = "SYNCED"
    NOT_SENT = "NOT SENT"
    STALE = "STALE"
    NACKED = "NACKED"
    PENDING = "PENDING"  # sent moments ago, answer not in yet; STALE past the threshold


@dataclass
class Nack:
    version: str  # the version rejected (for a protocol error: the one named, clipped)
    nonce: str
    at: float
    message: str  # Envoy's error_detail, or ours for a protocol error
    generation: int = 0  # snapshot generation of the rejected response; 0: not known
    # Not Envoy's rejection: a request that broke the protocol (an ACK of something
    # never sent). Recorded like a NACK so the proxy is never shown SYNCED by it, but
    # emitted as "protocol_error", not "nacked": nothing may act on the config for it.
    protocol_error: bool = False


@dataclass
class TypeSync:
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float = 0.0
    acked_version: str = ""
    acked_nonce: str = ""
    acked_at: float = 0.0
    nack: Nack | None = None
    subscribed: bool = False  # the proxy asked for the type
    # Subscribed names (empty: wildcard), shared with the stream: a SotW request's tuple
    # as sent, a Delta stream's set.
    names: Collection[str] = ()
    # What the proxy holds: name -> an object with `.version` and `.body` (serialized
    # bytes), shared with the ADS stream and replaced or updated on each ACK.
    acked_resources: Mapping[str, Any] = field(default_factory=dict)
    sent_generation: int = 0  # snapshot generation of the last response sent

    @property
    def answered(self) -> bool:
        return bool(self.sent_nonce) and (self.acked_nonce == self.sent_nonce or (
            self.nack is not None and self.nack.nonce == self.sent_nonce))

    def status(self, now: float, stale_after: float) -> Status:
        if not self.sent_nonce:
            return Status.NOT_SENT
        if self.acked_nonce == self.sent_nonce:
            return Status.SYNCED
        if self.nack is not None and self.nack.nonce == self.sent_nonce:
            return Status.NACKED
        return Status.STALE if now - self.sent_at > stale_after else Status.PENDING


@dataclass
class ProxySync:
    stream_id: int
    proxy: ProxyView  # who the stream's node says it is
    peer: str
    connected_at: float
    types: dict[str, TypeSync] = field(default_factory=dict)
    # The newest snapshot generation the stream finished a push pass for.
    complete_generation: int = 0

    @property
    def node_id(self) -> str:
        return self.proxy.node_id

    @property
    def cluster(self) -> str:
        return self.proxy.cluster

    @property
    def metadata(self) -> dict[str, Any]:
        return self.proxy.metadata

    @property
    def build_version(self) -> str:
        return self.proxy.build_version

    def type(self, type_url: str) -> TypeSync:
        return self.types.setdefault(type_url, TypeSync())


# (event, proxy, type_url). Events: connected, disconnected, sent, acked, nacked,
# protocol_error, pass_done; a listener ignores those it does not know.
Listener = Callable[[str, ProxySync, str], None]


class SyncRegistry:
    """Rows per stream, written through the stream callbacks (keyed by stream id) and
    read by everyone else. A call for a stream that has closed (or never opened) is
    ignored: a stream's last events may race its end."""

    def __init__(self, stale_after: float = 5.0) -> None:
        self.stale_after = stale_after
        self.proxies: dict[int, ProxySync] = {}
        # node id -> its streams. Rows are kept per stream, never per node id: two
        # streams may legitimately share one (an Envoy hot restart, a reconnect whose
        # old stream is not known dead yet), and a stream claiming another proxy's node
        # id must not touch that proxy's row.
        self._by_node: dict[str, dict[int, ProxySync]] = {}
        self.listeners: list[Listener] = []

    def _emit(self, event: str, proxy: ProxySync, type_url: str = "") -> None:
        for listener in self.listeners:
            listener(event, proxy, type_url)

    # -- xds.callbacks.StreamCallbacks --------------------------------------------------------
    def opened(self, stream_id: int, peer: str, proxy: ProxyView) -> None:
        others = self.by_node(proxy.node_id)
        if others:
            # Kept apart (rows are per stream), but worth a look: an Envoy hot restart,
            # a reconnect before the old stream was seen to end, or a forged node id.
            log.warning("duplicate_node_id", stream=stream_id, node=proxy.node_id,
                        peer=peer, other_streams=[o.stream_id for o in others],
                        other_peers=[o.peer for o in others])
        row = ProxySync(stream_id=stream_id, proxy=proxy, peer=peer, connected_at=time.time())
        self.proxies[stream_id] = row
        self._by_node.setdefault(proxy.node_id, {})[stream_id] = row
        self._emit("connected", row)

    def closed(self, stream_id: int) -> None:
        proxy = self.proxies.pop(stream_id, None)
        if proxy is not None:
            streams = self._by_node.get(proxy.node_id)
            if streams is not None:
                streams.pop(stream_id, None)
                if not streams:
                    del self._by_node[proxy.node_id]
            self._emit("disconnected", proxy)

    def subscribed(self, stream_id: int, type_url: str, names: Collection[str]) -> None:
        if (proxy := self.proxies.get(stream_id)) is not None:
            t = proxy.type(type_url)
            t.subscribed, t.names = True, names

    def sent(self, stream_id: int, type_url: str, version: str, nonce: str,
             generation: int = 0) -> None:
        if (proxy := self.proxies.get(stream_id)) is None:
            return
        t = proxy.type(type_url)
        t.sent_version, t.sent_nonce, t.sent_at = version, nonce, time.time()
        t.sent_generation = generation
        self._emit("sent", proxy, type_url)

    def pass_done(self, stream_id: int, generation: int) -> None:
        proxy = self.proxies.get(stream_id)
        if proxy is not None and generation > proxy.complete_generation:
            proxy.complete_generation = generation
            self._emit("pass_done", proxy)

    def acked(self, stream_id: int, type_url: str, version: str, nonce: str,
              resources: Mapping[str, Any]) -> None:
        if (proxy := self.proxies.get(stream_id)) is None:
            return
        t = proxy.type(type_url)
        repeated = nonce == t.acked_nonce and version == t.acked_version
        t.acked_version, t.acked_nonce, t.acked_at = version, nonce, time.time()
        t.acked_resources = resources
        if not repeated:
            # One "acked" per response: a second answer to one nonce (Envoy's EDS/RDS
            # re-request after a cluster/listener change looks like one) is no new ACK.
            self._emit("acked", proxy, type_url)

    def nacked(self, stream_id: int, type_url: str, version: str, nonce: str,
               message: str, generation: int | None = None) -> None:
        """`generation`: of the rejected response; by default the last sent one's when
        `nonce` is its nonce (a NACK of an older response: pass it, or 0)."""
        if (proxy := self.proxies.get(stream_id)) is None:
            return
        t = proxy.type(type_url)
        if generation is None:
            generation = t.sent_generation if nonce == t.sent_nonce else 0
        t.nack = Nack(version, nonce, time.time(), message, generation)
        self._emit("nacked", proxy, type_url)

    def protocol_error(self, stream_id: int, type_url: str, version: str, nonce: str,
                       message: str) -> None:
        """A request that broke the protocol, recorded like a NACK (the type is never
        SYNCED by it) but emitted as its own event."""
        if (proxy := self.proxies.get(stream_id)) is None:
            return
        t = proxy.type(type_url)
        generation = t.sent_generation if nonce == t.sent_nonce else 0
        t.nack = Nack(version, nonce, time.time(), message, generation, protocol_error=True)
        self._emit("protocol_error", proxy, type_url)

    # -- readers ------------------------------------------------------------------------------
    def by_node(self, node_id: str) -> list[ProxySync]:
        """Every stream with this node id, oldest first."""
        return sorted(self._by_node.get(node_id, {}).values(), key=lambda p: p.stream_id)
