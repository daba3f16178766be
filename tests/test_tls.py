"""TLS on http targets, against the demo service's real TLS listener and the sandbox's own CA:
``verify_tls`` with a CA bundle passes, the system trust store refuses the sandbox CA, an
expired certificate (``--sandbox-fault cert-expired``) is an ERROR that says so, and a
``REQUESTS_CA_BUNDLE`` in the environment cannot override what the target declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opsverify.sandbox.tls import make_tls
from tests.conftest import Project, Result

ENV = """
settings: {timeout_s: 3}
sandbox:
  app: {}
targets:
  verified:  # the sandbox CA, declared
    type: http
    url: ${SANDBOX_APP_TLS_URL}
    verify_tls: ${SANDBOX_CA_FILE}
    health: {path: /health, expect_json: {status: healthy}}
  system-trust:  # no verify_tls: the default trust, which knows nothing of the sandbox CA
    type: http
    url: ${SANDBOX_APP_TLS_URL}
    health: {path: /health}
  unverified:  # verify_tls: false, as for a known self-signed internal endpoint
    type: http
    url: ${SANDBOX_APP_TLS_URL}
    verify_tls: false
    health: {path: /health}
  missing-ca:
    type: http
    url: ${SANDBOX_APP_TLS_URL}
    verify_tls: /nonexistent/ca.pem
    health: {path: /health}
  not-a-ca:  # a file, but no certificate in it
    type: http
    url: ${SANDBOX_APP_TLS_URL}
    verify_tls: ${NOT_A_CA}
    health: {path: /health}
"""


def run(project: Project, tmp_path: Path, *args: str) -> tuple[Result, dict[str, Any]]:
    project.copy_check("checks/health/test_http.py")
    # A CA bundle of the machine's own, unrelated to the sandbox CA, as corporate images set.
    other = make_tls(tmp_path / "corporate")
    not_a_ca = tmp_path / "notes.pem"
    not_a_ca.write_text("renew the certificate before March\n")
    result, checks = project.run_checks("tls", ENV, *args, env={
        "REQUESTS_CA_BUNDLE": str(other.ca), "CURL_CA_BUNDLE": str(other.ca),
        "NOT_A_CA": str(not_a_ca)})
    return result, {c["target"]: c for c in checks.values()}


def test_verified_against_the_declared_ca_and_refused_without_it(
        project: Project, tmp_path: Path) -> None:
    result, checks = run(project, tmp_path)
    assert result.returncode == 1, result.output
    # The declared CA wins over REQUESTS_CA_BUNDLE (requests alone would let the variable win).
    assert checks["verified"]["outcome"] == "PASS", checks["verified"]
    assert checks["unverified"]["outcome"] == "PASS", checks["unverified"]
    refused = checks["system-trust"]
    assert refused["outcome"] == "ERROR"
    assert refused["message"].endswith(
        "TLS verification failed: certificate verify failed: unable to get local issuer "
        "certificate"), refused["message"]
    missing = checks["missing-ca"]
    assert missing["outcome"] == "ERROR"
    assert missing["message"].endswith(
        "verify_tls /nonexistent/ca.pem is not a readable CA bundle"), missing["message"]
    # The path came from the process environment, so it is masked like any such value.
    assert checks["not-a-ca"]["outcome"] == "ERROR"
    assert checks["not-a-ca"]["message"].endswith("holds no CA certificate"), \
        checks["not-a-ca"]["message"]
    assert "Traceback" not in result.output


def test_an_expired_certificate_is_an_error_that_says_so(project: Project,
                                                         tmp_path: Path) -> None:
    result, checks = run(project, tmp_path, "--sandbox-fault", "cert-expired")
    assert result.returncode == 1, result.output
    expired = checks["verified"]
    assert expired["outcome"] == "ERROR"
    assert expired["message"].startswith("verified (https://127.0.0.1:")
    assert expired["message"].endswith(
        "TLS verification failed: certificate verify failed: certificate has expired"), \
        expired["message"]
    # What still answers is the service itself: only verification broke.
    assert checks["unverified"]["outcome"] == "PASS", checks["unverified"]


def test_the_sandbox_certificate_is_for_127_0_0_1_and_signed_by_its_ca(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509

    files = make_tls(tmp_path / "tls")
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.not_valid_after_utc > dt.datetime.now(dt.UTC)
    assert files.key.stat().st_mode & 0o077 == 0  # the private key is the owner's alone
    expired = make_tls(tmp_path / "expired", expired=True)
    old = x509.load_pem_x509_certificate(expired.cert.read_bytes())
    assert old.not_valid_after_utc < dt.datetime.now(dt.UTC)
