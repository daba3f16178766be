"""TLS handshakes for the security checks of ``https://`` targets: the certificate a server
presents (read with ``cryptography``) and which protocol versions it accepts.

Each protocol version is probed on its own (minimum = maximum version), as testssl.sh and
sslyze do. Old versions are offered with ``@SECLEVEL=0``: OpenSSL 3 otherwise refuses to
offer any cipher for TLS 1.0/1.1 itself, and the probe would "pass" without ever asking the
server. A version this OpenSSL cannot offer at all (SSLv3 is compiled out here) is reported
as not probed, never as refused. Every handshake has its own deadline; nothing is sent
after the handshake.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import certifi
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from urllib3.util.ssl_match_hostname import CertificateError, match_hostname

from opsverify.errors import TargetUnavailable
from opsverify.targets.base import DeadlinePassed, run_within

# The versions probed, oldest first, and those that must be refused (Mozilla's
# "intermediate" profile: TLS 1.2 and 1.3 only).
VERSIONS = (ssl.TLSVersion.SSLv3, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1,
            ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
OBSOLETE = frozenset({"SSLv3", "TLSv1.0", "TLSv1.1"})
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (not exposed by ssl.VerifyFlags): the trust check
# judges the chain alone; the certificate's dates are the lifetime check's.
NO_CHECK_TIME = 0x200000
# Errors raised by our own OpenSSL before the server had a say.
LOCAL_REASONS = frozenset({"NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE",
                           "UNSUPPORTED_PROTOCOL_VERSION"})

Unavailable = Callable[[str], TargetUnavailable]


def version_name(version: ssl.TLSVersion) -> str:
    return {"TLSv1": "TLSv1.0", "TLSv1_1": "TLSv1.1", "TLSv1_2": "TLSv1.2",
            "TLSv1_3": "TLSv1.3"}.get(version.name, version.name)


def _permissive(minimum: ssl.TLSVersion, maximum: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context that verifies nothing and offers every cipher of ``minimum`` to
    ``maximum``: it asks the server, and lets the server alone refuse."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = minimum
    context.maximum_version = maximum
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


# Made once, at import (on the main thread): setting an old version warns that it is
# deprecated, and warning filters are process-wide state no probe thread should touch.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    _VERSION_CONTEXTS = {version: _permissive(version, version) for version in VERSIONS}
    _READING_CONTEXT = _permissive(ssl.TLSVersion.MINIMUM_SUPPORTED,
                                   ssl.TLSVersion.MAXIMUM_SUPPORTED)


@dataclass(frozen=True)
class Certificate:
    """The server's leaf certificate, and whether it verifies."""

    subject: str
    issuer: str
    not_after: dt.datetime
    days_left: float
    key_type: str  # RSA, EC, DSA, Ed25519, Ed448
    key_bits: int
    signature_hash: str | None  # sha256, sha1…; None where the key type fixes it (Ed25519)
    names: tuple[str, ...]  # subjectAltName DNS names and IP addresses
    hostname: str  # the host of the target's URL
    hostname_matches: bool
    trusted: bool  # the chain verifies against trust_source (dates aside)
    trust_error: str  # OpenSSL's reason when it does not
    trust_source: str
    protocol: str  # what the reading handshake negotiated


@dataclass(frozen=True)
class ProtocolScan:
    """Which versions the server completed a handshake for."""

    accepted: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]  # (version, how the server refused it)
    not_probed: tuple[tuple[str, str], ...]  # (version, why this machine cannot offer it)


def read_certificate(host: str, port: int, *, verify_tls: bool | str, timeout_s: float,
                     unavailable: Unavailable) -> Certificate:
    """Two handshakes: one that accepts anything, to read the leaf certificate, and one
    that verifies its chain against the target's ``verify_tls`` (a CA bundle) or, where
    that is ``true`` or ``false``, the trust requests uses (certifi)."""
    outcome = _handshake(host, port, _READING_CONTEXT, timeout_s, unavailable)
    if not isinstance(outcome, _Done) or outcome.der is None:
        raise unavailable(f"TLS handshake failed: {outcome}")
    cert = x509.load_der_x509_certificate(outcome.der)
    cafile = verify_tls if isinstance(verify_tls, str) else certifi.where()
    source = f"verify_tls {verify_tls}" if isinstance(verify_tls, str) else (
        "the default trust (certifi)" + (", though verify_tls is false" if verify_tls is False
                                         else ""))
    trusting = ssl.create_default_context(cafile=cafile)
    trusting.check_hostname = False
    trusting.verify_flags |= NO_CHECK_TIME
    trusting.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED  # the protocol check's job
    trusting.set_ciphers("ALL:@SECLEVEL=0")  # key strength is the key check's job
    verified = _handshake(host, port, trusting, timeout_s, unavailable)
    key_type, key_bits = _key(cert)
    names = _names(cert)
    now = dt.datetime.now(dt.UTC)
    hash_algorithm = cert.signature_hash_algorithm
    return Certificate(
        subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        days_left=(cert.not_valid_after_utc - now).total_seconds() / 86400,
        key_type=key_type, key_bits=key_bits,
        signature_hash=hash_algorithm.name if hash_algorithm else None,
        names=names, hostname=host, hostname_matches=_matches(host, cert),
        trusted=isinstance(verified, _Done), trust_error="" if isinstance(verified, _Done)
        else str(verified), trust_source=source, protocol=outcome.version)


