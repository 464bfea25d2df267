"""Traffic management seen from the client's side, through a real Envoy: each
VirtualService and DestinationRule feature doing what Istio's reference says."""

from __future__ import annotations

import concurrent.futures
import http.client
import itertools
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Client, ControlPlane, get, wait_until, write_yaml
from tests.manifests import ISTIO, destination_rule, pod, service, virtual_service

pytestmark = pytest.mark.e2e

PORT = 19480
TARGET = 18080


class Mesh:
    """web (pods web-v1, web-v2, optional more), shadow, and one sidecar; `apply` writes
    the VirtualService/DestinationRule under test and waits until Envoy routes by it."""

    def __init__(self, plane: ControlPlane, config: Path, ip: Any, upstream: Any,
                 envoy: Any, behaviours: dict[str, Any] | None = None,
                 pods: tuple[str, ...] = ("web-v1", "web-v2")) -> None:
        self.plane, self.config = plane, config
        behaviours = behaviours or {}
        self.ips = {name: ip() for name in (*pods, "shadow-1")}
        self.upstreams = {}
        docs: list[dict[str, Any]] = [service("web", PORT, target=TARGET),
                                      service("shadow", PORT, target=TARGET)]
        for name, addr in self.ips.items():
            app, _, version = name.rpartition("-")
            self.upstreams[name] = upstream(addr, TARGET, app, name, version=version,
                                            behaviour=behaviours.get(name))
            docs.append(pod(name, addr, {"app": app, "version": version}))
        write_yaml(config / "mesh.yaml", *docs)
        self.sidecar = ip()
        self.proxy = envoy(f"traffic-{self.sidecar}", plane.port, instance_ip=self.sidecar)
        wait_until(lambda: get(self.sidecar, PORT, "web")[0] in (200, 500, 503), 10)

    def apply(self, *docs: dict[str, Any]) -> None:
        before = self.proxy.route_versions()
        write_yaml(self.config / "policy.yaml", *docs)
        # Every policy under test changes the routes (a DestinationRule's consistent hash
        # does too), so a new route version means the sidecar took it.
        wait_until(lambda: self.proxy.route_versions() != before, 10,
                   what="the sidecar took the change")
        time.sleep(0.1)

    def get(self, path: str = "/", headers: dict[str, str] | None = None,
            method: str = "GET") -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(self.sidecar, PORT, timeout=10)
        try:
            conn.request(method, path, headers={"Host": "web", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, \
                resp.read().decode()
        finally:
            conn.close()


@pytest.fixture
def mesh_factory(file_cp: ControlPlane, config_dir: Path, ip: Any, upstream: Any,
                 envoy: Any) -> Any:
    return lambda **kw: Mesh(file_cp, config_dir, ip, upstream, envoy, **kw)


def subsets() -> dict[str, Any]:
    return destination_rule("web", "web", {"v1": {"version": "v1"}, "v2": {"version": "v2"}})


def test_header_matched_user_reaches_v2(mesh_factory: Any) -> None:
    mesh = mesh_factory()
    mesh.apply(subsets(), virtual_service("web", ["web"], [
        {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [{"destination": {"host": "web", "subset": "v2"}}]},
        {"route": [{"destination": {"host": "web", "subset": "v1"}}]}]))
    client = Client(mesh.sidecar, PORT)
    assert client.tally("web", 100, "pod", headers={"end-user": "jason"}) == {"web-v2": 100}
    assert client.tally("web", 100, "pod", headers={"end-user": "maria"}) == {"web-v1": 100}
    assert client.tally("web", 100, "pod") == {"web-v1": 100}
    client.close()


def test_fault_abort_at_its_percentage(mesh_factory: Any) -> None:
    mesh = mesh_factory()
    mesh.apply(virtual_service("web", ["web"], [{
        "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 30}}},
        "route": [{"destination": {"host": "web"}}]}]))
    counts = Client(mesh.sidecar, PORT).tally("web", 1000, "service")
    assert set(counts) == {"web", "418"}, counts
    assert 250 <= counts["418"] <= 350, counts  # 30 % ± 5 %


def test_fault_delay_holds_requests(mesh_factory: Any) -> None:
    mesh = mesh_factory()
    mesh.apply(virtual_service("web", ["web"], [{
        "fault": {"delay": {"fixedDelay": "300ms", "percentage": {"value": 100}}},
        "route": [{"destination": {"host": "web"}}]}]))
    started = time.monotonic()
    assert mesh.get()[0] == 200
    # The delay is the feature: a lower bound, which a loaded machine only exceeds.
    assert time.monotonic() - started >= 0.25  # millisecond timers


def flaky() -> Any:
    """Every other request fails with 500 (not retried by Istio's default policy)."""
    counter = itertools.count()
    lock = threading.Lock()

    def behaviour(handler: Any) -> int:
        with lock:
            return 500 if next(counter) % 2 == 0 else 200
    return behaviour


def test_retries_turn_a_flaky_upstreams_errors_into_success(mesh_factory: Any) -> None:
    mesh = mesh_factory(behaviours={"web-v1": flaky()}, pods=("web-v1",))
    client = Client(mesh.sidecar, PORT)
    without = client.tally("web", 100, "service")
    assert without["500"] >= 30, without  # the flakiness shows without retries
    mesh.apply(virtual_service("web", ["web"], [{
        "retries": {"attempts": 3, "retryOn": "5xx"},
        "route": [{"destination": {"host": "web"}}]}]))
    assert client.tally("web", 100, "service") == {"web": 100}
    client.close()


def test_timeout_cuts_a_slow_upstream(mesh_factory: Any) -> None:
    """Once the timeout is in place the upstream holds each request until the test lets
    it go: the 504 arriving while it still holds the request is Envoy's timeout, and not
    before the 300 ms it was given."""
    hold, holding, release = threading.Event(), threading.Event(), threading.Event()

    def slow(handler: Any) -> int:
        if hold.is_set():
            holding.set()
            release.wait(60)
        return 200
    mesh = mesh_factory(behaviours={"web-v1": slow}, pods=("web-v1",))
    mesh.apply(virtual_service("web", ["web"], [{
        "timeout": "300ms", "retries": {"attempts": 0},
        "route": [{"destination": {"host": "web"}}]}]))
    hold.set()
    try:
        started = time.monotonic()
        status, _, body = mesh.get()
        took = time.monotonic() - started
        assert holding.is_set()  # the upstream had it, and has not answered
    finally:
        release.set()
    assert status == 504 and body == "upstream request timeout", body
    assert took >= 0.25, took  # Envoy's timers have millisecond granularity


def test_mirror_receives_copies(mesh_factory: Any) -> None:
    mesh = mesh_factory(pods=("web-v1",))
    mesh.apply(virtual_service("web", ["web"], [{
        "mirror": {"host": "shadow"}, "mirrorPercentage": {"value": 100},
        "route": [{"destination": {"host": "web"}}]}]))
    shadow = mesh.upstreams["shadow-1"]
    before = len(shadow.requests)
    client = Client(mesh.sidecar, PORT)
    assert client.tally("web", 50, "pod", path="/copy-me") == {"web-v1": 50}
    client.close()
    wait_until(lambda: len(shadow.requests) - before == 50, 5, what="50 mirrored copies")
    copy = shadow.requests[-1]
    assert copy["path"] == "/copy-me" and copy["headers"]["host"].startswith("web-shadow")


def test_outlier_detection_ejects_a_failing_endpoint(mesh_factory: Any) -> None:
    mesh = mesh_factory(behaviours={"web-v2": lambda handler: 500})
    mesh.apply(
        destination_rule("web", "web", {}) | {"spec": {"host": "web", "trafficPolicy": {
            "outlierDetection": {"consecutive5xxErrors": 2, "interval": "1s",
                                 "baseEjectionTime": "60s", "maxEjectionPercent": 100}}}},
        virtual_service("web", ["web"], [{"retries": {"attempts": 0},
                                          "route": [{"destination": {"host": "web"}}]}]))
    client = Client(mesh.sidecar, PORT)
    first = client.tally("web", 20, "pod")
    assert first["500"] >= 1, first  # the failing pod was used at first
    assert client.tally("web", 100, "pod") == {"web-v1": 100}  # then ejected
    assert mesh.proxy.stats()["cluster.outbound|19480||web.default.svc.cluster.local"
                              ".outlier_detection.ejections_enforced_total"] >= 1
    client.close()


def test_circuit_breaker_overflows_with_503(mesh_factory: Any) -> None:
    def slow(handler: Any) -> int:
        time.sleep(0.5)
        return 200
    mesh = mesh_factory(behaviours={"web-v1": slow}, pods=("web-v1",))
    mesh.apply(
        destination_rule("web", "web", {}) | {"spec": {"host": "web", "trafficPolicy": {
            "connectionPool": {"tcp": {"maxConnections": 1},
                               "http": {"http1MaxPendingRequests": 1}}}}},
        virtual_service("web", ["web"], [{"retries": {"attempts": 0},
                                          "route": [{"destination": {"host": "web"}}]}]))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: mesh.get(), range(8)))
    statuses = Counter(status for status, _, _ in results)
    assert statuses[503] >= 4 and statuses[200] >= 1, statuses
    overflowed = [h for status, h, _ in results if status == 503]
    assert all(h.get("x-envoy-overloaded") == "true" for h in overflowed)


