"""TLS through a real Envoy, never terminated: real TLS upstreams on loopback (the
shared HTTPS server of tests/tls_upstream.py, reporting the SNI it got) with
certificates from the test CA of tests/tls_certs.py, a Python TLS client naming a host
by SNI, the sidecar choosing the upstream by that SNI (passthrough by the services'
names, or a VirtualService's tls routes). The client verifies the chain against the test
CA and sees the certificate of the upstream that answered: the session is end to end."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from controlplane.model.mesh import build_mesh
from controlplane.model.mesh_config import REGISTRY_ONLY, MeshConfig
from controlplane.model.parse import key_of, parse_object
from controlplane.translate import build_listeners
from tests.harness import ControlPlane, get, wait_until, write_yaml
from tests.manifests import ISTIO, pod, service
from tests.tls_certs import TestCa
from tests.tls_upstream import TlsUpstream

PORT = 19443  # both services' TLS port: one listener, told apart by SNI
TARGET = 18443  # the pods' port


def upstream_tls(ip: str, name: str, ca: TestCa, *dns: str, port: int = TARGET
                 ) -> TlsUpstream:
    return TlsUpstream(ip, port, ca.issue(name, dns=dns), name=name)


def hello(sidecar: str, sni: str | None, ca_file: Path) -> tuple[str, str | None, bytes]:
    """(upstream name, the SNI it received or None, its certificate) from one request over
    TLS through the sidecar. The chain is verified against the test CA; the host name is
    not, as some SNIs here name no certificate on purpose (they reach a service by
    default)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    with socket.create_connection((sidecar, PORT), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as tls:
        tls.sendall(f"GET / HTTP/1.1\r\nhost: {sni or sidecar}\r\n"
                    "connection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        body = json.loads(response.read())
        cert = tls.getpeercert(binary_form=True)
    assert cert is not None
    return body["pod"], body["sni"], cert


@pytest.fixture
def tls_mesh(file_cp: ControlPlane, config_dir: Path, tmp_path: Path, ip: Any, envoy: Any
             ) -> Iterator[dict[str, Any]]:
    """Services api (port named https) and web (appProtocol tls) on one port, a TLS pod
    each, and a sidecar."""
    ca = TestCa(tmp_path / "pki")
    addrs = {"api": ip(), "web": ip()}
    upstreams = {
        "api": upstream_tls(addrs["api"], "api-1", ca, "api.default.svc.cluster.local"),
        "web": upstream_tls(addrs["web"], "web-1", ca, "web.default.svc.cluster.local",
                            "*.web.example"),
    }
    web = service("web", PORT, target=TARGET, port_name="web")
    web["spec"]["ports"][0]["appProtocol"] = "tls"
    write_yaml(config_dir / "mesh.yaml",
               service("api", PORT, target=TARGET, port_name="https"), web,
               pod("api-1", addrs["api"], {"app": "api"}),
               pod("web-1", addrs["web"], {"app": "web"}))
    sidecar = ip()
    envoy(f"tls-{sidecar}", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: hello(sidecar, "web.default.svc.cluster.local",
                             ca.path)[0] == "web-1", 10,
               what="TLS to web through the sidecar")
    try:
        yield {"sidecar": sidecar, "ca": ca.path, "upstreams": upstreams,
               "config": config_dir}
    finally:
        for u in upstreams.values():
            u.stop()


@pytest.mark.e2e
def test_tls_passes_through_to_the_service_its_sni_names(tls_mesh: dict[str, Any]) -> None:
    sidecar, ca, ups = tls_mesh["sidecar"], tls_mesh["ca"], tls_mesh["upstreams"]
    for sni, upstream in [("api.default.svc.cluster.local", "api"),
                          ("api.default", "api"), ("web.default.svc", "web"),
                          ("web.default.svc.cluster.local", "web")]:
        name, got, cert = hello(sidecar, sni, ca)
        # The upstream's own certificate, and the SNI as the client sent it: one session.
        assert (name, got, cert) == (ups[upstream].name, sni, ups[upstream].cert.der), sni
    # No service named: the port's first service (default/api), as Istio's listener on
    # that service's address would send it; with no SNI at all too.
    assert hello(sidecar, "nobody.example", ca)[:2] == ("api-1", "nobody.example")
    assert hello(sidecar, None, ca)[:2] == ("api-1", None)


@pytest.mark.e2e
def test_tls_routes_choose_the_upstream_by_sni(tls_mesh: dict[str, Any]) -> None:
    sidecar, ca, ups = tls_mesh["sidecar"], tls_mesh["ca"], tls_mesh["upstreams"]
    # Before the routes, a.web.example names no service: the port's first, api.
    assert hello(sidecar, "a.web.example", ca)[0] == "api-1"
    write_yaml(tls_mesh["config"] / "vs.yaml", {
        "apiVersion": ISTIO, "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"hosts": ["web", "*.web.example"], "tls": [
            {"match": [{"sniHosts": ["a.web.example"], "port": PORT}],
             "route": [{"destination": {"host": "web"}}]},
            {"match": [{"sniHosts": ["b.web.example"]}],
             "route": [{"destination": {"host": "api"}}]},
            {"match": [{"sniHosts": ["split.web.example"]}],
             "route": [{"destination": {"host": "api"}, "weight": 50},
                       {"destination": {"host": "web"}, "weight": 50}]}]}})
    wait_until(lambda: hello(sidecar, "a.web.example", ca)[0] == "web-1", 10,
               what="the tls route for a.web.example in force")
    name, got, cert = hello(sidecar, "a.web.example", ca)
    assert (name, got, cert) == ("web-1", "a.web.example", ups["web"].cert.der)
    name, got, cert = hello(sidecar, "b.web.example", ca)
    assert (name, got, cert) == ("api-1", "b.web.example", ups["api"].cert.der)
    # 50/50: 40 connections all reaching one side would happen once in 2^39.
    assert {hello(sidecar, "split.web.example", ca)[0] for _ in range(40)} == {"api-1",
                                                                                "web-1"}
    # An SNI no route names: Istio passes it on to the address it was sent to. Naming
    # web itself, that is web; anything else reaches the port's first service, api.
    assert hello(sidecar, "web.default.svc.cluster.local", ca)[0] == "web-1"
    assert hello(sidecar, "c.web.example", ca)[:2] == ("api-1", "c.web.example")


