"""Kubernetes Secrets, reduced to what a DestinationRule's `credentialName` can use: the
certificate, key, CA and CRL under the keys Istio reads (`tls.crt`, `tls.key`, `ca.crt`,
`ca.crl`, or `cert`, `key`, `cacert`, `crl`). Every other key is dropped on parsing, so
the control plane holds no more key material than it serves, and the values never
appear in a repr or a log.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import as_map, as_str
from controlplane.model.meta import Meta, parse_meta

# The keys Istio's credentials controller reads (pilot/pkg/credentials/kube/secrets.go).
KEYS = frozenset({"tls.crt", "tls.key", "ca.crt", "ca.crl", "cert", "key", "cacert", "crl"})


@dataclass(frozen=True)
class Secret:
    meta: Meta
    type: str = ""
    # key -> value, only KEYS; never shown.
    data: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)

    def get(self, key: str) -> bytes:
        return dict(self.data).get(key, b"")

    def certificate(self) -> tuple[bytes, bytes] | None:
        """(certificate chain, private key), Istio's order: `cert`/`key` first, then
        `tls.crt`/`tls.key`; None when neither pair is there and non-empty."""
        for cert, key in (("cert", "key"), ("tls.crt", "tls.key")):
            if self.get(cert) and self.get(key):
                return self.get(cert), self.get(key)
        return None

    def ca(self) -> tuple[bytes, bytes] | None:
        """(CA certificates, CRL or b""): `cacert` (with `crl`) first, then `ca.crt`
        (with `ca.crl`)."""
        for ca, crl in (("cacert", "crl"), ("ca.crt", "ca.crl")):
            if self.get(ca):
                return self.get(ca), self.get(crl)
        return None


def parse_secret(raw: dict[str, Any], errs: Errors) -> Secret:
    meta = parse_meta(raw, errs)
    out: dict[str, bytes] = {}
    data = as_map(raw.get("data"), "data", errs)
    for key in sorted(KEYS & data.keys()):
        value = as_str(data[key], f"data.{key}", errs)
        try:
            out[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            errs.add(f"data.{key}", "is not valid base64")  # the value is never echoed
    # stringData is written over data, as the API server does on a write.
    string_data = as_map(raw.get("stringData"), "stringData", errs)
    for key in sorted(KEYS & string_data.keys()):
        out[key] = as_str(string_data[key], f"stringData.{key}", errs).encode()
    return Secret(meta=meta, type=as_str(raw.get("type"), "type", errs),
                  data=tuple(sorted(out.items())))
