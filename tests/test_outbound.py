"""The outbound traffic policy and the names a service answers to, through a real Envoy:
the mesh config's REGISTRY_ONLY blocks a Host no service answers to (502, block_all),
ALLOW_ANY hands it to the PassthroughCluster, a change of the ConfigMap takes effect
live, an invalid one keeps the last good; the absolute FQDN (trailing dot) and the
cluster IP reach the service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from controlplane.model.mesh_config import ALLOW_ANY, REGISTRY_ONLY
from tests.harness import ControlPlane, get, wait_until, write_yaml
from tests.manifests import mesh_config, pod, service

pytestmark = pytest.mark.e2e

PORT = 19580
TARGET = 18080
CLUSTER_IP = "10.96.0.20"
UNKNOWN = "api.example.com"


@pytest.fixture
def web(file_cp: ControlPlane, config_dir: Path, ip: Any, upstream: Any, envoy: Any
        ) -> tuple[str, Any]:
    """The service web (one pod) and a sidecar: (the sidecar's address, its Envoy)."""
    pod_ip = ip()
    upstream(pod_ip, TARGET, "web", "web-1")
    write_yaml(config_dir / "mesh.yaml", service("web", PORT, target=TARGET,
                                                 cluster_ip=CLUSTER_IP),
               pod("web-1", pod_ip, {"app": "web"}))
    sidecar = ip()
    proxy = envoy(f"outbound-{sidecar}", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: get(sidecar, PORT, "web")[0] == 200, 10, what="web routed")
    return sidecar, proxy


def set_mode(plane: ControlPlane, config_dir: Path, proxy: Any, mode: str) -> None:
    """Write the mesh config and wait until the sidecar holds routes built from it."""
    before = proxy.route_versions()
    write_yaml(config_dir / "istio.yaml", mesh_config({"outboundTrafficPolicy": {"mode": mode}}))
    wait_until(lambda: plane.run(lambda: plane.store.mesh().config.outbound_traffic_policy)
               == mode, 10, what=f"{mode} published")
    if mode != ALLOW_ANY or before:  # ALLOW_ANY is the default: maybe nothing to change
        wait_until(lambda: proxy.route_versions() != before, 10, what="the sidecar took it")


def counter(proxy: Any, name: str) -> int:
    return proxy.stats(name).get(name, 0)  # ?usedonly: a counter never used is absent


def test_registry_only_blocks_unknown_hosts_and_allow_any_passes_them_live(
        file_cp: ControlPlane, config_dir: Path, web: tuple[str, Any]) -> None:
    sidecar, proxy = web
    none_healthy = "cluster.PassthroughCluster.upstream_cx_none_healthy"
    direct = f"http.outbound_{sidecar}_{PORT}.rq_direct_response"

    # No ConfigMap: Istio's default, ALLOW_ANY. The request goes to the PassthroughCluster,
    # which has no original destination to restore here (the listener is itself the
    # destination: no iptables), so Envoy answers 503 "no healthy upstream".
    status, body = get(sidecar, PORT, UNKNOWN)
    assert (status, body) == (503, "no healthy upstream")
    assert counter(proxy, none_healthy) == 1

    set_mode(file_cp, config_dir, proxy, REGISTRY_ONLY)
    status, _ = get(sidecar, PORT, UNKNOWN)
    assert status == 502
    assert counter(proxy, direct) == 1  # block_all answered it itself
    assert counter(proxy, none_healthy) == 1  # the PassthroughCluster was not asked
    assert get(sidecar, PORT, "web")[0] == 200  # known hosts as before

    # A wrong value: rejected naming the field, REGISTRY_ONLY stays in force.
    with structlog.testing.capture_logs() as logs:
        write_yaml(config_dir / "istio.yaml",
                   mesh_config({"outboundTrafficPolicy": {"mode": "ALLOW_ALL"}}))
        wait_until(lambda: [e for e in logs if e["event"] == "object_rejected"], 10,
                   what="the invalid mesh config rejected")
    [entry] = [e for e in logs if e["event"] == "object_rejected"]
    assert entry["object"] == "ConfigMap istio-system/istio"
    assert any("data.mesh.outboundTrafficPolicy.mode" in e for e in entry["errors"]), entry
    assert entry["kept"] == "previous version"
    assert file_cp.run(lambda: file_cp.store.mesh().config.outbound_traffic_policy) == (
        REGISTRY_ONLY)
    assert get(sidecar, PORT, UNKNOWN)[0] == 502

    set_mode(file_cp, config_dir, proxy, ALLOW_ANY)  # back, without a restart
    assert get(sidecar, PORT, UNKNOWN) == (503, "no healthy upstream")
    assert counter(proxy, none_healthy) == 2
    assert counter(proxy, direct) == 2  # the 502 while the invalid config was refused


def test_absolute_fqdn_and_cluster_ip_reach_the_service(
        file_cp: ControlPlane, config_dir: Path, web: tuple[str, Any]) -> None:
    sidecar, proxy = web
    set_mode(file_cp, config_dir, proxy, REGISTRY_ONLY)  # no catch-all could answer 200
    for host in ("web.default.svc.cluster.local.", f"web.default.svc.cluster.local.:{PORT}",
                 CLUSTER_IP, f"{CLUSTER_IP}:{PORT}"):
        status, body = get(sidecar, PORT, host)
        assert status == 200 and body["service"] == "web", (host, status, body)
    # Only the FQDN has an absolute form: a short name with a dot is another name.
    assert get(sidecar, PORT, "web.")[0] == 502
