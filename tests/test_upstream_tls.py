"""Upstream TLS (DestinationRule `tls`) end to end: a real Envoy originates TLS to real
HTTPS servers on loopback (tests/tls_upstream.py), with a test CA made for the run
(tests/tls_certs.py): SIMPLE with SNI and SANs, MUTUAL to a server that requires a
client certificate, a wrong SAN refused, no `sni` taking the request's host, DISABLE."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ControlPlane, get, wait_until, write_yaml
from tests.manifests import ISTIO, pod, service
from tests.tls_certs import TestCa
from tests.tls_upstream import TlsUpstream

pytestmark = pytest.mark.e2e

PORT = 19443  # the services' port, at each sidecar's address
TARGET = 18443  # the pods' port


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestCa(tmp_path / "pki")


@pytest.fixture
def tls_upstream() -> Iterator[Callable[..., TlsUpstream]]:
    started: list[TlsUpstream] = []

    def make(*args: Any, **kwargs: Any) -> TlsUpstream:
        started.append(TlsUpstream(*args, **kwargs))
        return started[-1]
    yield make
    for u in started:
        u.stop()


def rule(host: str, tls: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": ISTIO, "kind": "DestinationRule",
            "metadata": {"name": host, "namespace": "default"},
            "spec": {"host": host, "trafficPolicy": {"tls": tls}}}


def backend(name: str, ip: str) -> list[dict[str, Any]]:
    return [service(name, PORT, target=TARGET),
            pod(f"{name}-1", ip, {"app": name})]


def fqdn(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


def test_simple_mutual_and_disable_with_real_tls_upstreams(
        file_cp: ControlPlane, config_dir: Path, envoy: Any, ip: Any, ca: TestCa,
        tls_upstream: Callable[..., TlsUpstream], upstream: Any) -> None:
    ips = {name: ip() for name in ("simple", "mutual", "nocert", "autosni", "wrongsan",
                                   "plain")}
    client = ca.issue("envoy-client", client=True)
    tls_upstream(ips["simple"], TARGET, ca.issue("simple", dns=("simple.example.com",)))
    tls_upstream(ips["mutual"], TARGET, ca.issue("mutual", dns=("mutual.example.com",)),
                 client_ca=ca.path)
    tls_upstream(ips["nocert"], TARGET, ca.issue("nocert", dns=("nocert.example.com",)),
                 client_ca=ca.path)
    auto = tls_upstream(ips["autosni"], TARGET, ca.issue("autosni", dns=(fqdn("autosni"),)))
    wrong = tls_upstream(ips["wrongsan"], TARGET,
                         ca.issue("wrongsan", dns=("wrongsan.example.com",)))
    upstream(ips["plain"], TARGET, "plain", "plain-1")
    ca_file = str(ca.path)
    docs = [doc for name, addr in ips.items() for doc in backend(name, addr)]
    docs += [
        rule("simple", {"mode": "SIMPLE", "caCertificates": ca_file,
                        "sni": "simple.example.com", "subjectAltNames": ["simple.example.com"]}),
        rule("mutual", {"mode": "MUTUAL", "caCertificates": ca_file, "sni": "mutual.example.com",
                        "clientCertificate": str(client.cert),
                        "privateKey": str(client.key)}),
        # The server wants a client certificate and SIMPLE shows none.
        rule("nocert", {"mode": "SIMPLE", "caCertificates": ca_file,
                        "sni": "nocert.example.com"}),
        # No sni: the request's host, and the certificate must name it.
        rule("autosni", {"mode": "SIMPLE", "caCertificates": ca_file}),
        rule("plain", {"mode": "DISABLE"}),
    ]
    wrong_rule = rule("wrongsan", {"mode": "SIMPLE", "caCertificates": ca_file,
                                   "sni": "wrongsan.example.com",
                                   "subjectAltNames": ["someone-else.example.com"]})
    write_yaml(config_dir / "mesh.yaml", *docs, wrong_rule)
    sidecar = ip()
    envoy("tls-origination", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: get(sidecar, PORT, "simple")[0] == 200, 15, what="simple over TLS")

    status, body = get(sidecar, PORT, "simple")
    assert status == 200 and body == {"sni": "simple.example.com", "client": None,
                                      "host": "simple"}, body
    status, body = get(sidecar, PORT, "mutual")
    assert status == 200 and body["client"] == "envoy-client", body
    assert body["sni"] == "mutual.example.com", body
    status, body = get(sidecar, PORT, "nocert")
    assert status == 503, (status, body)
    status, body = get(sidecar, PORT, fqdn("autosni"))
    assert status == 200 and body["sni"] == fqdn("autosni"), body
    # auto_san_validation: a host the certificate does not name is refused.
    status, body = get(sidecar, PORT, "autosni")
    assert status == 503, (status, body)
    assert [r["host"] for r in auto.requests] == [fqdn("autosni")]
    status, body = get(sidecar, PORT, "plain")
    assert status == 200 and body["service"] == "plain", body

    status, body = get(sidecar, PORT, "wrongsan")
    assert status == 503, (status, body)
    # Envoy reached it and refused its certificate: no request got through.
    assert wrong.failed_handshakes > 0 and wrong.requests == []
    # The same server once the rule names its SAN: the refusal was the SAN's.
    wrong_rule["spec"]["trafficPolicy"]["tls"]["subjectAltNames"] = ["wrongsan.example.com"]
    write_yaml(config_dir / "mesh.yaml", *docs, wrong_rule)
    wait_until(lambda: get(sidecar, PORT, "wrongsan")[0] == 200, 15,
               what="wrongsan accepted with the right SAN")


def secret(name: str, data: dict[str, Path], ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns},
            "data": {k: base64.b64encode(p.read_bytes()).decode() for k, p in data.items()}}


def test_credential_name_certificates_arrive_over_sds(
        file_cp: ControlPlane, config_dir: Path, envoy: Any, ip: Any, ca: TestCa,
        tls_upstream: Callable[..., TlsUpstream]) -> None:
    ips = {name: ip() for name in ("bank", "shop")}
    client = ca.issue("sds-client", client=True)
    tls_upstream(ips["bank"], TARGET, ca.issue("bank", dns=("bank.example.com",)),
                 client_ca=ca.path)
    tls_upstream(ips["shop"], TARGET, ca.issue("shop", dns=("shop.example.com",)))
    other_ca = TestCa(ca.directory / "other", "other-ca")
    docs = [doc for name, addr in ips.items() for doc in backend(name, addr)]
    docs += [
        # MUTUAL: certificate, key and CA in one kubernetes.io/tls Secret.
        secret("bank-client", {"tls.crt": client.cert, "tls.key": client.key,
                               "ca.crt": ca.path}),
        rule("bank", {"mode": "MUTUAL", "credentialName": "bank-client",
                      "sni": "bank.example.com", "subjectAltNames": ["bank.example.com"]}),
        # SIMPLE: the CA alone, from the `-cacert` Secret, Istio's generic key.
        secret("shop-ca-cacert", {"cacert": ca.path}),
        rule("shop", {"mode": "SIMPLE", "credentialName": "kubernetes://shop-ca",
                      "sni": "shop.example.com"}),
        # The same name in another namespace, with a CA that would refuse the server:
        # a proxy in `default` is never sent it.
        secret("shop-ca-cacert", {"cacert": other_ca.path}, ns="elsewhere"),
    ]
    write_yaml(config_dir / "mesh.yaml", *docs)
    sidecar = ip()
    envoy("tls-sds", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: get(sidecar, PORT, "bank")[0] == 200, 15, what="bank over SDS mTLS")
    status, body = get(sidecar, PORT, "bank")
    assert status == 200 and body["client"] == "sds-client", body
    status, body = get(sidecar, PORT, "shop")
    assert status == 200 and body["client"] is None, (status, body)

    # A rotated CA Secret reaches Envoy over SDS alone: the server is no longer trusted.
    docs[-2] = secret("shop-ca-cacert", {"cacert": other_ca.path})
    write_yaml(config_dir / "mesh.yaml", *docs)
    wait_until(lambda: get(sidecar, PORT, "shop")[0] == 503, 15,
               what="shop refused once its CA Secret changed")
    assert get(sidecar, PORT, "bank")[0] == 200


def test_a_missing_credential_fails_closed_until_its_secret_appears(
        file_cp: ControlPlane, config_dir: Path, envoy: Any, ip: Any, ca: TestCa,
        tls_upstream: Callable[..., TlsUpstream], upstream: Any) -> None:
    """Never plaintext where TLS was asked for: with its Secret missing the cluster's TLS
    is not ready and nothing reaches the server, not even a handshake."""
    ips = {name: ip() for name in ("late", "plain")}
    late = tls_upstream(ips["late"], TARGET, ca.issue("late", dns=("late.example.com",)))
    upstream(ips["plain"], TARGET, "plain", "plain-1")
    docs = [doc for name, addr in ips.items() for doc in backend(name, addr)]
    docs.append(rule("late", {"mode": "SIMPLE", "credentialName": "late-ca",
                              "sni": "late.example.com"}))
    write_yaml(config_dir / "mesh.yaml", *docs)
    sidecar = ip()
    envoy("tls-missing-secret", file_cp.port, instance_ip=sidecar)
    wait_until(lambda: get(sidecar, PORT, "plain")[0] == 200, 30, what="listener served")
    status, body = get(sidecar, PORT, "late")
    assert status == 503, (status, body)
    assert late.requests == [] and late.failed_handshakes == 0
    write_yaml(config_dir / "mesh.yaml", *docs, secret("late-ca", {"ca.crt": ca.path}))
    wait_until(lambda: get(sidecar, PORT, "late")[0] == 200, 30,
               what="late served once its Secret exists")
    assert late.requests[-1]["sni"] == "late.example.com"
