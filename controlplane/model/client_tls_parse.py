"""A DestinationRule's `tls` (Istio's ClientTLSSettings) checked as Istio checks it
(pkg/config/validation/agent ValidateTLS), plus the one refusal of our own: ISTIO_MUTUAL
needs certificates from the mesh's own CA, which this control plane does not issue yet,
and accepting it would send plaintext where the user asked for mutual TLS.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.model.destination_rule import ClientTls
from controlplane.model.errors import Errors
from controlplane.model.fields import (
    as_bool,
    as_list,
    as_map,
    as_str,
    reject_unknown_fields,
    type_name,
)

MODES = ("DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL")
_FIELDS = {"mode", "clientCertificate", "privateKey", "caCertificates", "credentialName",
           "subjectAltNames", "sni", "insecureSkipVerify", "caCrl"}
# credentialName forms served: `name` or `kubernetes://name` (a Secret in the proxy's
# namespace), and `ns/name` or `kubernetes://ns/name` (served only to proxies in `ns`,
# as Istio's SDS does for sidecars).
KUBERNETES_SCHEME = "kubernetes://"
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://")


def parse_client_tls(raw: Any, path: str, errs: Errors) -> ClientTls:
    tls = as_map(raw, path, errs)
    reject_unknown_fields(tls, _FIELDS, path, errs)
    mode = as_str(tls.get("mode"), f"{path}.mode", errs) or "DISABLE"
    if mode not in MODES:
        errs.add(f"{path}.mode", f"{mode!r} is not one of {', '.join(MODES)}")
    if mode == "ISTIO_MUTUAL":
        errs.add(f"{path}.mode", "ISTIO_MUTUAL needs workload certificates from the mesh's "
                 "own CA, which this control plane does not issue yet; use SIMPLE or "
                 "MUTUAL with your own certificates (files or credentialName)")
    files = {key: as_str(tls.get(key), f"{path}.{key}", errs)
             for key in ("clientCertificate", "privateKey", "caCertificates", "caCrl")}
    credential = as_str(tls.get("credentialName"), f"{path}.credentialName", errs)
    sans = []
    for i, san in enumerate(as_list(tls.get("subjectAltNames"), f"{path}.subjectAltNames",
                                    errs)):
        if not isinstance(san, str):
            errs.add(f"{path}.subjectAltNames[{i}]", f"must be a string, got {type_name(san)}")
        else:
            sans.append(san)
    skip = as_bool(tls.get("insecureSkipVerify"), f"{path}.insecureSkipVerify", errs)
    if credential and mode in ("SIMPLE", "MUTUAL"):
        _check_credential_name(credential, f"{path}.credentialName", errs)
    # Istio's rules, in its order.
    if skip and mode == "SIMPLE" and (files["caCertificates"] or credential
                                      or "subjectAltNames" in tls):
        errs.add(path, "caCertificates, credentialName and subjectAltNames cannot be set "
                 "with insecureSkipVerify")
    if skip and mode == "MUTUAL" and (files["caCertificates"] or "subjectAltNames" in tls):
        errs.add(path, "caCertificates and subjectAltNames cannot be set with "
                 "insecureSkipVerify")
    if mode in ("SIMPLE", "MUTUAL") and credential:
        given = [k for k in ("clientCertificate", "caCertificates", "privateKey", "caCrl")
                 if files[k]]
        if given:
            errs.add(path, f"{', '.join(given)} cannot be set with credentialName (the "
                     "Secret holds the certificates)")
    elif mode == "MUTUAL":
        for key in ("clientCertificate", "privateKey"):
            if not files[key]:
                errs.add(f"{path}.{key}", "is required for MUTUAL (or set credentialName)")
    return ClientTls(
        mode=mode if mode in MODES else "DISABLE",
        client_certificate=files["clientCertificate"], private_key=files["privateKey"],
        ca_certificates=files["caCertificates"], ca_crl=files["caCrl"],
        credential_name=credential, subject_alt_names=tuple(sans),
        sni=as_str(tls.get("sni"), f"{path}.sni", errs), insecure_skip_verify=skip)



def sds_name(credential_name: str) -> str:
    """The SDS resource name of a credentialName, as Istio names it."""
    if credential_name.startswith(KUBERNETES_SCHEME):
        return credential_name
    return KUBERNETES_SCHEME + credential_name


def _check_credential_name(name: str, path: str, errs: Errors) -> None:
    # Refused rather than ignored: ignoring it would send plaintext, or present no client
    # certificate, where the user asked for one.
    if _SCHEME.match(name) and not name.startswith(KUBERNETES_SCHEME):
        errs.add(path, f"{name!r}: only Kubernetes Secrets (name or kubernetes://name) are "
                 "served; ConfigMap, external SDS and gateway credentials are not")
        return
    parts = sds_name(name).removeprefix(KUBERNETES_SCHEME).split("/")
    if len(parts) > 2 or "" in parts:
        errs.add(path, f"{name!r} is not name, namespace/name or kubernetes://name")
