"""Sync inspection with real Envoys: proxy-status, the admin API, metrics and debug
endpoints."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from controlplane.admin.v1 import admin_pb2, admin_pb2_grpc
from controlplane.translation import MeshTranslation
from controlplane.xds import types
from tests.ads_client import CATCH_ALL_CLUSTERS
from tests.harness import ControlPlane, Envoy, get, metric, wait_until, write_yaml
from tests.manifests import pod, service

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[1]
PORT = 19280


def proxy_status(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "controlplane.cli", "proxy-status",
                           "--server", f"127.0.0.1:{plane.admin_port}", *args],
                          capture_output=True, text=True, timeout=30)


def http(plane: ControlPlane, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{plane.http_port}{path}",
                                    timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def mesh(config_dir: Path, ip: Any, upstream: Any) -> str:
    pod_ip = ip()
    upstream(pod_ip, 18080, "web", "web-1")
    write_yaml(config_dir / "mesh.yaml", service("web", PORT, target=18080),
               service("db", 15432, port_name="tcp", target=5432),
               pod("web-1", pod_ip, {"app": "web"}))
    return pod_ip


@pytest.fixture
def sidecars(file_cp: ControlPlane, mesh: str, envoy: Any, ip: Any) -> list[Envoy]:
    proxies = [envoy(f"sidecar-{i}", file_cp.port, instance_ip=ip()) for i in range(3)]
    for p in proxies:
        wait_until(lambda p=p: get(p.instance_ip, PORT, "web")[0] == 200)
    return proxies


def rows(table: str) -> dict[str, list[str]]:
    lines = table.strip().splitlines()
    assert lines[0].split()[:8] == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "VERSION",
                                    "NACK"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def all_synced(plane: ControlPlane) -> bool:
    result = proxy_status(plane)
    return result.returncode == 0 and all(
        r[2:6] == ["SYNCED"] * 4 for r in rows(result.stdout).values())


def test_three_sidecars_synced_in_table_and_json(file_cp: ControlPlane,
                                                 sidecars: list[Envoy]) -> None:
    wait_until(lambda: all_synced(file_cp), 10, what="all SYNCED")
    result = proxy_status(file_cp)
    table = rows(result.stdout)
    assert sorted(table) == ["sidecar-0", "sidecar-1", "sidecar-2"]
    for row in table.values():
        assert row[2:7] == ["SYNCED", "SYNCED", "SYNCED", "SYNCED", "1.40.0"]
    as_json = json.loads(proxy_status(file_cp, "-o", "json").stdout)
    assert len(as_json) == 3
    for proxy in as_json:
        assert {t["type"]: t["status"] for t in proxy["types"]} == {
            "CDS": "SYNCED", "EDS": "SYNCED", "LDS": "SYNCED", "RDS": "SYNCED"}
        assert proxy["metadata"]["INSTANCE_IPS"].startswith("127.")


def bad_listener() -> listener_pb2.Listener:
    """A listener Envoy rejects: tcp_proxy needs a stat_prefix."""
    listener = listener_pb2.Listener(name="bad")
    listener.address.socket_address.address = "127.0.0.1"
    listener.address.socket_address.port_value = 1
    f = listener_components_pb2.Filter(name="envoy.filters.network.tcp_proxy")
    f.typed_config.Pack(tcp_proxy_pb2.TcpProxy(cluster="x"))
    listener.default_filter_chain.filters.append(f)
    return listener


def test_a_rejected_config_shows_nacked_with_envoys_message(
        file_cp: ControlPlane, sidecars: list[Envoy]) -> None:
    victim = sidecars[1]

    class RejectedForOne(MeshTranslation):
        def messages(self, type_url: str, key: Any) -> list[Any]:
            out = list(super().messages(type_url, key))
            if type_url == types.LISTENER and key == victim.instance_ip:
                out.append(bad_listener())
            return out

    wait_until(lambda: all_synced(file_cp), 10)
    with structlog.testing.capture_logs() as logs:
        file_cp.publish(RejectedForOne(file_cp.run(file_cp.store.mesh)))
        wait_until(lambda: "NACKED" in proxy_status(file_cp).stdout, 10, what="NACKED")
    victim.allow_rejections = True
    result = proxy_status(file_cp)
    assert result.returncode == 1
    table = rows(result.stdout)
    assert table["sidecar-1"][2:6] == ["SYNCED", "NACKED", "SYNCED", "SYNCED"]
    assert "LDS:" in result.stdout
    assert "StatPrefix: value length must be at least 1" in result.stdout
    assert table["sidecar-0"][2:6] == table["sidecar-2"][2:6] == ["SYNCED"] * 4
    detail = proxy_status(file_cp, "sidecar-1")
    assert "LDS  NACKED" in detail.stdout and "StatPrefix" in detail.stdout
    _, metrics = http(file_cp, "/metrics")
    assert 'controlplane_xds_nacks_total{type="LDS"} 1.0' in metrics
    [nack] = [e for e in logs if e["event"] == "nack"]
    assert nack["node"] == "sidecar-1" and nack["type"] == "LDS"
    assert "StatPrefix" in nack["error"] and nack["nonce"] and nack["version"]


def test_a_killed_sidecar_disappears_and_a_restarted_one_syncs(
        file_cp: ControlPlane, sidecars: list[Envoy]) -> None:
    wait_until(lambda: all_synced(file_cp), 10)
    sidecars[2].kill()
    wait_until(lambda: "sidecar-2" not in rows(proxy_status(file_cp).stdout), 10,
               what="the killed sidecar gone from the list")
    sidecars[2].start()
    sidecars[2].wait_ready()
    wait_until(lambda: "sidecar-2" in rows(proxy_status(file_cp).stdout)
               and all_synced(file_cp), 15, what="the restarted sidecar SYNCED")


def test_diff_of_a_synced_proxy_is_empty(file_cp: ControlPlane,
                                         sidecars: list[Envoy]) -> None:
    wait_until(lambda: all_synced(file_cp), 10)
    proxy = sidecars[0]
    live = proxy_status(file_cp, "sidecar-0", "--envoy-admin",
                        f"http://127.0.0.1:{proxy.admin_port}")
    assert live.returncode == 0, live.stdout + live.stderr
    assert live.stdout.endswith("DIFF (envoy -> control plane)\nnone\n"), live.stdout
    acked = proxy_status(file_cp, "sidecar-0")
    assert acked.stdout.endswith("DIFF (acked -> control plane)\nnone\n"), acked.stdout


def test_diff_shows_what_a_silent_proxy_has_not_taken(mesh: str, file_cp: ControlPlane,
                                                      config_dir: Path) -> None:
    """A proxy that stops answering: STALE, exit code 1, and the diff names the cluster
    it lacks."""
    from tests.ads_client import AdsClient

    client = AdsClient(file_cp.port, "silent")
    file_cp.call(client.open())
    file_cp.call(client.send(types.CLUSTER))
    first = file_cp.call(client.recv())
    file_cp.call(client.ack(first))
    wait_until(lambda: proxy_status(file_cp, "silent").returncode == 0, 10)
    write_yaml(config_dir / "extra.yaml", service("extra", PORT))
    file_cp.call(client.recv())  # the new clusters: received, never answered
    result = wait_until(lambda: (r := proxy_status(file_cp, "silent")) and "STALE" in r.stdout
                        and r, 15, what="STALE")
    assert result.returncode == 1
    assert "+++ CDS outbound|19280||extra.default.svc.cluster.local (control plane)" in (
        result.stdout)
    file_cp.call(client.close())


def test_http_health_metrics_and_debug(file_cp: ControlPlane, sidecars: list[Envoy],
                                       config_dir: Path) -> None:
    assert http(file_cp, "/healthz") == (200, "ok\n")
    assert http(file_cp, "/readyz") == (200, "ready\n")
    wait_until(lambda: all_synced(file_cp), 10)
    before = metric(http(file_cp, "/metrics")[1], "controlplane_convergence_seconds_count")
    write_yaml(config_dir / "more.yaml", service("more", PORT))
    wait_until(lambda: metric(http(file_cp, "/metrics")[1],
                              "controlplane_convergence_seconds_count") > before, 10,
               what="the change's convergence observed")
    text = http(file_cp, "/metrics")[1]
    # Three services' clusters, and the outbound traffic policy's two.
    assert metric(text, 'controlplane_resources{type="CDS"}') == 3 + 2
    assert metric(text, "controlplane_connected_proxies") == 3
    assert metric(text, 'controlplane_xds_pushes_total{type="CDS"}') >= 6
    assert metric(text, 'controlplane_xds_acks_total{type="CDS"}') >= 6
    assert metric(text, 'controlplane_xds_nacks_total{type="CDS"}') == 0
    assert metric(text, "controlplane_push_duration_seconds_count") >= 2
    assert metric(text, "controlplane_debounce_seconds_count") >= 2
    # Observed for the initial load and the change; how long it takes is the benchmarks'
    # "from change" figure (benchmarks/run.py), not a target here.
    assert metric(text, "controlplane_convergence_seconds_count") >= 2
    syncz = json.loads(http(file_cp, "/debug/syncz")[1])
    assert sorted(p["node_id"] for p in syncz) == ["sidecar-0", "sidecar-1", "sidecar-2"]
    configz = json.loads(http(file_cp, "/debug/configz")[1])
    assert configz["objects"]["Service"]["default/web"]["ports"][0]["port"] == PORT
    assert configz["objects"]["Pod"]["default/web-1"]["meta"]["labels"] == {"app": "web"}
    status, dump = http(file_cp, "/debug/config_dump?proxy=sidecar-0")
    assert status == 200
    clusters = json.loads(dump)["configs"][0]["dynamic_active_clusters"]
    assert {c["cluster"]["name"] for c in clusters} == {
        f"outbound|{PORT}||web.default.svc.cluster.local",
        f"outbound|{PORT}||more.default.svc.cluster.local",
        "outbound|15432||db.default.svc.cluster.local", *CATCH_ALL_CLUSTERS}
    assert http(file_cp, "/debug/config_dump?proxy=nobody")[0] == 404


def test_readyz_waits_for_the_initial_load() -> None:
    plane = ControlPlane(pending_sources=("slow",))
    try:
        status, body = http(plane, "/readyz")
        assert status == 503 and "slow" in body
        plane.run(lambda: plane.store.mark_synced("slow"))
        wait_until(lambda: http(plane, "/readyz")[0] == 200, 5)
    finally:
        plane.stop()


def test_watch_sync_streams_changes(file_cp: ControlPlane, mesh: str, envoy: Any,
                                    ip: Any) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{file_cp.admin_port}") as channel:
        stream = admin_pb2_grpc.AdminStub(channel).WatchSync(
            admin_pb2.WatchSyncRequest(node_id="watched"), timeout=20)
        envoy("watched", file_cp.port, instance_ip=ip())
        seen: list[tuple[str, str]] = []
        for event in stream:
            seen.append((event.event, types.short(event.type_url) if event.type_url else ""))
            assert event.proxy.node_id == "watched"
            if ("acked", "RDS") in seen:
                break
        stream.cancel()
    assert seen[0] == ("connected", "")
    assert ("sent", "CDS") in seen and ("acked", "CDS") in seen


def test_generated_admin_code_matches_the_protos() -> None:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([str(ROOT / "scripts" / "gen-protos"), out], check=True)
        generated = Path(out) / "controlplane" / "admin" / "v1"
        for name in ("admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py"):
            committed = ROOT / "controlplane" / "admin" / "v1" / name
            assert (generated / name).read_text() == committed.read_text(), (
                f"{name} is stale: run scripts/gen-protos")
