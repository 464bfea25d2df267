"""A DestinationRule's client TLS as the cluster's transport socket, built as istiod
builds it (pilot/pkg/networking/core/cluster_tls.go): TLS 1.2 to 1.3, `h2` offered only
to HTTP/2 ports, the SNI as given, SANs matched exactly, and with no `sni` the HTTP
upstream options `auto_sni` (from the request's host) and `auto_san_validation` (when no
SANs are given and the peer is verified).

Certificates come from files on the proxy's host, read by Envoy, or from a Kubernetes
Secret (`credentialName`) sent over SDS on the proxy's ADS stream (`kubernetes://name` for
the certificate and key, `kubernetes://name-cacert` for the CA, as Istio names them;
secrets.py builds them). Without `caCertificates` the peer is checked against the host's
system roots, as the istio-agent's default ("system") does.
"""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from controlplane.model.client_tls_parse import sds_name
from controlplane.model.destination_rule import ClientTls
from controlplane.model.service import Protocol, ServicePort
from controlplane.translate.protos import ads_source, duration
from controlplane.translate.secrets import CA_SUFFIX

TLS_SOCKET = "envoy.transport_sockets.tls"
_SAN = common_pb2.SubjectAltNameMatcher


def originates_tls(tls: ClientTls | None) -> bool:
    return tls is not None and tls.mode in ("SIMPLE", "MUTUAL")


def _file(path: str) -> base_pb2.DataSource:
    return base_pb2.DataSource(filename=path)


# How long a cluster waits for its credential Secret before it is used without one
# (failing closed: no handshake, 503). Envoy's default, 15 s, would hold a new sidecar's
# start-up that long wherever a rule names a Secret its namespace lacks.
SECRET_FETCH_TIMEOUT = 1.0


def _sds(name: str) -> secret_pb2.SdsSecretConfig:
    source = ads_source()
    source.initial_fetch_timeout.CopyFrom(duration(SECRET_FETCH_TIMEOUT))
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def san_matchers(names: tuple[str, ...]) -> list[common_pb2.SubjectAltNameMatcher]:
    """Each name matched exactly against the SAN types it can be: istiod's (untyped)
    matchers compare a name with every DNS, URI, email and IP SAN of the certificate."""
    out: list[common_pb2.SubjectAltNameMatcher] = []
    for name in names:
        exact = string_pb2.StringMatcher(exact=name)
        kinds = [_SAN.DNS, _SAN.URI]
        if "@" in name:
            kinds.append(_SAN.EMAIL)
        try:
            ipaddress.ip_address(name)
            kinds.append(_SAN.IP_ADDRESS)
        except ValueError:
            pass
        out.extend(_SAN(san_type=kind, matcher=exact) for kind in kinds)
    return out


def _validation(tls: ClientTls) -> common_pb2.CertificateValidationContext:
    context = common_pb2.CertificateValidationContext(
        match_typed_subject_alt_names=san_matchers(tls.subject_alt_names))
    if tls.ca_certificates:
        context.trusted_ca.CopyFrom(_file(tls.ca_certificates))
    else:
        context.system_root_certs.SetInParent()
    if tls.ca_crl:
        context.crl.CopyFrom(_file(tls.ca_crl))
    return context


def upstream_tls_context(tls: ClientTls, port: ServicePort) -> tls_pb2.UpstreamTlsContext:
    common = tls_pb2.CommonTlsContext(tls_params=common_pb2.TlsParameters(
        tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
        tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3))
    if port.l7 is Protocol.HTTP2:
        common.alpn_protocols.append("h2")
    if tls.credential_name:
        secret = sds_name(tls.credential_name)
        if tls.mode == "MUTUAL":
            common.tls_certificate_sds_secret_configs.append(_sds(secret))
        if not tls.insecure_skip_verify:
            combined = common.combined_validation_context
            combined.default_validation_context.match_typed_subject_alt_names.extend(
                san_matchers(tls.subject_alt_names))
            combined.validation_context_sds_secret_config.CopyFrom(_sds(secret + CA_SUFFIX))
    else:
        if tls.mode == "MUTUAL":
            common.tls_certificates.append(common_pb2.TlsCertificate(
                certificate_chain=_file(tls.client_certificate),
                private_key=_file(tls.private_key)))
        if not tls.insecure_skip_verify:
            common.validation_context.CopyFrom(_validation(tls))
    return tls_pb2.UpstreamTlsContext(common_tls_context=common, sni=tls.sni)


def transport_socket(tls: ClientTls | None, port: ServicePort
                     ) -> base_pb2.TransportSocket | None:
    """None for no TLS (no `tls`, or DISABLE): Envoy's default, plaintext."""
    if tls is None or not originates_tls(tls):
        return None
    socket = base_pb2.TransportSocket(name=TLS_SOCKET)
    socket.typed_config.Pack(upstream_tls_context(tls, port))
    return socket


def auto_sni(tls: ClientTls | None) -> protocol_pb2.UpstreamHttpProtocolOptions | None:
    """istiod's setAutoSniAndAutoSanValidation for a cluster that is not a dynamic
    forward proxy: with no `sni`, the SNI is the request's host, and with no SANs either
    the peer's certificate must name that host."""
    if tls is None or not originates_tls(tls) or tls.sni:
        return None
    return protocol_pb2.UpstreamHttpProtocolOptions(
        auto_sni=True,
        auto_san_validation=not tls.subject_alt_names and not tls.insecure_skip_verify)