def test_consistent_hashing_keeps_a_header_value_on_one_pod(mesh_factory: Any) -> None:
    mesh = mesh_factory(pods=("web-v1", "web-v2", "web-v3"))
    mesh.apply(destination_rule("web", "web", {}) | {"spec": {"host": "web", "trafficPolicy": {
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}}})
    client = Client(mesh.sidecar, PORT)
    pods_of = {}
    for user in (f"user-{i}" for i in range(20)):
        counts = client.tally("web", 10, "pod", headers={"x-user": user})
        assert len(counts) == 1, (user, counts)  # one user, one pod
        pods_of[user] = next(iter(counts))
    assert len(set(pods_of.values())) >= 2, pods_of  # users spread over pods
    client.close()


def test_rewrite_redirect_direct_response_and_headers(mesh_factory: Any) -> None:
    mesh = mesh_factory(pods=("web-v1",))
    mesh.apply(virtual_service("web", ["web"], [
        {"match": [{"uri": {"prefix": "/old"}}],
         "redirect": {"uri": "/new", "authority": "example.com", "redirectCode": 302}},
        {"match": [{"uri": {"exact": "/teapot"}}],
         "directResponse": {"status": 418, "body": {"string": "short and stout"}}},
        {"match": [{"uri": {"prefix": "/api"}}],
         "rewrite": {"uri": "/v2", "authority": "api.internal"},
         "headers": {"request": {"set": {"x-mesh": "yes"}, "remove": ["x-secret"]},
                     "response": {"add": {"x-served-by": "controlplane"}}},
         "route": [{"destination": {"host": "web"}}]},
    ]))
    status, headers, _ = mesh.get("/old/page")
    assert status == 302 and headers["location"] == "http://example.com/new"
    status, _, body = mesh.get("/teapot")
    assert (status, body) == (418, "short and stout")
    status, headers, body = mesh.get("/api/items", headers={"x-secret": "s"})
    assert status == 200 and headers["x-served-by"] == "controlplane"
    seen = mesh.upstreams["web-v1"].requests[-1]
    assert seen["path"] == "/v2/items"
    assert seen["headers"]["host"] == "api.internal"
    assert seen["headers"]["x-mesh"] == "yes" and "x-secret" not in seen["headers"]


