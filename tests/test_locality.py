"""Locality load balancing below the wire: where a proxy and an endpoint are, how one
proxy's view of a cluster is planned (translate/locality.py), and that endpoints stay
shared by every proxy except where a DestinationRule makes them differ."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2

from controlplane.bootstrap import bootstrap
from controlplane.model.destination_rule import (
    LoadBalancer,
    LocalityLbSetting,
    OutlierDetection,
    TrafficPolicy,
)
from controlplane.model.locality import from_label, split
from controlplane.model.mesh import Endpoint, build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.model.proxy import ProxyView, proxy_view
from controlplane.translate.locality import Group, Place, matches, place_of, proxy_groups
from controlplane.translation import MeshTranslation
from controlplane.xds import types
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.node import proxy_from_node

FAILOVER = TrafficPolicy(outlier_detection=OutlierDetection())


def _endpoints(localities: list[str], sizes: list[int] | None = None,
               labels: list[dict[str, str]] | None = None) -> list[Endpoint]:
    out = []
    for i, loc in enumerate(localities):
        for j in range((sizes or [1] * len(localities))[i]):
            out.append(Endpoint(ip=f"10.0.{i}.{j}", port=80, locality=loc,
                                labels=frozenset((labels[i] if labels else {}).items())))
    return out


def _view(policy: TrafficPolicy, localities: list[str], sizes: list[int] | None = None,
          proxy: str = "") -> list[Group]:
    return proxy_groups(policy, _endpoints(localities, sizes), Place(proxy))


def _priorities(groups: list[Group]) -> tuple[int, ...]:
    return tuple(g.priority for g in groups)


def test_a_proxy_locality_comes_from_its_node_else_its_locality_label() -> None:
    node = base_pb2.Node(id="a", locality=base_pb2.Locality(region="us", zone="z1"))
    assert proxy_from_node(node).locality == "us/z1"
    labelled = proxy_view("b", "", {"LABELS": {"topology.istio.io/locality": "eu.z2.s"}})
    assert labelled.locality == "eu/z2/s"
    assert proxy_view("c", "", {}).locality == ""
    assert from_label("us/z1") == "us/z1"
    assert split("us") == ("us", "", "")


def test_the_bootstrap_sets_the_node_locality() -> None:
    node = bootstrap(node_id="n", locality="us-east/zone-a")["node"]
    assert node["locality"] == {"region": "us-east", "zone": "zone-a"}
    assert "locality" not in bootstrap(node_id="n")["node"]


def test_failover_priorities_follow_what_the_proxy_shares_with_each_locality() -> None:
    localities = ["ap/d", "eu/c", "us/a/x", "us/a/y", "us/b"]
    assert _priorities(_view(FAILOVER, localities, proxy="us/a/x")) == (3, 3, 0, 1, 2)
    with_target = TrafficPolicy(
        load_balancer=LoadBalancer(locality=LocalityLbSetting(failover=(("us", "eu"),))),
        outlier_detection=OutlierDetection())
    assert _priorities(_view(with_target, localities, proxy="us/a/x")) == (4, 3, 0, 1, 2)
    # Priorities are renumbered without gaps.
    assert _priorities(_view(FAILOVER, ["eu/c", "us/b"], proxy="us/a")) == (1, 0)
    # A zone whose region is unknown counts as in the proxy's region.
    assert _priorities(_view(FAILOVER, ["/a", "/b"], proxy="us/a")) == (0, 1)


def test_no_failover_without_outlier_detection_or_when_turned_off() -> None:
    assert _priorities(_view(TrafficPolicy(), ["eu/b", "us/a"], proxy="us/a")) == (0, 0)
    off = TrafficPolicy(load_balancer=LoadBalancer(locality=LocalityLbSetting(enabled=False)),
                        outlier_detection=OutlierDetection())
    assert _priorities(_view(off, ["eu/b", "us/a"], proxy="us/a")) == (0, 0)


def test_distribute_weighs_named_localities_and_empties_the_rest() -> None:
    setting = LocalityLbSetting(distribute=(
        ("us/a", (("us/*", 90), ("eu", 10))),))
    policy = TrafficPolicy(load_balancer=LoadBalancer(locality=setting))
    view = _view(policy, ["ap/x", "eu/c", "us/a", "us/b"], [5, 2, 3, 1], "us/a/s")
    # us/* holds 4 endpoints: 90 split 3:1 and rounded up; eu gets 10; ap nothing.
    assert [g.weight for g in view] == [5, 10, 68, 23]
    assert [g.emptied for g in view] == [True, False, False, False]
    # A proxy no `from` matches gets the plain view.
    assert [g.weight for g in _view(policy, ["us/a"], [2], "eu/c")] == [2]
    assert matches(("us", "a", ""), "us/*") and not matches(("eu", "a", ""), "us")


def test_failover_priority_splits_groups_by_the_labels_shared_with_the_proxy() -> None:
    setting = LocalityLbSetting(failover_priority=("team", "topology.kubernetes.io/zone"))
    policy = TrafficPolicy(load_balancer=LoadBalancer(locality=setting),
                           outlier_detection=OutlierDetection())
    endpoints = _endpoints(["us/a", "us/a", "us/b"], labels=[{"team": "x"}, {"team": "y"},
                                                             {"team": "x"}])
    names = frozenset({"team", "topology.kubernetes.io/zone"})
    place = place_of("us/a", frozenset({("team", "x"), ("other", "z")}), names)
    assert place.labels == (("team", "x"), ("topology.kubernetes.io/zone", "a"))
    groups = proxy_groups(policy, endpoints, place)
    # Both labels shared: 0; the team only: 1; neither: 2.
    assert [(g.locality, sorted(e.ip for e in g.members), g.priority) for g in groups] == [
        ("us/a", ["10.0.0.0"], 0), ("us/a", ["10.0.1.0"], 2), ("us/b", ["10.0.2.0"], 1)]
    # "label=value" compares with the value given, not the proxy's.
    pinned = TrafficPolicy(load_balancer=LoadBalancer(locality=LocalityLbSetting(
        failover_priority=("team=y",))), outlier_detection=OutlierDetection())
    groups = proxy_groups(pinned, endpoints, place_of("us/a", frozenset({("a", "b")}),
                                                      frozenset({"team"})))
    assert [(sorted(e.ip for e in g.members), g.priority) for g in groups] == [
        (["10.0.1.0"], 0), (["10.0.0.0"], 1), (["10.0.2.0"], 1)]


def _docs(rule: dict[str, Any] | None) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in ("api", "web"):
        docs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": "default"},
                     "spec": {"selector": {"app": name}, "ports": [{"name": "http",
                                                                    "port": 80}]}})
        for i, zone in enumerate(("us.a", "us.b")):
            docs.append({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": f"{name}-{i}", "namespace": "default",
                                      "labels": {"app": name, "istio-locality": zone}},
                         "spec": {"containers": [{"name": "c"}]},
                         "status": {"phase": "Running", "podIP": f"10.0.{len(docs)}.{i}",
                                    "conditions": [{"type": "Ready", "status": "True"}]}})
    if rule is not None:
        docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                     "metadata": {"name": "api", "namespace": "default"},
                     "spec": {"host": "api", "trafficPolicy": rule}})
    return docs


def _translation(rule: dict[str, Any] | None) -> MeshTranslation:
    objs = [parse_object(d) for d in _docs(rule)]
    return MeshTranslation(build_mesh({key_of(o): o for o in objs}))


def test_endpoints_stay_shared_unless_a_rule_makes_them_differ() -> None:
    proxy = ProxyView(node_id="p", locality="us/a")
    for rule in (None, {"outlierDetection": {},
                        "loadBalancer": {"localityLbSetting": {"enabled": False}}}):
        t = _translation(rule)
        assert t.locality_services == frozenset()
        assert t.group_key(types.ENDPOINT, proxy) is None


def test_only_the_rules_service_is_built_per_locality() -> None:
    t = _translation({"outlierDetection": {}})
    assert t.locality_services == frozenset({"api.default.svc.cluster.local"})
    key_a = t.group_key(types.ENDPOINT, ProxyView(node_id="p", locality="us/a"))
    key_b = t.group_key(types.ENDPOINT, ProxyView(node_id="q", locality="us/b"))
    assert (key_a, key_b) == (Place("us/a"), Place("us/b"))
    shared = {m.cluster_name: m for m in t.messages(types.ENDPOINT, None)}
    for key, first in ((key_a, "us/a"), (key_b, "us/b")):
        assert key is not None
        mine = {m.cluster_name: m for m in t.messages(types.ENDPOINT, key)}
        web = "outbound|80||web.default.svc.cluster.local"
        api = "outbound|80||api.default.svc.cluster.local"
        assert mine[web] is shared[web]  # the very same message
        priorities = {f"{g.locality.region}/{g.locality.zone}": g.priority
                      for g in mine[api].endpoints}
        assert priorities[first] == 0 and sorted(priorities.values()) == [0, 1]
    # The cache takes the shared resources for the shared messages.
    cache = SnapshotCache()
    snap = cache.publish(t, ProxyView(node_id="probe"))
    local = snap.for_key(types.ENDPOINT, key_a).items
    everyone = snap.for_key(types.ENDPOINT, None).items
    assert local["outbound|80||web.default.svc.cluster.local"] is \
        everyone["outbound|80||web.default.svc.cluster.local"]
    assert local["outbound|80||api.default.svc.cluster.local"].version != \
        everyone["outbound|80||api.default.svc.cluster.local"].version
