"""Per-proxy route views end to end: real Envoy sidecars with their namespace and labels
in the node metadata, real upstreams on loopback, real requests (both xDS protocols)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controlplane.model.meta import Key
from tests.harness import get, wait_until, write_yaml
from tests.manifests import ISTIO, pod, service, virtual_service, weighted
from tests.test_e2e import PORT, mesh  # the end-to-end tests' reviews/ratings mesh

__all__ = ["mesh"]  # a fixture: pytest finds it here by name

pytestmark = pytest.mark.e2e


def pod_of(sidecar: str, host: str) -> str:
    status, body = get(sidecar, PORT, host)
    return body["pod"] if status == 200 and isinstance(body, dict) else f"HTTP {status}"


def settles(sidecar: str, host: str, pod: str) -> None:
    """Every one of 20 requests in a row reaches `pod` (by chance with two pods: 2^-20)."""
    wait_until(lambda: all(pod_of(sidecar, host) == pod for _ in range(20)), 10,
               what=f"{host} through {sidecar} settled on {pod}")


def test_source_labels_and_namespace_route_two_clients_differently(
        file_cp: Any, mesh: dict[str, str], envoy: Any, ip: Any, config_dir: Path) -> None:
    """One VirtualService, two client sidecars asking for the same host: the one in
    team-a labelled app=web takes the sourceLabels+sourceNamespace match (v2), the one in
    team-b labelled app=batch falls through to v1."""
    write_yaml(config_dir / "vs.yaml", virtual_service("reviews", ["reviews"], [
        {"match": [{"sourceLabels": {"app": "web"}, "sourceNamespace": "team-a"}],
         "route": weighted("reviews", {"v2": 100})},
        {"route": weighted("reviews", {"v1": 100})}]))
    web, batch = ip(), ip()
    envoy("web-1", file_cp.port, instance_ip=web, namespace="team-a", labels={"app": "web"})
    envoy("batch-1", file_cp.port, instance_ip=batch, namespace="team-b",
          labels={"app": "batch"})
    host = "reviews.default.svc.cluster.local"
    settles(web, host, "reviews-v2")
    settles(batch, host, "reviews-v1")


def test_export_to_dot_hides_a_virtual_service_from_another_namespace(
        file_cp: Any, mesh: dict[str, str], envoy: Any, ip: Any, config_dir: Path) -> None:
    """A VirtualService exported only to its own namespace sends reviews to ratings
    there; a sidecar in team-b never sees it and gets the plain route to reviews."""
    vs = virtual_service("reviews", ["reviews"], [
        {"route": [{"destination": {"host": "ratings"}}]}])
    vs["spec"]["exportTo"] = ["."]
    write_yaml(config_dir / "vs.yaml", vs)
    inside, outside = ip(), ip()
    envoy("in-default", file_cp.port, instance_ip=inside, namespace="default")
    envoy("in-team-b", file_cp.port, instance_ip=outside, namespace="team-b")
    host = "reviews.default.svc.cluster.local"
    settles(inside, host, "ratings-1")
    wait_until(lambda: {pod_of(outside, host) for _ in range(40)} == {"reviews-v1",
                                                                      "reviews-v2"},
               10, what="team-b's sidecar on the plain route to both reviews pods")


def test_sidecar_egress_hosts_hide_a_host(file_cp: Any, mesh: dict[str, str], envoy: Any,
                                          ip: Any, config_dir: Path) -> None:
    """A Sidecar selecting app=narrow imports reviews only: ratings answers 404 there
    (no virtual host), while a sidecar it does not select still reaches ratings."""
    write_yaml(config_dir / "sidecar.yaml", {
        "apiVersion": ISTIO, "kind": "Sidecar",
        "metadata": {"name": "narrow", "namespace": "default"},
        "spec": {"workloadSelector": {"labels": {"app": "narrow"}},
                 "egress": [{"hosts": ["default/reviews.default.svc.cluster.local"]}]}})
    narrow, wide = ip(), ip()
    narrow_envoy = envoy("narrow-1", file_cp.port, instance_ip=narrow,
                         labels={"app": "narrow"})
    envoy("wide-1", file_cp.port, instance_ip=wide, labels={"app": "wide"})
    host = "ratings.default.svc.cluster.local"
    settles(wide, host, "ratings-1")
    wait_until(lambda: pod_of(narrow, "reviews").startswith("reviews-"), 10,
               what="the narrow sidecar has its routes")
    dumped = {vh["name"] for c in narrow_envoy.config_dump()["configs"]
              if c["@type"].endswith("RoutesConfigDump")
              for rc in c.get("dynamic_route_configs", [])
              for vh in rc["route_config"].get("virtual_hosts", [])}
    assert f"{host}:{PORT}" not in dumped and f"reviews.default.svc.cluster.local:{PORT}" in dumped
    # No virtual host: whatever answers (404 here; the outbound traffic policy's catch-all
    # where there is one), it is not ratings.
    try:
        status, body = get(narrow, PORT, host, timeout=2)
    except OSError:
        return
    assert not (isinstance(body, dict) and body.get("service") == "ratings"), (status, body)


def test_a_bad_rule_only_one_namespace_sees_is_rejected_before_any_proxy_gets_it(
        file_cp: Any, mesh: dict[str, str], envoy: Any, ip: Any, config_dir: Path) -> None:
    """A VirtualService exported to team-b only, with a header value Envoy refuses
    (tests/test_isolation.py): the shared routes never hold it, yet it is checked and
    rejected at publish time, and team-b's sidecar never receives it (the envoy fixture
    fails the test on any rejected update)."""
    bad = virtual_service("ratings-b", ["ratings.default.svc.cluster.local"], [
        {"headers": {"response": {"set": {"x-served": "%NO_SUCH_VARIABLE%"}}},
         "route": [{"destination": {"host": "reviews.default.svc.cluster.local"}}]}],
        ns="team-b")
    bad["spec"]["exportTo"] = ["."]
    write_yaml(config_dir / "bad.yaml", bad)
    key = Key("VirtualService", "team-b", "ratings-b")
    wait_until(lambda: file_cp.run(lambda: key in file_cp.store.rejections), 10,
               what="the team-b-only VirtualService rejected")
    sidecar = ip()
    envoy("in-team-b", file_cp.port, instance_ip=sidecar, namespace="team-b")
    settles(sidecar, "ratings.default.svc.cluster.local", "ratings-1")


def test_a_private_tcp_route_applies_in_its_namespace_only(
        file_cp: Any, config_dir: Path, ip: Any, upstream: Any, envoy: Any) -> None:
    """A VirtualService exported to its own namespace sends db's connections to
    db-next there; a sidecar in team-b keeps connecting to db (listeners follow the
    view as routes do)."""
    db, db_next = ip(), ip()
    upstream(db, 18080, "db", "db-1")
    upstream(db_next, 18080, "db-next", "db-next-1")
    vs = {"apiVersion": ISTIO, "kind": "VirtualService",
          "metadata": {"name": "db", "namespace": "default"},
          "spec": {"hosts": ["db"], "exportTo": ["."], "tcp": [{"route": [
              {"destination": {"host": "db-next", "port": {"number": 19433}}}]}]}}
    write_yaml(config_dir / "mesh.yaml",
               service("db", 19432, target=18080, port_name="tcp"),
               service("db-next", 19433, target=18080, port_name="tcp"),
               pod("db-1", db, {"app": "db"}), pod("db-next-1", db_next, {"app": "db-next"}),
               vs)
    inside, outside = ip(), ip()
    envoy("tcp-default", file_cp.port, instance_ip=inside, namespace="default")
    envoy("tcp-team-b", file_cp.port, instance_ip=outside, namespace="team-b")

    def pod_at(sidecar: str) -> str:  # HTTP over the TCP proxy: the body says who answered
        status, body = get(sidecar, 19432, "db")
        return body["pod"] if isinstance(body, dict) else f"HTTP {status}"
    wait_until(lambda: all(pod_at(inside) == "db-next-1" for _ in range(10)), 10,
               what="default's sidecar sends db's connections to db-next")
    wait_until(lambda: all(pod_at(outside) == "db-1" for _ in range(10)), 10,
               what="team-b's sidecar keeps db's connections on db")
