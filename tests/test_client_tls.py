"""DestinationRule `tls`: what Istio accepts is accepted, precedence (subset over port
over rule), and the transport socket each mode becomes. Envoy's side is in
tests/test_upstream_tls.py (real handshakes) and tests/golden/upstream-tls (validated)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane.model.destination_rule import ClientTls, DestinationRule
from controlplane.model.errors import ValidationError
from controlplane.model.parse import parse_object
from controlplane.model.service import Protocol, ServicePort
from controlplane.translate.upstream_tls import auto_sni, transport_socket


def rule(spec: dict[str, Any]) -> DestinationRule:
    obj = parse_object({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                        "metadata": {"name": "r", "namespace": "default"},
                        "spec": {"host": "web", **spec}})
    assert isinstance(obj, DestinationRule)
    return obj


def test_tls_is_translated_not_warned_about() -> None:
    r = rule({"trafficPolicy": {"tls": {"mode": "SIMPLE", "sni": "web.example"}}})
    assert r.warnings == ()
    assert r.traffic_policy.tls == ClientTls(mode="SIMPLE", sni="web.example")


def test_mode_defaults_to_disable_as_in_istio() -> None:
    assert rule({"trafficPolicy": {"tls": {}}}).traffic_policy.tls == ClientTls("DISABLE")


@pytest.mark.parametrize("tls", [
    {"mode": "SIMPLE"},
    {"mode": "SIMPLE", "insecureSkipVerify": True},
    {"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem"},
    # MUTUAL with insecureSkipVerify needs no CA and may not set SANs.
    {"mode": "MUTUAL", "clientCertificate": "/c.pem", "privateKey": "/k.pem",
     "insecureSkipVerify": True},
    # DISABLE ignores the rest, as Istio does.
    {"mode": "DISABLE", "clientCertificate": "/c.pem", "credentialName": "c"},
])
def test_what_istio_accepts(tls: dict[str, Any]) -> None:
    assert rule({"trafficPolicy": {"tls": tls}}).traffic_policy.tls is not None


def test_precedence_subset_over_port_over_rule() -> None:
    r = rule({"trafficPolicy": {
        "tls": {"mode": "SIMPLE", "sni": "rule"},
        "portLevelSettings": [{"port": {"number": 443}, "tls": {"mode": "SIMPLE",
                                                                "sni": "port"}}]},
        "subsets": [{"name": "v1", "labels": {"v": "1"},
                     "trafficPolicy": {"tls": {"mode": "DISABLE"}}},
                    {"name": "v2", "labels": {"v": "2"},
                     "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]})
    assert r.policy("", 80).tls == ClientTls("SIMPLE", sni="rule")
    assert r.policy("", 443).tls == ClientTls("SIMPLE", sni="port")
    assert r.policy("v1", 443).tls == ClientTls("DISABLE")
    assert r.policy("v2", 443).tls == ClientTls("SIMPLE", sni="port")


def test_credential_name_with_files_is_rejected() -> None:
    with pytest.raises(ValidationError, match="caCertificates cannot be set with "
                                              "credentialName"):
        rule({"trafficPolicy": {"tls": {"mode": "SIMPLE", "credentialName": "c",
                                        "caCertificates": "/ca.pem"}}})


HTTP = ServicePort(name="http", port=443, target_port=443)


def context(tls: ClientTls, port: ServicePort = HTTP) -> tls_pb2.UpstreamTlsContext:
    socket = transport_socket(tls, port)
    assert socket is not None and socket.name == "envoy.transport_sockets.tls"
    out = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(out)
    return out


def test_disable_and_no_tls_are_plaintext() -> None:
    assert transport_socket(None, HTTP) is None
    assert transport_socket(ClientTls("DISABLE"), HTTP) is None
    assert auto_sni(ClientTls("DISABLE")) is None


def test_simple_verifies_against_system_roots_without_a_ca() -> None:
    ctx = context(ClientTls("SIMPLE"))
    assert ctx.common_tls_context.validation_context.HasField("system_root_certs")
    assert not ctx.common_tls_context.tls_certificates
    options = auto_sni(ClientTls("SIMPLE"))
    assert options is not None and options.auto_sni and options.auto_san_validation


def test_sans_match_every_type_the_name_can_be() -> None:
    ctx = context(ClientTls("SIMPLE", ca_certificates="/ca.pem", sni="x",
                            subject_alt_names=("10.0.0.1", "a@b.c")))
    matchers = ctx.common_tls_context.validation_context.match_typed_subject_alt_names
    assert {(m.san_type, m.matcher.exact) for m in matchers} == {
        (1, "a@b.c"), (2, "a@b.c"), (3, "a@b.c"),  # EMAIL, DNS, URI
        (2, "10.0.0.1"), (3, "10.0.0.1"), (4, "10.0.0.1")}  # DNS, URI, IP_ADDRESS
    assert ctx.sni == "x" and auto_sni(ClientTls("SIMPLE", sni="x")) is None


def test_skip_verify_has_no_validation_and_no_auto_san() -> None:
    ctx = context(ClientTls("SIMPLE", insecure_skip_verify=True))
    assert not ctx.common_tls_context.HasField("validation_context")
    options = auto_sni(ClientTls("SIMPLE", insecure_skip_verify=True))
    assert options is not None and options.auto_sni and not options.auto_san_validation


def test_h2_is_offered_only_to_http2_ports() -> None:
    grpc = ServicePort(name="grpc", port=9090, target_port=9090)
    assert grpc.l7 is Protocol.HTTP2 and HTTP.l7 is Protocol.HTTP
    assert list(context(ClientTls("SIMPLE"), grpc).common_tls_context.alpn_protocols) == ["h2"]
    assert not context(ClientTls("SIMPLE")).common_tls_context.alpn_protocols
