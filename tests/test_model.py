"""Parsing and validation: every rejection names the object and the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.model.errors import ValidationError
from controlplane.model.mesh import Mesh, build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.model.service import Protocol, detect_protocol
from tests.manifests import destination_rule, pod, service, virtual_service, weighted


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
    ("tls", "", "TCP", Protocol.TLS),
    ("https", "", "TCP", Protocol.TLS),
    ("https-web", "", "TCP", Protocol.TLS),
    ("web", "kubernetes.io/wss", "TCP", Protocol.TLS),
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


INVALID_OBJECTS = Path(__file__).with_name("invalid_objects.yaml")


@dataclass(frozen=True)
class InvalidObject:
    name: str
    doc: Any  # what parse_object is given: a mapping, or not even that
    message: str  # a fragment of the rejection, naming the field


def load_invalid_objects() -> list[InvalidObject]:
    """tests/invalid_objects.yaml (also read by test_validation's end-to-end test). An
    object without metadata is named after its case, so each case is its own object."""
    cases = []
    for entry in yaml.safe_load(INVALID_OBJECTS.read_text()):
        doc = entry["object"]
        if isinstance(doc, dict) and "metadata" not in doc:
            doc = {**doc, "metadata": {"name": entry["name"], "namespace": "default"}}
        cases.append(InvalidObject(entry["name"], doc, entry["message"]))
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), f"{INVALID_OBJECTS.name}: two cases share a name"
    return cases


INVALID = load_invalid_objects()


def rejection_ref(doc: Any) -> str:
    """How a rejection names what it rejects: `Kind namespace/name`."""
    if not isinstance(doc, dict):
        return "<document>"
    meta = doc["metadata"]
    return f"{doc['kind']} {meta.get('namespace', 'default')}/{meta.get('name', '<unnamed>')}"


@pytest.mark.parametrize("case", INVALID, ids=[c.name for c in INVALID])
def test_invalid_objects_name_the_object_and_the_field(case: InvalidObject) -> None:
    with pytest.raises(ValidationError) as info:
        parse_object(case.doc)
    text = str(info.value)
    assert text.startswith(f"{rejection_ref(case.doc)}: "), text
    assert case.message in text, text


def test_every_error_of_an_object_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        parse_object(_vs([{"route": weighted("reviews", {"v1": 0, "v2": 0}),
                           "timeout": "x"}], hosts=[""]))
    assert len(info.value.errors) == 3


def test_istio_api_versions_accepted() -> None:
    for version in ("v1", "v1beta1", "v1alpha3"):
        doc = _vs([{"route": [{"destination": {"host": "a"}}]}])
        doc["apiVersion"] = f"networking.istio.io/{version}"
        assert parse_object(doc).hosts == ("reviews",)


def test_unsupported_fields_are_warnings_not_silence() -> None:
    vs = parse_object(_vs([{"route": [{"destination": {"host": "a"}}],
                            "match": [{"statPrefix": "x"}]}]))
    assert vs.warnings == ("spec.http[0].match[0].statPrefix: not supported, the match "
                           "ignores it",)


def test_client_selecting_match_fields_are_kept() -> None:
    vs = parse_object({**_vs([{"route": [{"destination": {"host": "a"}}],
                               "match": [{"sourceLabels": {"app": "x"},
                                          "sourceNamespace": "team-a"},
                                         {"gateways": ["mesh"]}]}]),
                       })
    first, second = vs.http[0].matches
    assert first.source_labels == frozenset({("app", "x")})
    assert first.source_namespace == "team-a" and first.selects_client
    assert first.applies_to(frozenset({("app", "x"), ("v", "1")}), "team-a")
    assert not first.applies_to(frozenset({("app", "x")}), "team-b")
    assert not first.applies_to(frozenset(), "team-a")
    assert second.gateways == ("mesh",) and second.applies_to(frozenset(), "any")
    assert vs.warnings == ()


def _tls_vs(hosts: list[str], match: dict[str, Any], gateways: list[str] | None = None
            ) -> Any:
    spec: dict[str, Any] = {"hosts": hosts, "tls": [
        {"match": [match], "route": [{"destination": {"host": "web"}}]}]}
    if gateways is not None:
        spec["gateways"] = gateways
    return parse_object({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                         "metadata": {"name": "tls", "namespace": "default"}, "spec": spec})


def test_tls_routes_accept_what_istio_accepts() -> None:
    """SNI hosts within the hosts (a wildcard within a wider one), subnets as written or
    as one address (normalised), the client-selecting fields with a warning, an IP
    address as SNI host with one too."""
    vs = _tls_vs(["*.example.com", "web"], {
        "sniHosts": ["a.example.com", "*.b.example.com", "web", "10.0.0.1"],
        "destinationSubnets": ["10.1.2.3/8", "192.168.0.1"], "port": 443,
        "sourceLabels": {"app": "client"}, "sourceNamespace": "shop",
        "gateways": ["mesh", "istio-system/ingress"]})
    match = vs.tls[0].matches[0]
    assert match.sni_hosts == ("a.example.com", "*.b.example.com", "web", "10.0.0.1")
    assert match.destination_subnets == ("10.0.0.0/8", "192.168.0.1/32")
    assert match.port == 443 and match.applies_to_sidecars
    assert vs.tls[0].route[0].weight == 100
    assert vs.warnings == (
        "spec.tls[0].match[0].sniHosts[3]: '10.0.0.1' is an IP address; the SNI spec forbids "
        "them and most clients never send one",
        "spec.tls[0].match[0].sourceLabels: selects by the client proxy; not supported, the "
        "match ignores it",
        "spec.tls[0].match[0].sourceNamespace: selects by the client proxy; not supported, "
        "the match ignores it")


def test_tls_match_naming_only_gateways_is_not_for_sidecars() -> None:
    assert not _tls_vs(["web"], {"sniHosts": ["web"], "gateways": ["istio-system/gw"]}
                       ).tls[0].matches[0].applies_to_sidecars
    # A gateway-bound VirtualService may name Istio's generated SNI (not a DNS name).
    sni = "outbound_.443_._.web.default.svc.cluster.local"
    assert _tls_vs([sni], {"sniHosts": [sni]}, gateways=["gw"]).tls[0].matches[0].sni_hosts \
        == (sni,)
    with pytest.raises(ValidationError, match="is not a valid domain name"):
        _tls_vs([sni], {"sniHosts": [sni]})


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