def test_redirect_prefix_rewrite_request_port_and_destination_authority(
        mesh_factory: Any) -> None:
    """Istio's redirect.prefixRewrite and derivePort, and an authority set on one
    destination (its weighted cluster's host rewrite), through a real sidecar."""
    mesh = mesh_factory(pods=("web-v1",))
    mesh.apply(virtual_service("web", ["web"], [
        {"match": [{"uri": {"prefix": "/old/"}}],
         "redirect": {"prefixRewrite": "/new/", "authority": "example.com",
                      "derivePort": "FROM_REQUEST_PORT"}},
        {"route": [{"destination": {"host": "web"}, "weight": 3,
                    "headers": {"request": {"set": {":authority": "web.internal"}}}},
                   {"destination": {"host": "shadow"}, "weight": 0}]},
    ]))
    status, headers, _ = mesh.get("/old/a/b?x=1")
    assert status == 301, (status, headers)
    assert headers["location"] == f"http://example.com:{PORT}/new/a/b?x=1"
    status, _, _ = mesh.get("/page")
    assert status == 200
    assert mesh.upstreams["web-v1"].requests[-1]["headers"]["host"] == "web.internal"


def test_cors_preflight_is_answered_by_the_sidecar(mesh_factory: Any) -> None:
    mesh = mesh_factory(pods=("web-v1",))
    mesh.apply(virtual_service("web", ["web"], [{
        "corsPolicy": {"allowOrigins": [{"exact": "https://example.com"}],
                       "allowMethods": ["GET", "POST"], "maxAge": "1h"},
        "route": [{"destination": {"host": "web"}}]}]))
    preflight = {"Origin": "https://example.com", "Access-Control-Request-Method": "POST"}
    status, headers, _ = mesh.get("/", headers=preflight, method="OPTIONS")
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://example.com"
    assert headers["access-control-allow-methods"] == "GET,POST"
    assert headers["access-control-max-age"] == "3600"
    status, headers, _ = mesh.get("/", headers={"Origin": "https://evil.example"},
                                  method="OPTIONS")
    assert "access-control-allow-origin" not in headers


