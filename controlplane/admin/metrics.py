"""Prometheus metrics, on a registry of their own (one per control plane, so tests can
run several in one process)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from controlplane.status.sync import ProxySync, SyncRegistry
from controlplane.xds import types

# Pushes are fast on loopback and slow at scale: buckets from 1 ms to 30 s.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class XdsCounters(Collector):
    """Pushes, ACKs, NACKs and protocol errors by type, one per registry event (an ACK
    is the first answer to a response: SyncRegistry.acked): plain integers, counted on
    the event loop and read at scrape time. A prometheus_client Counter takes a lock per
    increment, and there
    are two increments per proxy per push (about 5 % of the server's time at 1,000
    proxies, in py-spy)."""

    FAMILIES = {  # registry event -> (metric name, help)
        "sent": ("controlplane_xds_pushes", "xDS responses sent"),
        "acked": ("controlplane_xds_acks", "xDS responses ACKed"),
        "nacked": ("controlplane_xds_nacks", "xDS responses rejected by a proxy (NACK)"),
        "protocol_error": ("controlplane_xds_protocol_errors", "xDS answers that cannot be "
                           "true (an ACK of a version or nonce never sent), recorded like a "
                           "NACK"),
    }

    def __init__(self) -> None:
        # Every series exists from the start, at 0.
        self.counts = {event: dict.fromkeys(types.PUSH_ORDER, 0) for event in self.FAMILIES}

    def collect(self) -> Iterator[CounterMetricFamily]:
        for event, (name, help_text) in self.FAMILIES.items():
            family = CounterMetricFamily(name, help_text, labels=["type"])
            for type_url, value in self.counts[event].items():
                family.add_metric([types.short(type_url)], value)
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.xds = XdsCounters()
        r.register(self.xds)
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
        self.analysis_findings = Gauge(
            "controlplane_analysis_findings", "findings of the analysis of the published "
            "mesh (/debug/analyze), by code; every code is present, 0 when none",
            ["code", "severity"], registry=r)
        self.large_waiting = Gauge(
            "controlplane_large_pushes_waiting", "proxies whose large response waits for a "
            "place (--large-push-limit)", registry=r)

    def attach(self, registry: SyncRegistry) -> None:
        counts = self.xds.counts

        def on_event(event: str, proxy: ProxySync, type_url: str) -> None:
            by_type = counts.get(event)
            if by_type is not None:
                if type_url in by_type:
                    by_type[type_url] += 1
            elif event in ("connected", "disconnected"):
                self.connected.set(len(registry.proxies))
        registry.listeners.append(on_event)

    def render(self) -> bytes:
        return generate_latest(self.registry)
