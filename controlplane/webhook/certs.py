"""`controlplane webhook-certs`: a self-signed CA and a serving certificate for the
webhook, for clusters without cert-manager and for tests.

Writes DIR/ca.crt, DIR/tls.crt, DIR/tls.key (the names of a `kubernetes.io/tls` Secret's
keys, plus cert-manager's ca.crt), the serving certificate naming NAME.NS.svc (what the
API server checks when it calls a Service) and any extra names or IPs; prints the CA as
the base64 a ValidatingWebhookConfiguration's `caBundle` holds, and with
`--webhook-config FILE` writes DIR/validating-webhook.yaml: FILE with that caBundle in
every webhook.

Needs the `cryptography` package (`pip install 'controlplane[webhook]'`); `serve` does
not: it only reads the files, with the standard library's ssl.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Pair:
    ca: bytes  # PEM
    cert: bytes  # PEM, signed by ca
    key: bytes  # PEM (PKCS#8), the cert's key

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca).decode()


def service_names(service: str, namespace: str) -> list[str]:
    """What the API server dials for clientConfig.service (NAME.NS.svc), and the longer
    forms some clients use."""
    return [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def make_pair(names: list[str], days: int = 365) -> Pair:
    """A CA and a server certificate for `names` (DNS names or IP addresses; the first is
    the subject's common name), valid for `days`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common[:64])])

    now = datetime.datetime.now(datetime.UTC)
    not_after = now + days * _DAY
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"controlplane-webhook-ca {names[0]}")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - _DAY).not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, key_cert_sign=True, crl_sign=True,
              content_commitment=False, key_encipherment=False, data_encipherment=False,
              key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name(names[0])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return Pair(ca.public_bytes(pem), cert.public_bytes(pem), key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def write_pair(pair: Pair, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.crt").write_bytes(pair.ca)
    (out / "tls.crt").write_bytes(pair.cert)
    key = out / "tls.key"
    # The key is never readable by others, not even for a moment.
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pair.key)
    os.chmod(key, 0o600)


def with_ca_bundle(config: dict[str, Any], ca_bundle: str) -> dict[str, Any]:
    """A ValidatingWebhookConfiguration with `caBundle` set in every webhook."""
    if config.get("kind") != "ValidatingWebhookConfiguration":
        raise ValueError(f"not a ValidatingWebhookConfiguration: kind {config.get('kind')!r}")
    out = dict(config)
    out["webhooks"] = [{**hook, "clientConfig": {**hook.get("clientConfig", {}),
                                                 "caBundle": ca_bundle}}
                       for hook in config.get("webhooks") or []]
    return out


def run(service: str, namespace: str, out: Path, extra: list[str], days: int,
        webhook_config: Path | None) -> int:
    try:
        pair = make_pair([*service_names(service, namespace), *extra], days)
    except ImportError:
        raise SystemExit("controlplane webhook-certs needs the cryptography package: "
                         "pip install 'controlplane[webhook]'") from None
    write_pair(pair, out)
    if webhook_config is not None:
        config = with_ca_bundle(yaml.safe_load(webhook_config.read_text()), pair.ca_bundle)
        (out / "validating-webhook.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(pair.ca_bundle)
    return 0