def test_tcp_route_sends_connections_where_its_weights_say(
        file_cp: ControlPlane, config_dir: Path, ip: Any, upstream: Any, envoy: Any) -> None:
    db, db_next = ip(), ip()
    upstream(db, TARGET, "db", "db-1")
    upstream(db_next, TARGET, "db-next", "db-next-1")
    write_yaml(config_dir / "mesh.yaml",
               service("db", 19432, target=TARGET, port_name="tcp"),
               service("db-next", 19433, target=TARGET, port_name="tcp"),
               pod("db-1", db, {"app": "db"}), pod("db-next-1", db_next, {"app": "db-next"}))
    sidecar = ip()
    envoy("tcp-routes", file_cp.port, instance_ip=sidecar)
    # HTTP spoken over the TCP proxy: the listener passes bytes, the body says who answered.
    wait_until(lambda: get(sidecar, 19432, "db")[1]["pod"] == "db-1", 10)
    write_yaml(config_dir / "vs.yaml", {
        "apiVersion": ISTIO, "kind": "VirtualService",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"hosts": ["db"], "tcp": [{"match": [{"port": 19432}], "route": [
            {"destination": {"host": "db"}, "weight": 0},
            {"destination": {"host": "db-next", "port": {"number": 19433}}, "weight": 100}]}]}})
    wait_until(lambda: get(sidecar, 19432, "db")[1]["pod"] == "db-next-1", 10,
               what="new connections on db's port reach db-next")
    assert {get(sidecar, 19432, "db")[1]["pod"] for _ in range(20)} == {"db-next-1"}


