"""Protocol hygiene with real Envoys: how fast proxies come back after the control plane
restarts, what proxy-status says about a type asked for and never sent, and that an
ACK is counted once per response."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import structlog

from controlplane.xds import types
from controlplane.xds.server import start_grpc_server
from tests.ads_client import AdsClient
from tests.conftest import apply_docs
from tests.harness import ControlPlane, Envoy, get, metric, wait_until
from tests.manifests import destination_rule, pod, service
from tests.test_status import http, proxy_status, rows

pytestmark = pytest.mark.e2e

# Long enough for Envoy's default reconnect backoff (0.5 s doubling to 30 s, fully
# jittered) to reach waits of 8-16 s; a second or two would not tell the two apart.
OUTAGE = 10.0
PROXIES = 4


def stop_xds(plane: ControlPlane) -> None:
    """Stop the xDS gRPC server only (admin and HTTP keep serving): every ADS stream
    ends and every Envoy starts retrying."""
    async def stop() -> None:
        await plane.app._servers[0].stop(grace=0)
    plane.call(stop())


def restart_xds(plane: ControlPlane) -> None:
    """A new xDS server on the same port, serving the same ADS server and registry (as
    `controlplane serve` restarted with the same config would)."""
    async def start() -> None:
        server, _ = await start_grpc_server([plane.ads.handler()], f"127.0.0.1:{plane.port}")
        plane.app._servers[0] = server  # App.stop stops this one
    plane.call(start())


def connected(plane: ControlPlane) -> set[str]:
    return plane.run(lambda: {p.node_id for p in plane.registry.proxies.values()})


def xds_outage(plane: ControlPlane, node_ids: list[str], seconds: float) -> None:
    """The xDS server stopped until every stream ended, and `seconds` more."""
    stop_xds(plane)
    wait_until(lambda: not connected(plane) & set(node_ids), what="streams ended")
    # Not synchronisation: the outage itself is the condition under test.
    time.sleep(seconds)


def measure_reconnect(plane: ControlPlane, node_ids: list[str], outage: float
                      ) -> dict[str, float]:
    """Seconds from the xDS server's restart until each proxy's stream is back
    (benchmarks/e2e_latency.py)."""
    xds_outage(plane, node_ids, outage)
    restart_xds(plane)
    started = time.monotonic()
    back: dict[str, float] = {}

    def all_back() -> bool:
        now = time.monotonic()
        for node in connected(plane) & set(node_ids):
            back.setdefault(node, now - started)
        return len(back) == len(node_ids)
    wait_until(all_back, timeout=60, interval=0.01, what="every proxy reconnected")
    return back


def test_envoys_retry_at_the_bootstraps_pace_and_are_served_after_an_outage(
        cp: ControlPlane, envoy: Callable[..., Envoy], ip: Callable[[], str],
        upstream: Callable[..., Any]) -> None:
    """The bootstrap caps the ADS reconnect backoff at 1 s: through a 10 s outage each
    Envoy keeps trying at least once a second (Envoy's default, doubling to 30 s, makes 5
    or 6 tries in it), then is back and served. How soon after the restart is
    `python -m benchmarks.e2e_latency`'s figure."""
    pod_ip = ip()
    upstream(pod_ip, 18081, "web", "web-1")
    apply_docs(cp, service("web", 19281, target=18081), pod("web-1", pod_ip, {"app": "web"}))
    proxies = [envoy(f"reconnect-{i}", cp.port, instance_ip=ip()) for i in range(PROXIES)]
    for p in proxies:
        wait_until(lambda p=p: get(p.instance_ip, 19281, "web")[0] == 200, what="routing")
    node_ids = {p.node_id for p in proxies}
    failed = "cluster.xds-grpc.upstream_cx_connect_fail"
    with structlog.testing.capture_logs() as logs:
        xds_outage(cp, sorted(node_ids), OUTAGE)
        tries = {p.node_id: p.stats(failed).get(failed, 0) for p in proxies}
        restart_xds(cp)
        wait_until(lambda: connected(cp) >= node_ids, 60, what="every proxy reconnected")
        # And they are served again, not just connected.
        wait_until(lambda: proxy_status(cp).returncode == 0, 60, what="all SYNCED again")
    assert min(tries.values()) >= OUTAGE, tries  # a try a second at least
    for p in proxies:
        assert get(p.instance_ip, 19281, "web")[0] == 200
    # A reconnecting Envoy's first requests name no nonce of the old streams.
    assert not [e for e in logs if e["event"] == "protocol_error"]


def test_proxy_status_fails_for_a_type_asked_for_and_never_sent(
        envoy: Callable[..., Envoy], ip: Callable[[], str]) -> None:
    """Before the initial load nothing is sent: the Envoy asked for clusters and got
    none, which is not in sync. A type never asked for (no HTTP listener, so no RDS)
    stays fine once the rest is SYNCED."""
    plane = ControlPlane(pending_sources=("held",))
    try:
        apply_docs(plane, service("db", 15433, port_name="tcp", target=5432))
        proxy = envoy("waiting", plane.port, instance_ip=ip(), ready=False)

        def asked() -> bool:
            return any(types_asked(p) for p in plane.run(
                lambda: plane.registry.by_node(proxy.node_id)))
        wait_until(asked, what="the Envoy's first request")
        result = proxy_status(plane, "-o", "json")
        assert result.returncode == 1, result.stdout
        assert statuses(result.stdout)["waiting"]["CDS"] == "NOT_SENT"
        detail = proxy_status(plane, "waiting")
        assert detail.returncode == 1 and "CDS  NOT SENT" in detail.stdout
        plane.run(lambda: plane.store.mark_synced("held"))
        proxy.wait_ready()
        result = wait_until(lambda: (r := proxy_status(plane, "-o", "json")).returncode == 0
                            and r, what="proxy-status exit 0")
        # Not even listed: RDS was never asked for.
        assert statuses(result.stdout)["waiting"] == {
            "CDS": "SYNCED", "EDS": "SYNCED", "LDS": "SYNCED"}
        assert proxy_status(plane).returncode == 0
    finally:
        plane.stop()