def scan_protocols(host: str, port: int, *, timeout_s: float,
                   unavailable: Unavailable) -> ProtocolScan:
    """One handshake per version, each offering that version alone."""
    accepted: list[str] = []
    refused: list[tuple[str, str]] = []
    not_probed: list[tuple[str, str]] = []
    for version in VERSIONS:
        name = version_name(version)
        outcome = _handshake(host, port, _VERSION_CONTEXTS[version], timeout_s, unavailable)
        if isinstance(outcome, _Done):
            accepted.append(name)
        elif outcome.local:
            not_probed.append((name, f"this machine's {ssl.OPENSSL_VERSION} cannot offer it "
                                     f"({outcome.reason})"))
        else:
            refused.append((name, outcome.reason))
    return ProtocolScan(tuple(accepted), tuple(refused), tuple(not_probed))


@dataclass(frozen=True)
class _Done:
    version: str
    der: bytes | None


@dataclass(frozen=True)
class _Refused:
    reason: str
    local: bool = False  # our side could not even offer what was asked

    def __str__(self) -> str:
        return self.reason


def _handshake(host: str, port: int, context: ssl.SSLContext, timeout_s: float,
               unavailable: Unavailable) -> _Done | _Refused:
    """Connect and complete one handshake within ``timeout_s`` (connect and every read,
    and the whole: a server that drips its handshake cannot hold the run)."""
    sockets: list[socket.socket] = []
    lock = threading.Lock()

    def shake() -> _Done | _Refused:
        try:
            raw = socket.create_connection((host, port), timeout=timeout_s)
        except TimeoutError:
            raise unavailable(f"connect timed out after {timeout_s:g} s") from None
        except OSError as exc:
            raise unavailable(f"cannot connect: {exc.strerror or type(exc).__name__}") from None
        with lock:
            sockets.append(raw)
        try:
            sni = None if _is_ip(host) else host
            with context.wrap_socket(raw, server_hostname=sni) as tls:
                return _Done(tls.version() or "", tls.getpeercert(binary_form=True))
        except ssl.SSLCertVerificationError as exc:
            return _Refused(f"certificate verify failed: {exc.verify_message}")
        except ssl.SSLError as exc:
            reason = exc.reason or type(exc).__name__
            return _Refused(str(reason).lower().replace("_", " "),
                            local=reason in LOCAL_REASONS)
        except TimeoutError:
            return _Refused(f"no handshake answer within {timeout_s:g} s")
        except OSError as exc:  # reset or closed by the server: a refusal
            return _Refused(exc.strerror or type(exc).__name__)
        finally:
            raw.close()

    try:
        return run_within(shake, timeout_s + 0.5, name="opsverify-tls-handshake")
    except DeadlinePassed:
        with lock:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        raise unavailable(f"TLS handshake not complete within {timeout_s:g} s") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _key(cert: x509.Certificate) -> tuple[str, int]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(key).__name__, 0


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return (*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)))


def _matches(host: str, cert: x509.Certificate) -> bool:
    """RFC 6125 matching as requests applies it (urllib3's): subjectAltName DNS names, a
    left-most wildcard allowed, and IP addresses exactly; the subject's CN is not consulted,
    as browsers no longer do."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    alt = (*(("DNS", n) for n in san.get_values_for_type(x509.DNSName)),
           *(("IP Address", str(ip)) for ip in san.get_values_for_type(x509.IPAddress)))
    try:
        match_hostname({"subjectAltName": alt}, host.strip("[]"))
    except (CertificateError, ValueError):
        return False
    return True
