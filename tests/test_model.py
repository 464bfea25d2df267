"""Parsing and validation: every rejection names the object and the field."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.model.errors import ValidationError
from controlplane.model.mesh import Mesh, build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.model.service import Protocol, detect_protocol
from tests.manifests import ISTIO, destination_rule, pod, service, virtual_service, weighted


def mesh_of(*docs: dict[str, Any]) -> Mesh:
    objs = [parse_object(d) for d in docs]
    return build_mesh({key_of(o): o for o in objs})


@pytest.mark.parametrize(("name", "app", "transport", "expected"), [
    ("http", "", "TCP", Protocol.HTTP),
    ("http-web", "", "TCP", Protocol.HTTP),
    ("http2", "", "TCP", Protocol.HTTP2),
    ("grpc", "", "TCP", Protocol.HTTP2),
    ("grpc-web", "", "TCP", Protocol.HTTP),
    ("grpc-web-x", "", "TCP", Protocol.HTTP),
    ("tcp-db", "", "TCP", Protocol.TCP),
    ("tls", "", "TCP", Protocol.TCP),
    ("https", "", "TCP", Protocol.TCP),
    ("httpx", "", "TCP", Protocol.TCP),  # not a prefix followed by '-': unknown
    ("", "", "TCP", Protocol.TCP),
    ("web", "http", "TCP", Protocol.HTTP),  # appProtocol wins over the name
    ("http", "kubernetes.io/h2c", "TCP", Protocol.HTTP2),
    ("http", "", "UDP", Protocol.UNSUPPORTED),
])
def test_protocol_detection(name: str, app: str, transport: str, expected: Protocol) -> None:
    assert detect_protocol(name, app, transport) is expected


def _vs(http: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    doc = virtual_service("r", ["reviews"], http)
    doc["spec"].update(spec)
    return doc


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("no name", {"apiVersion": "v1", "kind": "Service", "metadata": {},
                 "spec": {"ports": [{"port": 80}]}}, "metadata.name: is required"),
    ("bad port", service("a", 0), "spec.ports[0].port: must be between 1 and 65535"),
    ("port as text", {**service("a", 80), "spec": {"ports": [{"port": "eighty"}]}},
     "spec.ports[0].port: must be an integer"),
    ("bad cluster ip", service("a", 80, cluster_ip="10.0.0.300"), "spec.clusterIP"),
    ("unnamed ports", service("a", 80, port_name="", extra_ports=[{"port": 81}]),
     "every port needs a name"),
    ("bad target", {**service("a", 80), "spec": {"ports": [{"port": 80, "targetPort": 0}]}},
     "spec.ports[0].targetPort"),
    ("bad pod ip", pod("p", "not-an-ip", {}), "status.podIP: must be an IP address"),
    ("vs no hosts", _vs([{"route": [{"destination": {"host": "a"}}]}], hosts=[]),
     "spec.hosts: needs at least one host"),
    ("vs weights", _vs([{"route": weighted("reviews", {"v1": 50, "v2": 20})}]),
     "spec.http[0].route: weights must add up to 100, got 70"),
    ("vs weight range", _vs([{"route": weighted("reviews", {"v1": 150, "v2": -50})}]),
     "spec.http[0].route[0].weight: must be between 0 and 100"),
    ("vs no destination host", _vs([{"route": [{"destination": {"subset": "v1"}}]}]),
     "spec.http[0].route[0].destination.host: is required"),
    ("vs empty route", _vs([{"match": [{"uri": {"prefix": "/"}}]}]),
     "spec.http[0]: needs exactly one of route, redirect or directResponse"),
    ("vs two uri kinds", _vs([{"match": [{"uri": {"prefix": "/", "exact": "/a"}}],
                               "route": [{"destination": {"host": "a"}}]}]),
     "spec.http[0].match[0].uri: needs exactly one of exact, prefix or regex"),
    ("vs unknown match kind", _vs([{"match": [{"uri": {"glob": "/*"}}],
                                    "route": [{"destination": {"host": "a"}}]}]),
     "spec.http[0].match[0].uri.glob: unknown match type"),
    ("vs lookahead regex", _vs([{"match": [{"uri": {"regex": "/(?=a)"}}],
                                 "route": [{"destination": {"host": "a"}}]}]),
     "spec.http[0].match[0].uri.regex: invalid regex '/(?=a)'"),
    ("vs broken regex", _vs([{"match": [{"uri": {"regex": "/(a"}}],
                              "route": [{"destination": {"host": "a"}}]}]),
     "spec.http[0].match[0].uri.regex: invalid regex"),
    ("vs bad timeout", _vs([{"route": [{"destination": {"host": "a"}}], "timeout": "soon"}]),
     "spec.http[0].timeout: must be a duration"),
    ("vs unknown field", _vs([{"route": [{"destination": {"host": "a"}}], "rout": []}]),
     "spec.http[0].rout: unknown field"),
    ("vs wildcard host", _vs([{"route": [{"destination": {"host": "a"}}]}], hosts=["*"]),
     "spec.hosts[0]"),
    ("vs bad subset", _vs([{"route": [{"destination": {"host": "a", "subset": "V_1"}}]}]),
     "spec.http[0].route[0].destination.subset"),
    ("vs old api", {**_vs([]), "apiVersion": "networking.istio.io/v2"}, "apiVersion"),
    ("dr no host", {"apiVersion": ISTIO, "kind": "DestinationRule",
                    "metadata": {"name": "d"}, "spec": {}}, "spec.host: is required"),
    ("dr duplicate subset", destination_rule("d", "reviews", {"v1": {"a": "b"}}) | {
        "spec": {"host": "reviews", "subsets": [{"name": "v1"}, {"name": "v1"}]}},
     "spec.subsets[1].name: subset 'v1' is defined twice"),
    ("dr bad labels", {"apiVersion": ISTIO, "kind": "DestinationRule",
                       "metadata": {"name": "d"},
                       "spec": {"host": "r", "subsets": [{"name": "v1", "labels": "x"}]}},
     "spec.subsets[0].labels: must be an object"),
    ("not a mapping", ["a list"], "must be a mapping"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("case", "doc", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_objects_name_the_field(case: str, doc: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_object(doc)
    assert message in str(info.value)
    if isinstance(doc, dict) and doc.get("metadata", {}).get("name"):
        assert f"/{doc['metadata']['name']}" in str(info.value)  # names the object


def test_every_error_of_an_object_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        parse_object(_vs([{"route": weighted("reviews", {"v1": 50, "v2": 20}),
                           "timeout": "x"}], hosts=[]))
    assert len(info.value.errors) == 3


def test_istio_api_versions_accepted() -> None:
    for version in ("v1", "v1beta1", "v1alpha3"):
        doc = _vs([{"route": [{"destination": {"host": "a"}}]}])
        doc["apiVersion"] = f"networking.istio.io/{version}"
        assert parse_object(doc).hosts == ("reviews",)


def test_unsupported_fields_are_warnings_not_silence() -> None:
    vs = parse_object(_vs([{"route": [{"destination": {"host": "a"}}],
                            "match": [{"sourceLabels": {"app": "x"}}]}]))
    assert vs.warnings == ("spec.http[0].match[0].sourceLabels: selects by the client proxy; "
                           "not supported, the match ignores it",)


def test_endpoints_from_pods_follow_the_endpoint_controller() -> None:
    mesh = mesh_of(
        service("web", 80, target="http-alt"),
        pod("web-1", "10.0.0.1", {"app": "web"}, ports={"http-alt": 8081}),
        pod("web-2", "10.0.0.2", {"app": "web"}, ports={"http-alt": 8082}),
        pod("web-3", "10.0.0.3", {"app": "web"}, ready=False, ports={"http-alt": 8083}),
        pod("other", "10.0.0.4", {"app": "other"}, ports={"http-alt": 8084}),
        {**pod("web-5", "", {"app": "web"}), "status": {"phase": "Pending"}},
    )
    eps = mesh.endpoints[("web.default.svc.cluster.local", 80)]
    assert [(e.ip, e.port, e.pod) for e in eps] == [("10.0.0.1", 8081, "web-1"),
                                                     ("10.0.0.2", 8082, "web-2")]
    assert eps[0].labels == frozenset({("app", "web")})


def test_endpoint_slices_are_merged_and_preferred_over_pods() -> None:
    def slice_(name: str, ips: list[str], ready: bool = True) -> dict[str, Any]:
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                               "targetRef": {"kind": "Pod", "name": f"p{ip[-1]}"}}
                              for ip in ips]}
    mesh = mesh_of(service("web", 80, target=8080), slice_("web-a", ["10.0.0.1"]),
                   slice_("web-b", ["10.0.0.2", "10.0.0.1"]), slice_("web-c", ["10.0.0.3"],
                                                                     ready=False),
                   pod("p1", "10.0.0.1", {"app": "web", "version": "v1"}),
                   pod("p9", "10.0.0.9", {"app": "web"}))
    eps = mesh.endpoints[("web.default.svc.cluster.local", 80)]
    assert [(e.ip, e.port) for e in eps] == [("10.0.0.1", 8080), ("10.0.0.2", 8080)]
    assert ("version", "v1") in eps[0].labels  # subset labels come from the pod


def test_core_endpoints_are_used_without_slices() -> None:
    mesh = mesh_of(service("web", 80, selector={}), {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
        "subsets": [{"addresses": [{"ip": "10.0.0.7"}], "notReadyAddresses": [
            {"ip": "10.0.0.8"}], "ports": [{"name": "http", "port": 9000}]}]})
    eps = mesh.endpoints[("web.default.svc.cluster.local", 80)]
    assert [(e.ip, e.port) for e in eps] == [("10.0.0.7", 9000)]


def test_conflicting_virtual_services_oldest_wins_and_is_reported() -> None:
    route = [{"route": [{"destination": {"host": "reviews"}}]}]
    mesh = mesh_of(service("reviews", 80),
                   virtual_service("new", ["reviews"], route, created="2026-02-01T00:00:00Z"),
                   virtual_service("old", ["reviews"], route, created="2026-01-01T00:00:00Z"))
    assert mesh.virtual_services["reviews.default.svc.cluster.local"].meta.name == "old"
    assert any("default/new" in p and "default/old" in p for p in mesh.problems)


def test_missing_destination_host_and_subset_are_reported() -> None:
    mesh = mesh_of(service("reviews", 80), destination_rule("r", "reviews", {"v1": {}}),
                   virtual_service("r", ["reviews"], [{"route": [
                       {"destination": {"host": "reviews", "subset": "v9"}, "weight": 50},
                       {"destination": {"host": "gone"}, "weight": 50}]}]))
    text = "\n".join(mesh.problems)
    assert "spec.http[0].route[0].destination.subset: subset 'v9'" in text
    assert "spec.http[0].route[1].destination.host: 'gone' matches no service" in text
