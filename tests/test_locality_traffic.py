"""Locality load balancing through real Envoys: two sidecars in different zones each
keep their requests in their own zone, fail over to the other zone when theirs turns
unhealthy, and spread them as `distribute` says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.harness import Client, ControlPlane, get, wait_until, write_yaml
from tests.manifests import ISTIO, pod, service

pytestmark = pytest.mark.e2e

PORT = 19482
TARGET = 18082
ZONES = {"web-a": "us-east.zone-a", "web-b": "us-east.zone-b"}


def _rule(load_balancer: dict[str, Any], outlier: bool = True) -> dict[str, Any]:
    policy: dict[str, Any] = {"loadBalancer": load_balancer}
    if outlier:
        # One 5xx ejects an endpoint, for long enough that it stays out for the test.
        policy["outlierDetection"] = {"consecutive5xxErrors": 1, "interval": "100ms",
                                      "baseEjectionTime": "60s", "maxEjectionPercent": 100}
    return {"apiVersion": ISTIO, "kind": "DestinationRule",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"host": "web", "trafficPolicy": policy}}


class Zones:
    """web with one pod per zone (ZONES), and a sidecar in each zone."""

    def __init__(self, plane: ControlPlane, config: Path, ip: Any, upstream: Any,
                 envoy: Any, rule: dict[str, Any], pods: dict[str, str] = ZONES) -> None:
        self.failing: set[str] = set()
        docs: list[dict[str, Any]] = [service("web", PORT, target=TARGET), rule]
        for name, zone in pods.items():
            addr = ip()
            upstream(addr, TARGET, "web", name, behaviour=self._behaviour(name))
            docs.append(pod(name, addr, {"app": "web", "istio-locality": zone}))
        write_yaml(config / "mesh.yaml", *docs)
        self.sidecars = {}
        for zone in ("zone-a", "zone-b"):
            addr = ip()
            envoy(f"{zone}-{addr}", plane.port, instance_ip=addr,
                  locality=f"us-east/{zone}")
            wait_until(lambda a=addr: get(a, PORT, "web")[0] == 200, 10, what="web answers")
            self.sidecars[zone] = Client(addr, PORT)

    def _behaviour(self, name: str) -> Any:
        return lambda handler: 500 if name in self.failing else 200

    def tally(self, zone: str, n: int) -> dict[str, int]:
        return dict(self.sidecars[zone].tally("web", n, "pod"))

    def close(self) -> None:
        for client in self.sidecars.values():
            client.close()


@pytest.fixture
def zones(file_cp: ControlPlane, config_dir: Path, ip: Any, upstream: Any, envoy: Any
          ) -> Any:
    made: list[Zones] = []

    def make(rule: dict[str, Any], **kw: Any) -> Zones:
        made.append(Zones(file_cp, config_dir, ip, upstream, envoy, rule, **kw))
        return made[-1]
    yield make
    for z in made:
        z.close()


def test_each_proxy_prefers_its_own_zone_and_fails_over_when_it_is_unhealthy(
        zones: Any) -> None:
    mesh = zones(_rule({"simple": "ROUND_ROBIN"}))
    assert mesh.tally("zone-a", 40) == {"web-a": 40}
    assert mesh.tally("zone-b", 40) == {"web-b": 40}

    mesh.failing.add("web-a")
    # Outlier detection ejects web-a at its first 5xx; zone-a's sidecar then sends
    # everything to zone-b, the next priority.
    wait_until(lambda: mesh.sidecars["zone-a"].label("web", "pod") == "web-b", 10,
               what="zone-a's sidecar failed over to zone-b")
    assert mesh.tally("zone-a", 40) == {"web-b": 40}
    assert mesh.tally("zone-b", 40) == {"web-b": 40}


def test_without_outlier_detection_there_is_no_preference(zones: Any) -> None:
    """Istio's rule: failover needs outlier detection, so both zones share the load."""
    mesh = zones(_rule({"simple": "ROUND_ROBIN"}, outlier=False))
    counts = mesh.tally("zone-a", 40)
    # Round robin over both (each Envoy worker keeps its own turn, hence not 20/20).
    assert set(counts) == {"web-a", "web-b"} and min(counts.values()) >= 10, counts


def test_distribute_spreads_by_weight_from_the_proxy_zone(zones: Any) -> None:
    mesh = zones(_rule({"localityLbSetting": {"distribute": [
        {"from": "us-east/zone-a/*", "to": {"us-east/zone-a": 75, "us-east/zone-b": 25}},
        {"from": "us-east/zone-b/*", "to": {"us-east/zone-a": 100}}]}}, outlier=False))
    counts = mesh.tally("zone-a", 400)
    assert set(counts) == {"web-a", "web-b"}, counts
    assert 240 <= counts["web-a"] <= 360, counts  # 75 % of 400, give or take
    assert mesh.tally("zone-b", 40) == {"web-a": 40}