def test_match_fields_method_authority_query_regex_and_without_headers(
        mesh_factory: Any) -> None:
    mesh = mesh_factory()
    v2 = [{"destination": {"host": "web", "subset": "v2"}}]
    mesh.apply(subsets(), virtual_service("web", ["web"], [
        {"name": "post", "match": [{"method": {"exact": "POST"}}], "route": v2},
        {"name": "query", "match": [{"queryParams": {"beta": {"exact": "1"}}}], "route": v2},
        {"name": "regex", "match": [{"uri": {"regex": "/ITEMS/[0-9]+"}, "ignoreUriCase": True}],
         "route": v2},
        {"name": "internal", "match": [{"uri": {"prefix": "/internal"},
                                        "withoutHeaders": {"x-staff": {}}}],
         "directResponse": {"status": 403}},
        {"route": [{"destination": {"host": "web", "subset": "v1"}}]}]))

    def pod_of(path: str = "/", method: str = "GET", headers: dict[str, str] | None = None
               ) -> str:
        status, _, body = mesh.get(path, headers=headers, method=method)
        return str(status) if status != 200 else body.split('"pod": "')[1].split('"')[0]
    assert pod_of(method="POST") == "web-v2"
    assert pod_of("/?beta=1") == "web-v2" and pod_of("/?beta=2") == "web-v1"
    assert pod_of("/items/42") == "web-v2" and pod_of("/items/x") == "web-v1"
    assert pod_of("/internal/x") == "403"
    assert pod_of("/internal/x", headers={"x-staff": "1"}) == "web-v1"
    assert pod_of() == "web-v1"


def test_subset_and_port_level_policies_override_the_rules(
        file_cp: ControlPlane, config_dir: Path, ip: Any, upstream: Any, envoy: Any) -> None:
    """The rule hashes by x-user on port 19481 only (port level); subset `sticky` hashes by
    x-user on every port (its own policy); everything else is round robin."""
    addrs = {f"app-{i}": ip() for i in range(3)}
    docs: list[dict[str, Any]] = [service("app", PORT, target=TARGET, extra_ports=[
        {"name": "http-alt", "port": PORT + 1, "targetPort": TARGET}])]
    for name, addr in addrs.items():
        upstream(addr, TARGET, "app", name)
        docs.append(pod(name, addr, {"app": "app", "tier": "all"}))
    docs.append({"apiVersion": ISTIO, "kind": "DestinationRule",
                 "metadata": {"name": "app", "namespace": "default"},
                 "spec": {"host": "app", "trafficPolicy": {"portLevelSettings": [
                     {"port": {"number": PORT + 1}, "loadBalancer": {
                         "consistentHash": {"httpHeaderName": "x-user"}}}]},
                     "subsets": [{"name": "sticky", "labels": {"tier": "all"},
                                  "trafficPolicy": {"loadBalancer": {"consistentHash": {
                                      "httpHeaderName": "x-user"}}}}]}})
    docs.append(virtual_service("app", ["app"], [
        {"match": [{"headers": {"x-sticky": {}}}],
         "route": [{"destination": {"host": "app", "subset": "sticky"}}]},
        {"route": [{"destination": {"host": "app"}}]}]))
    write_yaml(config_dir / "mesh.yaml", *docs)
    sidecar = ip()
    envoy("policies", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: get(sidecar, PORT + 1, "app")[0] == 200
               and get(sidecar, PORT, "app", headers={"x-sticky": "1"})[0] == 200, 10)

    def pods(port: int, headers: dict[str, str]) -> set[str]:
        return {get(sidecar, port, "app", headers=headers)[1]["pod"] for _ in range(12)}
    user = {"x-user": "alice"}
    assert len(pods(PORT, user)) > 1  # port 19480: the rule's round robin
    assert len(pods(PORT + 1, user)) == 1  # port 19481: its port-level hashing
    assert len(pods(PORT, {**user, "x-sticky": "1"})) == 1  # the subset's own policy
