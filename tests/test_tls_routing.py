"""TLS through a real Envoy, never terminated: real TLS upstreams on loopback with
certificates from a test CA, a Python TLS client naming a host by SNI, the sidecar
choosing the upstream by that SNI (passthrough by the services' names, or a
VirtualService's tls routes). The client verifies the chain against the test CA and sees
the certificate of the upstream that answered: the session is end to end."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controlplane.model.mesh import build_mesh
from controlplane.model.mesh_config import REGISTRY_ONLY, MeshConfig
from controlplane.model.parse import key_of, parse_object
from controlplane.translate import build_listeners
from tests.harness import ControlPlane, get, wait_until, write_yaml
from tests.manifests import ISTIO, pod, service

PORT = 19443  # both services' TLS port: one listener, told apart by SNI
TARGET = 18443  # the pods' port


class Authority:
    """A test CA that signs one certificate per upstream."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test mesh CA")])
        self.cert = self._builder(name, name, self.key.public_key()).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True,
        ).sign(self.key, hashes.SHA256())
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _builder(subject: x509.Name, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1)))

    def issue(self, name: str, dns_names: list[str]) -> tuple[Path, Path, bytes]:
        """(certificate file, key file, the certificate in DER) for `name`."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
                             self.cert.subject, key.public_key()).add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
            critical=False,
        ).sign(self.key, hashes.SHA256())
        cert_file, key_file = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_file, key_file, cert.public_bytes(serialization.Encoding.DER)


class TlsUpstream:
    """A TLS server on ip:port: after the handshake it writes "<name> <SNI it got>\\n"
    and closes."""

    def __init__(self, name: str, ip: str, port: int, authority: Authority,
                 dns_names: list[str]) -> None:
        self.name = name
        cert_file, key_file, self.cert_der = authority.issue(name, dns_names)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_file, key_file)
        self.context.sni_callback = self._note_sni
        self.sock = socket.create_server((ip, port))
        self.sock.settimeout(0.2)
        self._sni = threading.local()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _note_sni(self, conn: ssl.SSLObject, sni: str | None, _: ssl.SSLContext) -> None:
        self._sni.value = sni or "-"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(raw,), daemon=True).start()

    def _answer(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        self._sni.value = "-"
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                tls.sendall(f"{self.name} {self._sni.value}\n".encode())
        except (OSError, ssl.SSLError):
            pass  # a probe before the route was in place, closed half-way

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        self.thread.join(5)


def hello(sidecar: str, sni: str | None, ca_file: Path) -> tuple[str, str, bytes]:
    """(upstream name, the SNI it received, its certificate) over TLS through the sidecar.
    The chain is verified against the test CA; the host name is not, as some SNIs here
    name no certificate on purpose (they reach a service by default)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    with socket.create_connection((sidecar, PORT), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=sni) as tls:
        line = tls.makefile("rb").readline().decode()
        cert = tls.getpeercert(binary_form=True)
    name, _, got = line.strip().partition(" ")
    assert cert is not None
    return name, got, cert


@pytest.fixture
def tls_mesh(file_cp: ControlPlane, config_dir: Path, tmp_path: Path, ip: Any, envoy: Any
             ) -> Iterator[dict[str, Any]]:
    """Services api (port named https) and web (appProtocol tls) on one port, a TLS pod
    each, and a sidecar."""
    authority = Authority(tmp_path)
    addrs = {"api": ip(), "web": ip()}
    upstreams = {
        "api": TlsUpstream("api-1", addrs["api"], TARGET, authority,
                           ["api.default.svc.cluster.local"]),
        "web": TlsUpstream("web-1", addrs["web"], TARGET, authority,
                           ["web.default.svc.cluster.local", "*.web.example"]),
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
                             authority.ca_file)[0] == "web-1", 10,
               what="TLS to web through the sidecar")
    try:
        yield {"sidecar": sidecar, "ca": authority.ca_file, "upstreams": upstreams,
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
        assert (name, got, cert) == (ups[upstream].name, sni, ups[upstream].cert_der), sni
    # No service named: the port's first service (default/api), as Istio's listener on
    # that service's address would send it; with no SNI at all too.
    assert hello(sidecar, "nobody.example", ca)[:2] == ("api-1", "nobody.example")
    assert hello(sidecar, None, ca)[:2] == ("api-1", "-")


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
    assert (name, got, cert) == ("web-1", "a.web.example", ups["web"].cert_der)
    name, got, cert = hello(sidecar, "b.web.example", ca)
    assert (name, got, cert) == ("api-1", "b.web.example", ups["api"].cert_der)
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
    authority = Authority(tmp_path)
    http_pod, tls_pod = ip(), ip()
    upstream(http_pod, TARGET, "web", "web-1")
    secure = TlsUpstream("secure-1", tls_pod, TARGET + 1, authority,
                         ["secure.default.svc.cluster.local"])
    try:
        write_yaml(config_dir / "mesh.yaml",
                   service("web", PORT, target=TARGET),
                   service("secure", PORT, target=TARGET + 1, port_name="https"),
                   pod("web-1", http_pod, {"app": "web"}),
                   pod("secure-1", tls_pod, {"app": "secure"}))
        sidecar = ip()
        envoy(f"tls-http-{sidecar}", file_cp.port, instance_ip=sidecar)
        wait_until(lambda: hello(sidecar, "secure.default.svc.cluster.local",
                                 authority.ca_file)[0] == "secure-1", 10,
                   what="TLS to secure through the sidecar")
        # Plain HTTP sends no ClientHello: the inspector lets it through to the routes.
        status, body = get(sidecar, PORT, "web")
        assert (status, body["pod"]) == (200, "web-1")
        sni = "secure.default.svc.cluster.local"
        assert hello(sidecar, sni, authority.ca_file) == ("secure-1", sni, secure.cert_der)
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