def types_asked(proxy: Any) -> set[str]:
    return set(proxy.types)


def statuses(output: str) -> dict[str, dict[str, str]]:
    """node id -> type -> status, from `proxy-status -o json`."""
    return {p["node_id"]: {t["type"]: t["status"] for t in p["types"]}
            for p in json.loads(output)}


def test_acks_are_counted_once_per_response(
        cp: ControlPlane, envoy: Callable[..., Envoy], ip: Callable[[], str],
        upstream: Callable[..., Any]) -> None:
    """A new cluster makes Envoy ask for its endpoints, repeating the version and nonce
    it answered last, and a changed one makes it re-request them: neither is a second
    ACK, so no type ever has more ACKs than responses."""
    pod_ip = ip()
    upstream(pod_ip, 18082, "web", "web-1")
    apply_docs(cp, service("web", 19282, target=18082), pod("web-1", pod_ip, {"app": "web"}))
    proxy = envoy("counted", cp.port, instance_ip=ip())
    wait_until(lambda: get(proxy.instance_ip, 19282, "web")[0] == 200, what="routing")
    for i in range(4):
        apply_docs(cp, service(f"more-{i}", 19282))
        cluster = f"outbound|19282||more-{i}.default.svc.cluster.local"
        wait_until(lambda c=cluster: f"{c}::" in proxy.admin("/clusters"),
                   what=f"{cluster} in the Envoy")
        rule = destination_rule("web", "web", {})
        rule["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"maxConnections": i + 1}}}
        apply_docs(cp, rule)  # the web cluster changes
        wait_until(lambda i=i: i + 1 in max_connections(proxy),
                   what=f"the web cluster with {i + 1} connections at most")
    wait_until(lambda: proxy_status(cp).returncode == 0, what="SYNCED")
    text = http(cp, "/metrics")[1]
    for t in ("CDS", "EDS", "LDS", "RDS"):
        pushes = metric(text, f'controlplane_xds_pushes_total{{type="{t}"}}')
        acks = metric(text, f'controlplane_xds_acks_total{{type="{t}"}}')
        assert 0 < acks <= pushes, (t, acks, pushes)
    assert metric(text, 'controlplane_xds_pushes_total{type="CDS"}') >= 9


def max_connections(proxy: Envoy) -> set[int]:
    """Every circuit-breaker max_connections of the clusters the Envoy holds."""
    dump = json.loads(proxy.admin("/config_dump?resource=dynamic_active_clusters"))
    return {int(t["max_connections"]) for c in dump["configs"]
            for t in c["cluster"].get("circuit_breakers", {}).get("thresholds", [])
            if "max_connections" in t}


def test_a_second_stream_cannot_pass_for_a_connected_proxy(
        cp: ControlPlane, envoy: Callable[..., Envoy], ip: Callable[[], str],
        upstream: Callable[..., Any]) -> None:
    """A stream claiming a connected Envoy's node id gets a row of its own, shown apart;
    the Envoy's row stays as it is. A node id of 15 MB is refused, and proxy-status
    keeps working for everyone."""
    pod_ip = ip()
    upstream(pod_ip, 18083, "web", "web-1")
    apply_docs(cp, service("web", 19283, target=18083), pod("web-1", pod_ip, {"app": "web"}))
    proxy = envoy("victim", cp.port, instance_ip=ip())
    wait_until(lambda: proxy_status(cp).returncode == 0, what="SYNCED")
    [real] = cp.run(lambda: cp.registry.by_node("victim"))
    forger = AdsClient(cp.port, "victim")
    cp.call(forger.open())
    try:
        cp.call(forger.send(types.CLUSTER))
        cds = cp.call(forger.recv())
        cp.call(forger.nack(cds, "", "forged rejection"))
        wait_until(lambda: len(cp.run(lambda: cp.registry.by_node("victim"))) == 2
                   and "NACKED" in proxy_status(cp).stdout, what="the forged NACK")
        forged = cp.run(lambda: cp.registry.by_node("victim"))[1]
        result = proxy_status(cp)
        table = rows(result.stdout)
        assert set(table) == {f"victim#{real.stream_id}", f"victim#{forged.stream_id}"}
        assert table[f"victim#{real.stream_id}"][2:6] == ["SYNCED"] * 4
        assert table[f"victim#{forged.stream_id}"][2] == "NACKED"
        assert real.types[types.CLUSTER].nack is None
        detail = proxy_status(cp, "victim")
        assert f"2 streams have node id 'victim'; showing stream {forged.stream_id}" in (
            detail.stderr)
        assert f"stream {real.stream_id} (" in detail.stderr
    finally:
        cp.call(forger.close())
    huge = AdsClient(cp.port, "x" * 15_000_000, cluster="c")
    cp.call(huge.open())
    try:
        cp.call(huge.send(types.CLUSTER))
        code, details = cp.call(huge.status())
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == "node.id is 15000000 characters, over the limit of 1024 characters"
    finally:
        cp.call(huge.close())
    result = wait_until(lambda: (r := proxy_status(cp)).returncode == 0 and r,
                        what="proxy-status exit 0")
    assert list(rows(result.stdout)) == ["victim"]
    assert get(proxy.instance_ip, 19283, "web")[0] == 200
