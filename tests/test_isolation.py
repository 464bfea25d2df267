"""Nothing a user writes can break the mesh: an object whose translation raises, or whose
resources Envoy would reject, is rejected on its own (named, with the field), its last
good version keeps being served, every other object keeps flowing, and a proxy never
sees it. If a proxy NACKs anyway, the object behind it is quarantined.

Real Envoys, real upstreams; the `envoy` fixture fails a test whose Envoy rejected any
update it was not told to expect."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from controlplane.admin.proxy_status import run as proxy_status_run
from controlplane.model.meta import Key
from controlplane.model.parse import parse_object
from controlplane.pipeline import PushLoop
from controlplane.status.sync import Status
from controlplane.store import Store
from controlplane.translate import guard, routes
from controlplane.xds import types
from controlplane.xds.cache import SnapshotCache
from tests.harness import ControlPlane, get, wait_until, write_yaml
from tests.manifests import pod, service, virtual_service, weighted
from tests.test_e2e import PORT, mesh  # the end-to-end tests' reviews/ratings mesh

__all__ = ["mesh"]  # a fixture: pytest finds it here by name

pytestmark = pytest.mark.e2e

RATINGS_VS = Key("VirtualService", "default", "ratings")
BAD = "%NO_SUCH_VARIABLE%"


def reviews_to(version: str) -> dict[str, Any]:
    other = "v2" if version == "v1" else "v1"
    return virtual_service("reviews", ["reviews"], [
        {"route": weighted("reviews", {version: 100, other: 0})}])


def ratings_vs(header_value: str) -> dict[str, Any]:
    """A VirtualService setting a response header. Envoy parses the value as a format
    string: `%NO_SUCH_VARIABLE%` is well formed, so Istio's validation accepts it, and
    names no variable Envoy knows, so Envoy rejects it."""
    return virtual_service("ratings", ["ratings"], [
        {"headers": {"response": {"set": {"x-served": header_value}}},
         "route": [{"destination": {"host": "ratings"}}]}])


def http_json(plane: ControlPlane, path: str) -> Any:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{plane.http_port}{path}", timeout=5) as r:
        return json.loads(r.read())


def metric(plane: ControlPlane, name: str) -> float:
    text = plane.run(plane.app.metrics.render).decode()
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == name:
            return float(value)
    raise AssertionError(f"{name} not in /metrics")


def proxy_status(plane: ControlPlane) -> tuple[int, str]:
    out = io.StringIO()
    code = proxy_status_run(f"127.0.0.1:{plane.admin_port}", None, "table", None, out)
    return code, out.getvalue()


def served_header(sidecar: str) -> str | None:
    import http.client
    conn = http.client.HTTPConnection(sidecar, PORT, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "ratings"})
        resp = conn.getresponse()
        resp.read()
        return resp.getheader("x-served")
    finally:
        conn.close()


def test_a_rejected_object_keeps_its_last_good_version_and_blocks_nobody(
        file_cp: ControlPlane, mesh: dict[str, str], envoy: Any, ip: Any,
        config_dir: Path) -> None:
    write_yaml(config_dir / "ratings.yaml", ratings_vs("good"))
    write_yaml(config_dir / "reviews.yaml", reviews_to("v1"))
    sidecar = ip()
    proxy = envoy("iso-1", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: served_header(sidecar) == "good", what="the good version served")

    write_yaml(config_dir / "ratings.yaml", ratings_vs(BAD))
    wait_until(lambda: file_cp.run(lambda: RATINGS_VS in file_cp.store.rejections),
               what="the bad version rejected")
    # Another object's change in the same port's route configuration still flows.
    write_yaml(config_dir / "reviews.yaml", reviews_to("v2"))
    wait_until(lambda: get(sidecar, PORT, "reviews")[1]["pod"] == "reviews-v2", 5,
               what="the reviews change applied beside the rejected ratings")
    assert served_header(sidecar) == "good"  # the last good version keeps serving

    configz = http_json(file_cp, "/debug/configz")
    reason = configz["rejected"][str(RATINGS_VS)]["reason"]
    assert "x-served" in reason or "header" in reason, reason
    assert configz["rejected"][str(RATINGS_VS)]["serving"] == "last good version"
    assert any(p.startswith(str(RATINGS_VS)) for p in configz["problems"])
    assert metric(file_cp, 'controlplane_rejected_objects{by="constraints"}') == 1.0
    [sync] = file_cp.registry.by_node("iso-1")
    now = time.time()
    assert all(t.status(now, 5.0) is Status.SYNCED for t in sync.types.values())
    assert proxy.update_rejected() == {}
    code, table = proxy_status(file_cp)
    assert code == 0, table  # every proxy SYNCED: the object never reached one
    assert f"{RATINGS_VS}  by constraints; its last good version is served" in table, table

    write_yaml(config_dir / "ratings.yaml", ratings_vs("50%% off"))  # fixed: served
    wait_until(lambda: served_header(sidecar) == "50% off", what="the fixed version served")
    assert file_cp.run(lambda: RATINGS_VS not in file_cp.store.rejections)
    assert metric(file_cp, 'controlplane_rejected_objects{by="constraints"}') == 0.0


def test_an_object_that_makes_translation_raise_is_rejected_and_the_rest_served(
        monkeypatch: pytest.MonkeyPatch, config_dir: Path, mesh: dict[str, str],
        envoy: Any, ip: Any) -> None:
    """A translator bug (a value the validation let through and the translator cannot
    express) present at start-up: the rest is served, /readyz is ready, a new proxy
    gets its config, and the object is rejected by name."""
    real = routes._vs_routes

    def buggy(mesh_: Any, vs: Any, port: int, *rest: Any) -> Any:
        if vs.meta.name == "ratings":
            raise OverflowError("int too large to convert")  # what a 400-digit value did
        return real(mesh_, vs, port, *rest)

    monkeypatch.setattr(routes, "_vs_routes", buggy)
    write_yaml(config_dir / "ratings.yaml", ratings_vs("good"))
    write_yaml(config_dir / "reviews.yaml", reviews_to("v2"))
    plane = ControlPlane(config_dir)
    try:
        wait_until(lambda: plane.run(lambda: plane.cache.snapshot is not None),
                   what="a snapshot despite the bad object")
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{plane.http_port}/readyz") as r:
            assert r.status == 200
        sidecar = ip()
        envoy("iso-2", plane.port, instance_ip=sidecar)
        wait_until(lambda: get(sidecar, PORT, "reviews")[1]["pod"] == "reviews-v2", 5)
        # The host whose routes failed falls back to its own cluster, nothing else.
        assert get(sidecar, PORT, "ratings")[1]["service"] == "ratings"
        assert served_header(sidecar) is None
        rejection = plane.run(lambda: plane.store.rejections[RATINGS_VS])
        assert rejection.by == "translation" and rejection.serving is None
        assert "OverflowError" in rejection.reason
        assert "virtual host ratings.default.svc.cluster.local" in rejection.reason
    finally:
        plane.stop()


def test_a_nack_nobody_foresaw_quarantines_the_object_and_the_proxy_converges(
        monkeypatch: pytest.MonkeyPatch, file_cp: ControlPlane, mesh: dict[str, str],
        envoy: Any, ip: Any, config_dir: Path) -> None:
    """With the constraint check blind to one rule (as it is to any rule nobody modelled
    yet), Envoy NACKs: the object its error points at is quarantined, its previous
    version served again, and the proxy ends SYNCED."""
    real = guard.check
    monkeypatch.setattr(guard, "check", lambda m: [v for v in real(m)
                                                   if "NO_SUCH_VARIABLE" not in v.message])
    write_yaml(config_dir / "ratings.yaml", ratings_vs("good"))
    sidecar = ip()
    proxy = envoy("iso-3", file_cp.port, instance_ip=sidecar, allow_rejections=True)
    wait_until(lambda: served_header(sidecar) == "good")
    write_yaml(config_dir / "ratings.yaml", ratings_vs(BAD))
    wait_until(lambda: file_cp.run(lambda: RATINGS_VS in file_cp.store.rejections), 10,
               what="the NACKed object quarantined")
    rejection = file_cp.run(lambda: file_cp.store.rejections[RATINGS_VS])
    assert rejection.by == "envoy" and rejection.serving is not None
    assert "iso-3" in rejection.reason
    [sync] = file_cp.registry.by_node("iso-3")
    wait_until(lambda: sync.types[types.ROUTE].status(time.time(), 5.0) is Status.SYNCED,
               what="RDS synced again after the quarantine")
    assert served_header(sidecar) == "good"
    code, table = proxy_status(file_cp)
    assert code == 0, table  # SYNCED again: the NACK is history
    assert f"{RATINGS_VS}  by envoy; its last good version is served" in table, table
    assert "iso-3" in table, table
    rejected = proxy.update_rejected()
    assert sum(rejected.values()) == 1, rejected  # once: never resent, never looped
    write_yaml(config_dir / "reviews.yaml", reviews_to("v2"))  # others keep flowing
    wait_until(lambda: get(sidecar, PORT, "reviews")[1]["pod"] == "reviews-v2", 5)
    assert sum(proxy.update_rejected().values()) == 1


# -- the store: readers never move state forward ---------------------------------------------

def _parse(*docs: dict[str, Any]) -> list[Any]:
    return [parse_object(d) for d in docs]


def test_a_debug_read_between_two_changes_loses_no_endpoint_update() -> None:
    """Two changes of one push with a reader in between (GET /debug/configz did this):
    the next snapshot must carry the new pod IP."""
    async def scenario() -> None:
        store, cache = Store(), SnapshotCache()
        push = PushLoop(store, cache)
        for o in _parse(service("db", 5432, selector={"app": "db"}),
                        pod("db-0", "10.0.0.1", {"app": "db"})):
            store.apply(o)
        assert push.publish()
        [moved] = _parse(pod("db-0", "10.0.0.2", {"app": "db"}))
        store.apply(moved)
        store.mesh(), store.problems()  # what /debug/configz reads
        [other] = _parse(service("web", 80))
        store.apply(other)
        assert push.publish()
        assert cache.snapshot is not None
        cla = cache.snapshot.for_key(types.ENDPOINT, None).items[
            "outbound|5432||db.default.svc.cluster.local"].message
        ips = [e.endpoint.address.socket_address.address
               for lb in cla.endpoints for e in lb.lb_endpoints]
        assert ips == ["10.0.0.2"]
    asyncio.run(scenario())


def test_configz_lists_what_the_file_source_refused(file_cp: ControlPlane,
                                                    config_dir: Path) -> None:
    """A kind we do not serve and two files defining one object differently are
    reported where an operator looks, not only in the log."""
    write_yaml(config_dir / "gw.yaml", {"apiVersion": "networking.istio.io/v1",
                                        "kind": "Gateway",
                                        "metadata": {"name": "ingress", "namespace": "default"},
                                        "spec": {}})
    write_yaml(config_dir / "a.yaml", service("web", 80))
    write_yaml(config_dir / "b.yaml", service("web", 81))

    def problems() -> list[str]:
        return list(http_json(file_cp, "/debug/configz")["problems"])
    found = wait_until(lambda: (p := problems()) and any("Gateway" in x for x in p)
                       and any("Service default/web" in x for x in p) and p,
                       what="both problems in /debug/configz")
    [conflict] = [p for p in found if "Service default/web" in p]
    assert "a.yaml" in conflict and "b.yaml" in conflict, conflict


def test_a_virtual_service_that_breaks_the_listeners_is_rejected_by_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Listeners carry VirtualServices' tcp and tls routes: when a listener fails Envoy's
    checks after such a VirtualService changed, that VirtualService is rejected and the
    listeners are published without it."""
    from controlplane.translate import listeners

    real = listeners.sni_chains

    def strict(mesh_: Any, tls: Any, *rest: Any) -> Any:
        chains = real(mesh_, tls, *rest)
        if any(v.meta.name == "bad" for v in mesh_.virtual_services.values()):
            chains[0].filter_chain_match.destination_port.value = 70000  # over 65535
        return chains

    monkeypatch.setattr(listeners, "sni_chains", strict)
    bad = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": "bad", "namespace": "default"},
           "spec": {"hosts": ["web"], "tls": [{"match": [{"sniHosts": ["web"]}],
                                               "route": [{"destination": {"host": "web"}}]}]}}

    async def scenario() -> None:
        store, cache = Store(), SnapshotCache()
        push = PushLoop(store, cache)
        for o in _parse(service("web", 443, port_name="tls")):
            store.apply(o)
        assert push.publish()
        assert not store.rejections
        for o in _parse(bad):
            store.apply(o)
        assert push.publish()
        rejection = store.rejections[Key("VirtualService", "default", "bad")]
        assert rejection.by == "constraints" and "listeners for" in rejection.reason
        assert cache.snapshot is not None
        [listener] = cache.snapshot.for_key(types.LISTENER, "0.0.0.0").items.values()
        assert all(c.filter_chain_match.destination_port.value != 70000
                   for c in listener.message.filter_chains)
    asyncio.run(scenario())
