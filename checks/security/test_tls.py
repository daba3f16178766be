"""TLS of https targets, after testssl.sh and sslyze's Mozilla "intermediate" profile: the
certificate is not about to expire, chains to a trusted CA, names the host, has a strong key
and a signature that is not SHA-1; the server refuses SSLv3, TLS 1.0 and 1.1 and speaks
TLS 1.2 or 1.3.

Every check applies to every ``https://`` http target (a plain-http one is a SKIP that says
so); ``security: {certificate_lifetime: false}`` (by check name) switches one off. The trust
check verifies against the target's ``verify_tls`` CA, or the default trust where that is
``true`` or ``false``: ``verify_tls: false`` makes the health checks tolerate a certificate,
not this check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.http import HttpClient, HttpTarget
    from opsverify.targets.tls import Certificate, ProtocolScan

DAYS_LEFT = Threshold(warn=30, crit=14, direction="min")
# NIST SP 800-57 / Mozilla: RSA and DSA 2048 bits, elliptic curves 256 bits.
KEY_BITS = {"RSA": 2048, "DSA": 2048, "EC": 256, "Ed25519": 256, "Ed448": 448}
WEAK_HASHES = frozenset({"md5", "md2"})  # forgeable: FAIL; SHA-1 is a WARN (tls.sha1_signatures)

# Two reads per https target, prefetched in the probe pool: the certificate (two
# handshakes: read it, then verify it) and one handshake per protocol version.


# ``http_tls``: collected only for https targets (a plain-http one has no TLS to check).


@probe
def security_http_tls_certificate(http: HttpClient, http_tls: HttpTarget) -> Certificate:
    return http.tls_certificate()


@probe
def security_http_tls_protocols(http: HttpClient, http_tls: HttpTarget) -> ProtocolScan:
    return http.tls_protocols()


@pytest.mark.daily
@pytest.mark.deploy_gate
@pytest.mark.security_check("certificate_lifetime")
def test_certificate_lifetime(http: HttpClient, security_http_tls_certificate: Certificate,
                              evidence: EvidenceLog) -> None:
    """The certificate is valid for long enough to be renewed in time (``tls.days_left``)."""
    cert = security_http_tls_certificate
    evidence.note("subject", cert.subject)
    evidence.note("not after", cert.not_after.isoformat())
    evidence.within("tls.days_left", round(cert.days_left, 1), unit="days", default=DAYS_LEFT)


@pytest.mark.daily
@pytest.mark.deploy_gate
@pytest.mark.security_check("certificate_trusted")
def test_certificate_trusted(http: HttpClient, security_http_tls_certificate: Certificate,
                             evidence: EvidenceLog) -> None:
    """The certificate chains to a trusted CA (its dates are the lifetime check's)."""
    cert = security_http_tls_certificate
    evidence.note("issuer", cert.issuer)
    evidence.note("verified against", cert.trust_source)
    evidence.expect("chain verifies", cert.trust_error or "yes", equals="yes")


@pytest.mark.daily
@pytest.mark.deploy_gate
@pytest.mark.security_check("certificate_hostname")
def test_certificate_hostname(http: HttpClient, security_http_tls_certificate: Certificate,
                              evidence: EvidenceLog) -> None:
    """The certificate names the host the target is reached at (subjectAltName)."""
    cert = security_http_tls_certificate
    evidence.note("subjectAltName", ", ".join(cert.names) or "<none>")
    evidence.expect(f"certificate valid for {cert.hostname}", cert.hostname_matches,
                    equals=True)


@pytest.mark.monthly
@pytest.mark.security_check("certificate_key")
def test_certificate_key(http: HttpClient, security_http_tls_certificate: Certificate,
                         evidence: EvidenceLog) -> None:
    """The certificate's key is at least 2048-bit RSA or 256-bit EC (``tls.key_bits``; an
    override applies to whatever key type the target has)."""
    cert = security_http_tls_certificate
    evidence.note("key type", cert.key_type)
    minimum = KEY_BITS.get(cert.key_type)
    if minimum is None:
        evidence.expect("key type is one of " + ", ".join(KEY_BITS), cert.key_type,
                        equals="RSA, EC, DSA or Ed25519/448")
        return
    evidence.within("tls.key_bits", cert.key_bits, unit="bits",
                    default=Threshold(crit=minimum, direction="min"),
                    default_source=f"check default for {cert.key_type}")


@pytest.mark.monthly
@pytest.mark.security_check("certificate_signature")
def test_certificate_signature(http: HttpClient,
                               security_http_tls_certificate: Certificate,
                               evidence: EvidenceLog) -> None:
    """The certificate is not signed with SHA-1 (WARN, ``tls.sha1_signatures``) or MD5
    (FAIL). Python reads only the leaf certificate, so the chain's others are not judged."""
    cert = security_http_tls_certificate
    evidence.note("signature hash", cert.signature_hash or f"fixed by {cert.key_type}")
    evidence.expect("signed with MD5", cert.signature_hash in WEAK_HASHES, equals=False)
    evidence.within("tls.sha1_signatures", int(cert.signature_hash == "sha1"), unit="certs",
                    default=Threshold(warn=0))


@pytest.mark.daily
@pytest.mark.deploy_gate
@pytest.mark.security_check("tls_protocols")
def test_tls_protocols(http: HttpClient, security_http_tls_protocols: ProtocolScan,
                       evidence: EvidenceLog) -> None:
    """SSLv3, TLS 1.0 and TLS 1.1 are refused, and TLS 1.2 or 1.3 is spoken (each version
    offered alone, old ones with every cipher OpenSSL still has)."""
    # Not at the top: cryptography is imported only by a run with https targets.
    from opsverify.targets.tls import OBSOLETE

    scan = security_http_tls_protocols
    for version, reason in scan.refused:
        evidence.note(f"{version} refused", reason)
    for version, why in scan.not_probed:
        evidence.note(f"{version} not probed", why)
    evidence.expect("obsolete versions accepted",
                    ", ".join(v for v in scan.accepted if v in OBSOLETE) or "none",
                    equals="none")
    modern = [v for v in scan.accepted if v not in OBSOLETE]
    evidence.note("TLS 1.2+ accepted", ", ".join(modern) or "none")
    evidence.expect("speaks TLS 1.2 or 1.3", bool(modern), equals=True)
