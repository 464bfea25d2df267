"""CP0101, CP0102, CP0104, CP0105, CP0108: references that lead nowhere."""

from __future__ import annotations

from pathlib import Path

from tests.analysis_helpers import destination_rule, line_of, only, run, virtual_service

VS = virtual_service("""\
    http:
    - route:
      - destination: {host: %s}
    """)

DR = "---\n" + destination_rule("""\
    subsets:
    - name: v1
      labels: {version: v1}
    """)


def test_route_to_unknown_host(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, VS % "reviewz"), "CP0101")
    assert str(f.object) == "VirtualService default/r"
    assert f.path == "spec.http[0].route[0].destination.host"
    assert "reviewz" in f.message and "503" in f.message
    assert (f.file, f.line) == (str(tmp_path / "case.yaml"), line_of(tmp_path, "reviewz"))


def test_route_to_known_host_by_any_name(tmp_path: Path) -> None:
    for host in ("reviews", "reviews.default", "reviews.default.svc.cluster.local"):
        assert not only(run(tmp_path, VS % host), "CP0101"), host


def test_tcp_tls_routes_and_mirrors_are_checked(tmp_path: Path) -> None:
    found = run(tmp_path, virtual_service("""\
        http:
        - route: [{destination: {host: reviews}}]
          mirror: {host: shadow}
        tcp:
        - route: [{destination: {host: gone-tcp}}]
        """))
    assert {f.path for f in only(found, "CP0101")} == {
        "spec.http[0].mirror.host", "spec.tcp[0].route[0].destination.host"}
    mirror = next(f for f in found if "mirror" in f.path)
    assert mirror.line == line_of(tmp_path, "mirror:")


def test_route_to_unknown_subset(tmp_path: Path) -> None:
    case = VS % "reviews, subset: v3" + DR
    [f] = only(run(tmp_path, case), "CP0102")
    assert f.path == "spec.http[0].route[0].destination.subset"
    assert "'v3'" in f.message and "default/reviews" in f.message and "'v1'" in f.message
    assert f.line == line_of(tmp_path, "subset: v3")


def test_subset_without_any_destination_rule(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, VS % "reviews, subset: v1"), "CP0102")
    assert "no DestinationRule" in f.message


def test_route_to_defined_subset(tmp_path: Path) -> None:
    assert not only(run(tmp_path, VS % "reviews, subset: v1" + DR), "CP0102")


def test_virtual_service_for_unknown_host(tmp_path: Path) -> None:
    case = (VS % "reviews").replace("hosts: [reviews]", "hosts: [reviews, ratings]")
    [f] = only(run(tmp_path, case), "CP0104")
    assert (f.path, str(f.object)) == ("spec.hosts[1]", "VirtualService default/r")
    assert "ratings.default.svc.cluster.local" in f.message


def test_virtual_service_for_known_host(tmp_path: Path) -> None:
    assert not only(run(tmp_path, VS % "reviews"), "CP0104")


TLS_VS = virtual_service("""\
    tls:
    - match: [{sniHosts: [%s]}]
      route: [{destination: {host: reviews}}]
    """, hosts='[%s, "*.api.example"]')


def test_host_that_scopes_sni_hosts_is_not_unknown(tmp_path: Path) -> None:
    # Istio requires each sniHost within a host: the wildcard is needed, and the routes
    # apply on reviews' port by SNI (tests/golden/tls-routes).
    assert not only(run(tmp_path, TLS_VS % ("reviews", "v2.api.example")), "CP0104")


def test_sni_wildcard_host_holding_no_sni_host_is_unknown(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, TLS_VS % ("reviews", "reviews")), "CP0104")
    assert f.path == "spec.hosts[1]" and "*.api.example" in f.message


def test_sni_host_scoping_needs_a_served_host(tmp_path: Path) -> None:
    # Neither host is a service: the tls routes apply nowhere, whatever their SNI.
    found = only(run(tmp_path, TLS_VS % ("ratings", "v2.api.example")), "CP0104")
    assert [f.path for f in found] == ["spec.hosts[0]", "spec.hosts[1]"]


def test_gateway_only_virtual_service_is_not_checked(tmp_path: Path) -> None:
    case = (VS % "nowhere").replace("hosts: [reviews]",
                                    "hosts: [example.com]\n  gateways: [ingress]")
    assert not only(run(tmp_path, case), "CP0101") and not only(run(tmp_path, case), "CP0104")


def test_destination_rule_for_unknown_host(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, DR.replace("host: reviews", "host: reviewz")), "CP0105")
    assert (f.path, str(f.object)) == ("spec.host", "DestinationRule default/reviews")
    assert f.line == line_of(tmp_path, "host: reviewz")


def test_destination_rule_for_known_host(tmp_path: Path) -> None:
    assert not only(run(tmp_path, DR), "CP0105")


ROOT = virtual_service("""\
    http:
    - match: [{uri: {prefix: /api}}]
      delegate: {name: api, namespace: team}
    - route: [{destination: {host: reviews}}]
    """, name="root")

DELEGATE = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: team}
spec:
  exportTo: [%s]
  http:
  - route: [{destination: {host: reviews.default}}]
"""


def test_delegate_not_found(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, ROOT), "CP0108")
    assert (f.path, str(f.object)) == ("spec.http[0].delegate", "VirtualService default/root")
    assert "no delegate VirtualService team/api" in f.message
    assert f.line == line_of(tmp_path, "delegate:")


def test_delegate_not_exported_to_the_root(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, ROOT + DELEGATE % "."), "CP0108")
    assert "not exported to namespace default" in f.message


def test_delegate_with_hosts_is_no_delegate(tmp_path: Path) -> None:
    case = ROOT + (DELEGATE % '"*"').replace("spec:\n", "spec:\n  hosts: [x.example]\n")
    [f] = only(run(tmp_path, case), "CP0108")
    assert "no delegate VirtualService team/api (one without hosts)" in f.message


def test_delegate_found_and_exported(tmp_path: Path) -> None:
    found = run(tmp_path, ROOT + DELEGATE % '"*"')
    assert not only(found, "CP0108") and not only(found, "CP0101")
