"""SDS: the Secrets a proxy's clusters name through `credentialName`, built for the
proxy's namespace as istiod's SDS builds them (pilot/pkg/xds/sds.go): the certificate and
key as `kubernetes://name`, the CA (and CRL) as `kubernetes://name-cacert`, taken from
the Secret `name-cacert` when there is one, else from `name` itself.

Only Secrets some DestinationRule names are served, and only to proxies in the Secret's
own namespace (Istio's rule for sidecars): `kubernetes://ns/name` reaches proxies in `ns`
alone. A name with no usable Secret is left out, and Envoy keeps the cluster's TLS
unready (no plaintext fallback) until it appears.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from controlplane.model.client_tls_parse import KUBERNETES_SCHEME, sds_name
from controlplane.model.destination_rule import ClientTls, TrafficPolicy
from controlplane.model.mesh import Mesh
from controlplane.model.secret import Secret

CA_SUFFIX = "-cacert"  # Istio's name for the CA half of a credential


def _policies(policy: TrafficPolicy | None) -> Iterator[ClientTls]:
    if policy is None:
        return
    if policy.tls is not None:
        yield policy.tls
    for level in policy.port_level:
        if level.tls is not None:
            yield level.tls


def credential_names(mesh: Mesh) -> set[str]:
    """The SDS names of every credentialName the rules in force originate TLS with."""
    out = set()
    for rule in mesh.destination_rules.values():
        for tls in [*_policies(rule.traffic_policy),
                    *(t for s in rule.subsets for t in _policies(s.traffic_policy))]:
            if tls.credential_name and tls.mode in ("SIMPLE", "MUTUAL"):
                out.add(sds_name(tls.credential_name))
    return out


def _resolve(name: str, namespace: str) -> tuple[str, str] | None:
    """(namespace, Secret name) of an SDS name for a proxy in `namespace`; None when it
    names another namespace's Secret, which this proxy may not have."""
    rest = name.removeprefix(KUBERNETES_SCHEME)
    ns, _, secret = rest.rpartition("/")
    if ns and ns != namespace:
        return None
    return namespace, secret


@functools.lru_cache(maxsize=4096)
def _certificate(name: str, secret: Secret) -> secret_pb2.Secret | None:
    pair = secret.certificate()
    if pair is None:
        return None
    return secret_pb2.Secret(name=name, tls_certificate=common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(inline_bytes=pair[0]),
        private_key=base_pb2.DataSource(inline_bytes=pair[1])))


@functools.lru_cache(maxsize=4096)
def _ca(name: str, secret: Secret) -> secret_pb2.Secret | None:
    ca = secret.ca()
    if ca is None:
        return None
    context = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=ca[0]))
    if ca[1]:
        context.crl.CopyFrom(base_pb2.DataSource(inline_bytes=ca[1]))
    return secret_pb2.Secret(name=name, validation_context=context)


def proxy_secrets(mesh: Mesh, namespace: str) -> list[secret_pb2.Secret]:
    """The SDS resources for proxies in `namespace`, by name. Memoized builders keep an
    unchanged Secret's message the same object, so the cache skips serializing it."""
    out = []
    for name in sorted(credential_names(mesh)):
        where = _resolve(name, namespace)
        if where is None:
            continue
        secret = mesh.secrets.get(where)
        if secret is not None and (cert := _certificate(name, secret)) is not None:
            out.append(cert)
        ca_secret = mesh.secrets.get((where[0], where[1] + CA_SUFFIX)) or secret
        if ca_secret is not None and (ca := _ca(name + CA_SUFFIX, ca_secret)) is not None:
            out.append(ca)
    return out
