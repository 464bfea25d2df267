"""End to end: real Envoy sidecars, real upstream HTTP servers on loopback addresses,
manifests in a watched directory, real requests through the proxy."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf import duration_pb2

from controlplane.status.sync import Status
from controlplane.translation import MeshTranslation
from controlplane.xds import types
from tests.harness import Client, ControlPlane, get, wait_until, write_yaml
from tests.manifests import destination_rule, pod, service, virtual_service, weighted

pytestmark = pytest.mark.e2e

PORT = 19080  # the services' port: each sidecar listens on it at its own address
TARGET = 18080  # the pods' port


def reviews_and_ratings(ips: dict[str, str]) -> list[dict[str, Any]]:
    return [
        service("reviews", PORT, target=TARGET, cluster_ip="10.96.0.10"),
        service("ratings", PORT, target=TARGET),
        pod("reviews-v1", ips["reviews-v1"], {"app": "reviews", "version": "v1"}),
        pod("reviews-v2", ips["reviews-v2"], {"app": "reviews", "version": "v2"}),
        pod("ratings-1", ips["ratings-1"], {"app": "ratings", "version": "v1"}),
        destination_rule("reviews", "reviews", {"v1": {"version": "v1"},
                                                "v2": {"version": "v2"}}),
    ]


@pytest.fixture
def mesh(ip: Any, upstream: Any, config_dir: Path) -> dict[str, str]:
    ips = {name: ip() for name in ("reviews-v1", "reviews-v2", "ratings-1")}
    for name, addr in ips.items():
        svc, _, ver = name.rpartition("-")
        upstream(addr, TARGET, svc, name, version=ver if ver.startswith("v") else "v1")
    write_yaml(config_dir / "mesh.yaml", *reviews_and_ratings(ips))
    return ips


def wait_routes(sidecar_ip: str, host: str, expect: str = "", path: str = "/") -> None:
    def ok() -> bool:
        status, body = get(sidecar_ip, PORT, host, path)
        return status == 200 and (not expect or body["service"] == expect)
    wait_until(ok, 10, what=f"{host}{path} routed through {sidecar_ip}")


def test_requests_reach_the_service_named_by_host(file_cp: ControlPlane, mesh: dict[str, str],
                                                  envoy: Any, ip: Any) -> None:
    sidecar = ip()
    envoy("e2e-host", file_cp.port, instance_ip=sidecar)
    wait_routes(sidecar, "ratings", "ratings")
    for host, service_name in [
        ("reviews", "reviews"), ("reviews.default", "reviews"),
        ("reviews.default.svc", "reviews"), (f"reviews.default.svc.cluster.local:{PORT}",
                                             "reviews"),
        ("10.96.0.10", "reviews"), ("ratings", "ratings"),
        ("ratings.default.svc.cluster.local", "ratings"),
    ]:
        status, body = get(sidecar, PORT, host)
        assert status == 200 and body["service"] == service_name, (host, status, body)
    # A Host no service answers to: the outbound traffic policy's (tests/test_outbound.py);
    # by default ALLOW_ANY, the PassthroughCluster, with no original destination here.
    assert get(sidecar, PORT, "nothing.default.svc.cluster.local") == (
        503, "no healthy upstream")


def test_prefix_match_and_weighted_split(file_cp: ControlPlane, mesh: dict[str, str],
                                         envoy: Any, ip: Any, config_dir: Path) -> None:
    write_yaml(config_dir / "vs.yaml", virtual_service("reviews", ["reviews"], [
        {"match": [{"uri": {"prefix": "/ratings"}}],
         "route": [{"destination": {"host": "ratings"}}]},
        {"route": weighted("reviews", {"v1": 80, "v2": 20})},
    ]))
    sidecar = ip()
    envoy("e2e-split", file_cp.port, instance_ip=sidecar)
    wait_routes(sidecar, "reviews", "ratings", path="/ratings/stars")
    client = Client(sidecar, PORT)
    counts = client.tally("reviews", 1000)
    client.close()
    assert set(counts) == {"v1", "v2"}, counts
    assert 0.75 <= counts["v1"] / 1000 <= 0.85, counts
    assert get(sidecar, PORT, "reviews", "/ratingsx")[1]["service"] == "ratings"  # a prefix
    assert get(sidecar, PORT, "reviews", "/rating")[1]["service"] == "reviews"


def test_weights_are_relative(file_cp: ControlPlane, mesh: dict[str, str], envoy: Any,
                              ip: Any, config_dir: Path) -> None:
    """As in Istio, weights need not add up to 100: 1 and 3 send a quarter and three
    quarters (Envoy divides each by their sum)."""
    write_yaml(config_dir / "vs.yaml", virtual_service("reviews", ["reviews"], [
        {"route": weighted("reviews", {"v1": 1, "v2": 3})}]))
    sidecar = ip()
    envoy("e2e-relative", file_cp.port, instance_ip=sidecar)
    wait_routes(sidecar, "reviews", "reviews")
    client = Client(sidecar, PORT)
    counts = client.tally("reviews", 1000)
    client.close()
    assert set(counts) == {"v1", "v2"}, counts
    # 1000 draws of p=0.25: the standard deviation is ~1.4 points; these bounds are 5.
    assert 0.18 <= counts["v1"] / 1000 <= 0.32, counts


class Traffic:
    """Requests in a loop through a sidecar, recording when each answered what."""

    def __init__(self, sidecar_ip: str, host: str) -> None:
        self.client = Client(sidecar_ip, PORT)
        self.host = host
        self.log: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            status, body = self.client.get(self.host)
            pod_name = body["pod"] if isinstance(body, dict) else str(body)
            self.log.append((time.monotonic(), status, pod_name))
            time.sleep(0.002)

    def stop(self) -> list[tuple[float, int, str]]:
        self._stop.set()
        self.thread.join(5)
        self.client.close()
        return self.log


def settled_on(traffic: Traffic, pod_name: str, n: int = 50) -> bool:
    """The last n requests all reached this pod (by chance, with two pods: 2^-n)."""
    last = traffic.log[-n:]
    return len(last) == n and all(p == pod_name for _, _, p in last)


def test_editing_a_manifest_moves_traffic_without_errors(
        file_cp: ControlPlane, mesh: dict[str, str], envoy: Any, ip: Any,
        config_dir: Path) -> None:
    vs = config_dir / "vs.yaml"
    write_yaml(vs, virtual_service("reviews", ["reviews"], [
        {"route": weighted("reviews", {"v1": 100, "v2": 0})}]))
    sidecar = ip()
    envoy("e2e-edit", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: get(sidecar, PORT, "reviews")[1]["pod"] == "reviews-v1")
    traffic = Traffic(sidecar, "reviews")
    wait_until(lambda: settled_on(traffic, "reviews-v1"), 30, what="traffic on v1")
    write_yaml(vs, virtual_service("reviews", ["reviews"], [
        {"route": weighted("reviews", {"v1": 0, "v2": 100})}]))
    # How soon: `python -m benchmarks.e2e_latency`'s figure.
    wait_until(lambda: settled_on(traffic, "reviews-v2"), 30, what="traffic moved to v2")
    log = traffic.stop()
    assert all(status == 200 for _, status, _ in log), [e for e in log if e[1] != 200][:5]


def test_deleting_a_pod_moves_traffic_off_its_address(
        file_cp: ControlPlane, mesh: dict[str, str], envoy: Any, ip: Any,
        config_dir: Path) -> None:
    sidecar = ip()
    envoy("e2e-delete", file_cp.port, instance_ip=sidecar)
    wait_routes(sidecar, "reviews")
    traffic = Traffic(sidecar, "reviews")
    wait_until(lambda: {p for _, _, p in traffic.log} >= {"reviews-v1", "reviews-v2"})
    docs = [d for d in reviews_and_ratings(mesh) if d["metadata"]["name"] != "reviews-v1"]
    write_yaml(config_dir / "mesh.yaml", *docs)
    # reviews-v1's server still answers: only Envoy's endpoints keep traffic off it.
    wait_until(lambda: settled_on(traffic, "reviews-v2"), 30,
               what="traffic off reviews-v1's address")
    log = traffic.stop()
    assert all(status == 200 for _, status, _ in log), [e for e in log if e[1] != 200][:5]


def test_envoy_rejection_is_recorded_and_not_resent(cp: ControlPlane, envoy: Any, ip: Any,
                                                    upstream: Any) -> None:
    from tests.conftest import apply_docs

    pod_ip = ip()
    upstream(pod_ip, TARGET, "ratings", "ratings-1")
    apply_docs(cp, service("ratings", PORT, target=TARGET),
               pod("ratings-1", pod_ip, {"app": "ratings"}))
    wait_until(lambda: cp.cluster_names())
    sidecar = ip()
    proxy = envoy("e2e-nack", cp.port, instance_ip=sidecar, allow_rejections=True)
    wait_routes(sidecar, "ratings")

    class WithBadCluster(MeshTranslation):
        def messages(self, type_url: str, key: Any) -> list[Any]:
            out = list(super().messages(type_url, key))
            if type_url == types.CLUSTER:
                # Envoy's validation requires connect_timeout > 0.
                out.append(cluster_pb2.Cluster(
                    name="bad", type=cluster_pb2.Cluster.STATIC,
                    connect_timeout=duration_pb2.Duration(seconds=-1)))
            return out

    mesh = cp.run(cp.store.mesh)
    cp.publish(WithBadCluster(mesh))
    [sync] = cp.registry.by_node("e2e-nack")
    wait_until(lambda: sync.types[types.CLUSTER].nack is not None, what="NACK")
    nack = sync.types[types.CLUSTER].nack
    assert "Expected positive duration" in nack.message, nack.message
    cds = sync.types[types.CLUSTER]
    assert cds.status(time.time(), 5.0) is Status.NACKED
    assert nack.nonce == cds.sent_nonce
    time.sleep(1.0)
    assert proxy.stats()["cluster_manager.cds.update_rejected"] == 1  # never resent
    assert sync.types[types.CLUSTER].sent_nonce == nack.nonce
    assert get(sidecar, PORT, "ratings")[0] == 200  # the last good config keeps serving
    cp.publish(MeshTranslation(mesh))  # fixed: a new version is sent and ACKed
    wait_until(lambda: cds.status(time.time(), 5.0) is Status.SYNCED, what="SYNCED")
    assert proxy.stats()["cluster_manager.cds.update_rejected"] == 1


def test_route_to_a_missing_subset_answers_503_until_it_appears(
        file_cp: ControlPlane, mesh: dict[str, str], envoy: Any, ip: Any, upstream: Any,
        config_dir: Path) -> None:
    write_yaml(config_dir / "vs.yaml", virtual_service("reviews", ["reviews"], [
        {"match": [{"uri": {"prefix": "/v3"}}],
         "route": [{"destination": {"host": "reviews", "subset": "v3"}}]},
        {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
    ]))
    sidecar = ip()
    envoy("e2e-missing", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: get(sidecar, PORT, "reviews")[1]["pod"] == "reviews-v1")
    assert get(sidecar, PORT, "reviews", "/v3")[0] == 503  # the rest of the host still works
    problems = file_cp.run(lambda: file_cp.store.mesh().problems)
    assert any("subset 'v3'" in p for p in problems)
    v3 = ip()
    upstream(v3, TARGET, "reviews", "reviews-v3", version="v3")
    docs = [*reviews_and_ratings(mesh)[:-1],
            destination_rule("reviews", "reviews", {"v1": {"version": "v1"},
                                                    "v2": {"version": "v2"},
                                                    "v3": {"version": "v3"}}),
            pod("reviews-v3", v3, {"app": "reviews", "version": "v3"})]
    write_yaml(config_dir / "mesh.yaml", *docs)
    wait_until(lambda: get(sidecar, PORT, "reviews", "/v3")[1]["pod"] == "reviews-v3", 5,
               what="the new subset answering")