@pytest.mark.e2e
def test_a_tls_service_on_an_http_port_leaves_http_as_it_was(
        file_cp: ControlPlane, config_dir: Path, tmp_path: Path, ip: Any, envoy: Any,
        upstream: Any) -> None:
    ca = TestCa(tmp_path / "pki")
    http_pod, tls_pod = ip(), ip()
    upstream(http_pod, TARGET, "web", "web-1")
    secure = upstream_tls(tls_pod, "secure-1", ca, "secure.default.svc.cluster.local",
                          port=TARGET + 1)
    try:
        write_yaml(config_dir / "mesh.yaml",
                   service("web", PORT, target=TARGET),
                   service("secure", PORT, target=TARGET + 1, port_name="https"),
                   pod("web-1", http_pod, {"app": "web"}),
                   pod("secure-1", tls_pod, {"app": "secure"}))
        sidecar = ip()
        envoy(f"tls-http-{sidecar}", file_cp.port, instance_ip=sidecar)
        wait_until(lambda: hello(sidecar, "secure.default.svc.cluster.local",
                                 ca.path)[0] == "secure-1", 10,
                   what="TLS to secure through the sidecar")
        # Plain HTTP sends no ClientHello: the inspector lets it through to the routes.
        status, body = get(sidecar, PORT, "web")
        assert (status, body["pod"]) == (200, "web-1")
        sni = "secure.default.svc.cluster.local"
        assert hello(sidecar, sni, ca.path) == ("secure-1", sni, secure.cert.der)
    finally:
        secure.stop()


def test_registry_only_drops_what_no_tls_route_names() -> None:
    """Under REGISTRY_ONLY, Istio sends a connection no tls route matches to its
    BlackHoleCluster: no chain for the routed service's own names and, that service
    being the port's first, no default chain (Envoy closes the connection). A service
    without routes still gets its passthrough chain."""
    vs = {"apiVersion": ISTIO, "kind": "VirtualService",
          "metadata": {"name": "api", "namespace": "default"},
          "spec": {"hosts": ["api"], "tls": [{"match": [{"sniHosts": ["api"]}],
                                              "route": [{"destination": {"host": "web"}}]}]}}
    objs = [parse_object(d) for d in (service("api", PORT, port_name="tls"),
                                      service("web", PORT, port_name="tls"), vs)]
    mesh = build_mesh({key_of(o): o for o in objs})

    def chains(config: MeshConfig) -> tuple[list[list[str]], bool]:
        [listener] = build_listeners(replace(mesh, config=config), "127.0.0.1")
        return ([list(c.filter_chain_match.server_names) for c in listener.filter_chains],
                listener.HasField("default_filter_chain"))
    web_names = ["web.default", "web.default.svc", "web.default.svc.cluster.local"]
    assert chains(MeshConfig()) == (
        [["api"], ["api.default", "api.default.svc", "api.default.svc.cluster.local"],
         web_names], True)
    assert chains(MeshConfig(outbound_traffic_policy=REGISTRY_ONLY)) == (
        [["api"], web_names], False)
