"""The sandbox's certificate authority: a CA made per run and a server certificate for
127.0.0.1 it signs, so the demo service speaks TLS that verifies only against this CA.

Nothing here is trusted by the system: a client must be given ``ca.pem`` (``verify_tls``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# cryptography is imported by the functions that use it: a sandbox imports every
# component (runtime.COMPONENTS), and many start only some of them.
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the CA certificate, what a client verifies against
    cert: Path  # the server's certificate
    key: Path  # the server's private key (0600)

    @classmethod
    def under(cls, directory: Path) -> TlsFiles:
        """Where :func:`make_tls` writes them (known before they exist)."""
        return cls(directory / "ca.pem", directory / "server.pem", directory / "server.key")


def make_tls(directory: Path, *, expired: bool = False, days_left: float = 90,
             names: tuple[str, ...] = ("127.0.0.1", "localhost"),
             rsa_bits: int | None = None) -> TlsFiles:
    """Write a fresh CA and a server certificate for ``names`` (IP addresses and DNS names;
    by default ``127.0.0.1`` and ``localhost``) under ``directory``: an EC P-256 key, valid
    for ``days_left`` more days, as an ACME-renewed certificate is. ``expired``: its validity
    ended yesterday (the CA is still valid), as when a renewal job stopped running.
    ``rsa_bits``: an RSA key of that size instead (1024 for a weak one)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opsverify sandbox CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(65537, rsa_bits) if rsa_bits
        else ec.generate_private_key(ec.SECP256R1()))
    if expired:
        valid = (now - dt.timedelta(days=20), now - dt.timedelta(days=1))
    else:
        valid = (now - dt.timedelta(days=1), now + dt.timedelta(days=days_left))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0]).not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles.under(directory)
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.touch(mode=0o600)
    files.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return files


def _general_name(name: str) -> x509.GeneralName:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
