"""DestinationRule `tls`: what Istio accepts is accepted, precedence (subset over port
over rule), the transport socket each mode becomes, and the SDS resources credentialName
Secrets become (per proxy namespace). Envoy's side is in
tests/test_upstream_tls.py (real handshakes) and tests/golden/upstream-tls (validated)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from controlplane.model.destination_rule import ClientTls, DestinationRule
from controlplane.model.errors import ValidationError
from controlplane.model.mesh import Mesh, build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.model.secret import Secret
from controlplane.model.service import Protocol, ServicePort
from controlplane.translate import proxy_secrets
from controlplane.translate.upstream_tls import auto_sni, transport_socket
from controlplane.translation import MeshTranslation
from controlplane.xds import types


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


# -- credentialName: SDS resources per proxy namespace ---------------------------------

def _secret(name: str, ns: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
            "stringData": data}


def _mesh(*docs: dict[str, Any]) -> Mesh:
    objs = [parse_object(d) for d in docs]
    return build_mesh({key_of(o): o for o in objs})


def _dr(tls: dict[str, Any], ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "r", "namespace": ns},
            "spec": {"host": "web.default.svc.cluster.local", "trafficPolicy": {"tls": tls}}}


def test_secret_keeps_only_the_certificate_keys_and_hides_them() -> None:
    s = parse_object(_secret("c", "default", **{"tls.crt": "C", "tls.key": "K",
                                                "password": "P"}))
    assert isinstance(s, Secret)
    assert dict(s.data) == {"tls.crt": b"C", "tls.key": b"K"}
    assert "K" not in repr(s).replace("Key", "")
    from controlplane.admin.http import _plain
    assert _plain(s)["data"] == ["tls.crt", "tls.key"]


def test_only_named_secrets_of_the_proxys_namespace_are_served() -> None:
    mesh = _mesh(
        _dr({"mode": "MUTUAL", "credentialName": "client"}),
        _secret("client", "default", **{"tls.crt": "C", "tls.key": "K", "ca.crt": "A"}),
        _secret("client", "team", **{"tls.crt": "C2", "tls.key": "K2"}),
        _secret("unnamed", "default", **{"tls.crt": "C", "tls.key": "K"}))
    default = {s.name: s for s in proxy_secrets(mesh, "default")}
    assert set(default) == {"kubernetes://client", "kubernetes://client-cacert"}
    assert default["kubernetes://client"].tls_certificate.private_key.inline_bytes == b"K"
    assert default["kubernetes://client-cacert"].validation_context.trusted_ca.inline_bytes \
        == b"A"
    # Another namespace's proxies get their own namespace's Secret of that name (no CA).
    assert [s.name for s in proxy_secrets(mesh, "team")] == ["kubernetes://client"]
    assert proxy_secrets(mesh, "nowhere") == []


def test_a_namespaced_credential_reaches_only_that_namespace() -> None:
    mesh = _mesh(_dr({"mode": "SIMPLE", "credentialName": "kubernetes://team/ca"}),
                 _secret("ca", "team", cacert="A"), _secret("ca", "default", cacert="B"))
    assert [s.name for s in proxy_secrets(mesh, "team")] == ["kubernetes://team/ca-cacert"]
    assert proxy_secrets(mesh, "default") == []


def test_the_cacert_secret_wins_over_the_credentials_own_ca() -> None:
    mesh = _mesh(_dr({"mode": "SIMPLE", "credentialName": "ca"}),
                 _secret("ca", "default", **{"ca.crt": "OWN"}),
                 _secret("ca-cacert", "default", cacert="SEPARATE", crl="R"))
    [ca] = proxy_secrets(mesh, "default")
    assert ca.validation_context.trusted_ca.inline_bytes == b"SEPARATE"
    assert ca.validation_context.crl.inline_bytes == b"R"


def test_credential_cluster_refers_to_sds_over_ads() -> None:
    ctx = context(ClientTls("MUTUAL", credential_name="c", subject_alt_names=("a",)))
    common = ctx.common_tls_context
    assert [c.name for c in common.tls_certificate_sds_secret_configs] == ["kubernetes://c"]
    assert common.tls_certificate_sds_secret_configs[0].sds_config.HasField("ads")
    combined = common.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == "kubernetes://c-cacert"
    assert len(combined.default_validation_context.match_typed_subject_alt_names) == 2
    assert not common.tls_certificates


def test_a_secret_change_rebuilds_the_sds_set_incrementally() -> None:
    dr, old = _dr({"mode": "SIMPLE", "credentialName": "ca"}), _secret("ca", "default",
                                                                        cacert="A")
    objs = {key_of(o): o for o in map(parse_object, [dr, old])}
    first = build_mesh(objs)
    new = parse_object(_secret("ca", "default", cacert="B"))
    objs[key_of(new)] = new
    second = build_mesh(objs, first, {key_of(new): objs[key_of(new)]})
    assert second.secrets_changed and not second.routes_changed
    translation = MeshTranslation(second, MeshTranslation(first))
    [ca] = translation.messages(types.SECRET, "default")
    assert ca.validation_context.trusted_ca.inline_bytes == b"B"
    unrelated = build_mesh(objs, second, {})
    assert not unrelated.secrets_changed and unrelated.secrets is second.secrets
