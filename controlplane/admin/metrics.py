"""Prometheus metrics, on a registry of their own (one per control plane, so tests can
run several in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controlplane.status.sync import ProxySync, SyncRegistry
from controlplane.xds import types

# Pushes are fast on loopback and slow at scale: buckets from 1 ms to 30 s.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.pushes = Counter("controlplane_xds_pushes", "xDS responses sent", ["type"],
                              registry=r)
        self.acks = Counter("controlplane_xds_acks", "xDS responses ACKed", ["type"],
                            registry=r)
        self.nacks = Counter("controlplane_xds_nacks",
                             "xDS responses rejected by a proxy (NACK)", ["type"], registry=r)
        self.connected = Gauge("controlplane_connected_proxies", "proxies with an open ADS "
                               "stream", registry=r)
        self.push_duration = Histogram(
            "controlplane_push_duration_seconds", "building a snapshot: mesh, translation, "
            "serialization, consistency check", buckets=_BUCKETS, registry=r)
        self.debounce = Histogram(
            "controlplane_debounce_seconds", "first change seen until the push started",
            buckets=_BUCKETS, registry=r)
        self.convergence = Histogram(
            "controlplane_convergence_seconds", "change seen until every affected proxy "
            "answered it", buckets=_BUCKETS, registry=r)
        self.resources = Gauge("controlplane_resources", "resources in the newest snapshot "
                               "(per-proxy types: for a proxy with no instance IP)", ["type"],
                               registry=r)
        self.generation = Gauge("controlplane_snapshot_generation", "newest snapshot",
                                registry=r)
        self.large_held = Gauge(
            "controlplane_large_pushes_unanswered", "proxies holding a place for a large "
            "response (--large-push-limit) until they answer it", registry=r)
        self.large_waiting = Gauge(
            "controlplane_large_pushes_waiting", "proxies whose large response waits for a "
            "place (--large-push-limit)", registry=r)
        self.rejected_objects = Counter(
            "controlplane_objects_rejected", "objects that failed validation", ["kind"],
            registry=r)
        # Every series exists from the start, at 0; the children are looked up once, not
        # on every push and ACK.
        self._by_event = {
            event: {t: metric.labels(type=types.short(t)) for t in types.PUSH_ORDER}
            for event, metric in (("sent", self.pushes), ("acked", self.acks),
                                  ("nacked", self.nacks))
        }

    def attach(self, registry: SyncRegistry) -> None:
        def on_event(event: str, proxy: ProxySync, type_url: str) -> None:
            counters = self._by_event.get(event)
            if counters is not None:
                counter = counters.get(type_url)
                if counter is not None:
                    counter.inc()
            elif event in ("connected", "disconnected"):
                self.connected.set(len(registry.proxies))
        registry.listeners.append(on_event)

    def render(self) -> bytes:
        return generate_latest(self.registry)
