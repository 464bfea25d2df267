"""CP0120, CP0121: port names that give no protocol; one port, two protocols."""

from __future__ import annotations

from pathlib import Path

from tests.analysis_helpers import line_of, only, run

SVC = """\
---
apiVersion: v1
kind: Service
metadata: {name: %s, namespace: default}
spec:
  selector: {app: x}
  ports: [%s]
"""


def test_port_name_without_protocol(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, SVC % ("web", "{name: web, port: 8080}")), "CP0120")
    assert (str(f.object), f.path) == ("Service default/web", "spec.ports[0].name")
    assert "opaque TCP" in f.message
    assert f.line == line_of(tmp_path, "ports:")


def test_unnamed_port(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, SVC % ("web", "{port: 8080}")), "CP0120")
    assert f.path == "spec.ports[0]" and "no name" in f.message


def test_unknown_app_protocol(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, SVC % ("web", "{name: http, port: 80, appProtocol: "
                                    "HTTP/1.1}")), "CP0120")
    assert f.path == "spec.ports[0].appProtocol"


def test_named_ports_and_udp(tmp_path: Path) -> None:
    for ports in ("{name: http-web, port: 80}", "{name: tcp, port: 80}",
                  "{name: x, port: 80, appProtocol: grpc}", "{name: dns, port: 53, "
                  "protocol: UDP}", "{name: grpc-web-ui, port: 80}"):
        assert not only(run(tmp_path, SVC % ("web", ports)), "CP0120"), ports


def test_one_port_two_protocols(tmp_path: Path) -> None:
    case = (SVC % ("db", "{name: tcp-db, port: 9080}")).replace(
        "spec:\n", "spec:\n  clusterIP: 10.96.0.9\n")
    [f] = only(run(tmp_path, case), "CP0121")
    assert (str(f.object), f.path) == ("Service default/db", "spec.ports[0]")
    assert "default/reviews" in f.message and "cluster IP 10.96.0.9" in f.message


def test_headless_tcp_on_an_http_port_is_unreachable(tmp_path: Path) -> None:
    case = (SVC % ("db", "{name: tcp-db, port: 9080}")).replace(
        "spec:\n", "spec:\n  clusterIP: None\n")
    [f] = only(run(tmp_path, case), "CP0121")
    assert "headless (no cluster IP), so no connection reaches it" in f.message


def test_same_protocol_or_other_port(tmp_path: Path) -> None:
    assert not only(run(tmp_path, SVC % ("web", "{name: http2, port: 9080}")), "CP0121")
    assert not only(run(tmp_path, SVC % ("db", "{name: tcp, port: 5432}")), "CP0121")


def test_tcp_without_cluster_ip_on_an_http_port(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, SVC % ("db", "{name: tcp-db, port: 9080}")), "CP0121")
    assert "no cluster IP here" in f.message
