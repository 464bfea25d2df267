"""A test CA and the certificates it signs, written as PEM files (the `cryptography`
package): for TLS upstreams on loopback and the client certificates Envoy presents.
Generated per test run, so no private key of any use lives in the repository (the
golden case's files are a throwaway CA made by `python -m tests.tls_certs DIR`)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path

    @property
    def der(self) -> bytes:
        """The certificate as a TLS peer presents it (`getpeercert(binary_form=True)`)."""
        return ssl.PEM_cert_to_DER_cert(self.cert.read_text())


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestCa:
    """A self-signed CA in `directory` (ca.pem); `issue` signs leaf certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "test-ca", years: int = 1) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.not_after = now + years * 365 * _DAY
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY).not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False),
                critical=True)
            .sign(self.key, hashes.SHA256()))
        self.path = directory / f"{name}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, dns: tuple[str, ...] = (), uris: tuple[str, ...] = (),
              ips: tuple[str, ...] = (), client: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (
            x509.CertificateBuilder().subject_name(_name(name))
            .issuer_name(self.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY).not_valid_after(self.not_after)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client
                 else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_key_pem(key))
        return issued

    def crl(self, name: str = "ca.crl") -> Path:
        """An empty revocation list, signed by the CA."""
        now = datetime.datetime.now(datetime.UTC)
        crl = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
               .last_update(now - _DAY).next_update(self.not_after)
               .sign(self.key, hashes.SHA256()))
        path = self.directory / name
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path


if __name__ == "__main__":  # the golden case's throwaway files
    ca = TestCa(Path(sys.argv[1]), "ca", years=100)
    ca.issue("client", client=True)
    ca.crl()
