"""The benchmark mesh as Kubernetes / Istio dicts, and the two changes the figures time.

`services` Services spread over `namespaces` namespaces and a few HTTP ports, each with
one EndpointSlice of `endpoints` addresses (targetRef to a Pod carrying the subset
labels), a DestinationRule with subsets v1/v2 and, for every `vs_every`-th service, a
VirtualService (a header-matched canary route plus a 90/10 weighted split).

With 1,000 services x 10 endpoints that is 3,000 EDS clusters (the service and its two
subsets), 3,000 ClusterLoadAssignments, 5 listeners and 5 route configurations per
namespace.

The changes carry a `needle`: a string that appears in the serialized response carrying
them and nowhere before, so a client knows which response to time without decoding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ISTIO = "networking.istio.io/v1"
PORTS = (9080, 8080, 80, 5000, 3000)
TARGET_PORT = 8080


@dataclass(frozen=True)
class Scenario:
    services: int = 1000
    endpoints: int = 10
    namespaces: int = 10
    vs_every: int = 10

    def namespace(self, i: int) -> str:
        return f"ns-{i % self.namespaces}"

    def name(self, i: int) -> str:
        return f"svc-{i}"

    def port(self, i: int) -> int:
        return PORTS[(i // self.namespaces) % len(PORTS)]

    def fqdn(self, i: int) -> str:
        return f"{self.name(i)}.{self.namespace(i)}.svc.cluster.local"

    @property
    def changed_service(self) -> int:
        return 0  # has a VirtualService (0 % vs_every == 0)


def _ip(base: int, index: int) -> str:
    n = (base << 24) + index
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def endpoint_ip(sc: Scenario, i: int, j: int) -> str:
    return _ip(10, 0x10000 + i * 16 + j)  # 10.1.0.0 onwards, 16 per service


def cluster_ip(i: int) -> str:
    return _ip(10, 0x600000 + i)  # 10.96.0.0 onwards


def service(sc: Scenario, i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": sc.name(i), "namespace": sc.namespace(i)},
            "spec": {"clusterIP": cluster_ip(i), "selector": {"app": sc.name(i)},
                     "ports": [{"name": "http", "port": sc.port(i),
                                "targetPort": TARGET_PORT}]}}


def pod(sc: Scenario, i: int, j: int) -> dict[str, Any]:
    version = "v1" if j < (sc.endpoints + 1) // 2 else "v2"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{sc.name(i)}-{j}", "namespace": sc.namespace(i),
                         "labels": {"app": sc.name(i), "version": version}},
            "spec": {"containers": [{"name": "app", "image": "bench",
                                     "ports": [{"name": "http",
                                                "containerPort": TARGET_PORT}]}]},
            "status": {"phase": "Running", "podIP": endpoint_ip(sc, i, j),
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def endpoint_slice(sc: Scenario, i: int, override: dict[int, str] | None = None
                   ) -> dict[str, Any]:
    override = override or {}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{sc.name(i)}-slice", "namespace": sc.namespace(i),
                         "labels": {"kubernetes.io/service-name": sc.name(i)}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": TARGET_PORT}],
            "endpoints": [{"addresses": [override.get(j, endpoint_ip(sc, i, j))],
                           "conditions": {"ready": True},
                           "targetRef": {"kind": "Pod", "name": f"{sc.name(i)}-{j}"}}
                          for j in range(sc.endpoints)]}


def destination_rule(sc: Scenario, i: int) -> dict[str, Any]:
    return {"apiVersion": ISTIO, "kind": "DestinationRule",
            "metadata": {"name": sc.name(i), "namespace": sc.namespace(i)},
            "spec": {"host": sc.name(i),
                     "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                 {"name": "v2", "labels": {"version": "v2"}}]}}


def virtual_service(sc: Scenario, i: int, gen: int = 0) -> dict[str, Any]:
    host = sc.name(i)
    v1 = 90 if gen % 2 == 0 else 80
    return {"apiVersion": ISTIO, "kind": "VirtualService",
            "metadata": {"name": host, "namespace": sc.namespace(i)},
            "spec": {"hosts": [host], "http": [
                {"match": [{"headers": {"x-bench-canary": {"exact": vs_token(gen)}}}],
                 "route": [{"destination": {"host": host, "subset": "v2"}}]},
                {"route": [{"destination": {"host": host, "subset": "v1"}, "weight": v1},
                           {"destination": {"host": host, "subset": "v2"},
                            "weight": 100 - v1}]},
            ]}}


def vs_token(gen: int) -> str:
    return f"bench-canary-{gen:06d}"


def moved_ip(gen: int) -> str:
    return _ip(10, 0xFA0000 + gen)  # 10.250.x.y: never a base address


def objects(sc: Scenario) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(sc.services):
        out.append(service(sc, i))
        out.extend(pod(sc, i, j) for j in range(sc.endpoints))
        out.append(endpoint_slice(sc, i))
        out.append(destination_rule(sc, i))
        if i % sc.vs_every == 0:
            out.append(virtual_service(sc, i))
    return out


@dataclass(frozen=True)
class Change:
    kind: str  # "endpoint" | "vs"
    gen: int
    objects: list[dict[str, Any]]
    needle: str  # appears in the response that carries the change
    type_short: str  # the xDS type that carries it


def endpoint_change(sc: Scenario, gen: int) -> Change:
    """One endpoint of one service moves to a new IP (a pod recreated elsewhere): its
    EndpointSlice changes, so the service's and one subset's assignments change."""
    i = sc.changed_service
    ip = moved_ip(gen)
    return Change("endpoint", gen, [endpoint_slice(sc, i, {0: ip})], ip, "EDS")


def vs_change(sc: Scenario, gen: int) -> Change:
    """One VirtualService changes its canary header and shifts weight: one route
    configuration changes, for every namespace's proxies."""
    i = sc.changed_service
    return Change("vs", gen, [virtual_service(sc, i, gen)], vs_token(gen), "RDS")


def make_change(sc: Scenario, kind: str, gen: int) -> Change:
    return endpoint_change(sc, gen) if kind == "endpoint" else vs_change(sc, gen)
