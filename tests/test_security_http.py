"""HTTP and TLS security checks against real servers on 127.0.0.1: the sandbox's demo service
(secure by default, then each of its security faults), TLS listeners with weak certificates,
and small HTTP servers answering what a misconfigured service would. Runs as a user runs it.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from opsverify.sandbox.demo_app import RateLimiter, TlsDemoApp, server_context
from opsverify.sandbox.tls import TlsFiles, make_tls
from opsverify.targets import tls
from opsverify.targets.http import HttpTarget
from tests.conftest import Project, sandbox_subset

CHECKS = ("checks/security/test_tls.py", "checks/security/test_http.py")
TLS_CHECKS = ("test_certificate_lifetime", "test_certificate_trusted",
              "test_certificate_hostname", "test_certificate_key",
              "test_certificate_signature", "test_tls_protocols")


def run(project: Project, name: str, data: dict[str, Any] | str,
        *args: str) -> dict[str, dict[str, Any]]:
    for check in CHECKS:
        project.copy_check(check)
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    result, checks = project.run_checks(name, text, *args)
    assert "Traceback" not in result.output, result.output
    return checks


def failing(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"] if m["verdict"] == "FAIL"}


def measured(check: dict[str, Any], name: str) -> Any:
    return next(m["value"] for m in check["evidence"] if m["name"] == name)


def red(checks: dict[str, dict[str, Any]]) -> set[str]:
    return {k for k, c in checks.items() if c["outcome"] in ("FAIL", "ERROR")}


# -- the sandbox: secure by default, and each fault turns exactly its checks red ------------
@pytest.fixture(scope="module")
def sandbox_env() -> dict[str, Any]:
    """environments/sandbox.yaml cut down to the demo service: its api and api-tls targets."""
    data = sandbox_subset({"app"})
    data["targets"] = {k: v for k, v in data["targets"].items() if k in ("api", "api-tls")}
    return data


def test_the_sandbox_demo_service_passes_every_security_check(
        project: Project, sandbox_env: dict[str, Any]) -> None:
    checks = run(project, "sandbox", sandbox_env, "-m", "security")
    assert red(checks) == set()
    passed = {k for k, c in checks.items() if c["outcome"] == "PASS"}
    assert {f"{name}[api-tls]" for name in TLS_CHECKS} <= passed
    for name in ("test_hsts", "test_content_type_options", "test_content_security_policy",
                 "test_frame_options", "test_referrer_policy", "test_session_cookies",
                 "test_cors", "test_auth_required"):
        assert f"{name}[api-tls]" in passed, name
    assert "test_rate_limit[api]" in passed
    # Plain http: the TLS checks and HSTS are not collected for it (it has no TLS), as any
    # check is not for a target that lacks what it checks.
    for name in (*TLS_CHECKS, "test_hsts"):
        assert f"{name}[api]" not in checks, name
    # The protocol scan offered each version alone; SSLv3 cannot even be offered here.
    scan = checks["test_tls_protocols[api-tls]"]
    assert measured(scan, "TLSv1.0 refused")
    assert measured(scan, "TLSv1.1 refused")
    assert measured(scan, "TLS 1.2+ accepted") == "TLSv1.2, TLSv1.3"
    assert measured(checks["test_certificate_lifetime[api-tls]"], "tls.days_left") > 80
    # The JSON root needs no CSP; the HTML page has one.
    assert measured(checks["test_content_security_policy[api]"], "HTML pages") == "/docs/"
    limited = checks["test_rate_limit[api]"]
    assert measured(limited, "GET /api/search statuses") == "200, 200, 200, 200, 200, 429"


FAULTS = {
    "tls-weak": ({"test_tls_protocols[api-tls]"},
                 {"obsolete versions accepted": "TLSv1.0, TLSv1.1"}),
    "headers-missing": ({"test_hsts[api-tls]", "test_content_type_options[api]",
                         "test_content_type_options[api-tls]",
                         "test_content_security_policy[api]",
                         "test_content_security_policy[api-tls]",
                         "test_frame_options[api]", "test_frame_options[api-tls]"},
                        {"GET /docs/ framing restricted": False}),
    "cors-wildcard": ({"test_cors[api]", "test_cors[api-tls]"},
                      {"GET / any origin granted with credentials": True}),
    "auth-bypass": ({"test_auth_required[api]", "test_auth_required[api-tls]"},
                    {"anonymous GET /api/admin/stats status": 200}),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_sandbox_fault_turns_exactly_its_checks_red(
        project: Project, sandbox_env: dict[str, Any], fault: str) -> None:
    data = dict(sandbox_env, targets=dict(sandbox_env["targets"]))
    # The same listener with its protocol and HSTS checks switched off: a SKIP saying where.
    data["targets"]["relaxed"] = dict(data["targets"]["api-tls"],
                                      security={"tls_protocols": False, "hsts": False})
    checks = run(project, "sandbox", data, "-m", "security", "--sandbox-fault", fault)
    expected, evidence = FAULTS[fault]
    # relaxed is api-tls again: red as api-tls is, but for what it opted out of.
    assert {k for k in red(checks) if not k.endswith("[relaxed]")} == expected
    found = {name: value for k in expected for name, value in failing(checks[k]).items()}
    for name, value in evidence.items():
        assert found[name] == value, found
    for opted in ("test_tls_protocols[relaxed]", "test_hsts[relaxed]"):
        assert checks[opted]["outcome"] == "SKIP"
        key = opted.split("_", 1)[1].split("[")[0]
        assert checks[opted]["message"].startswith(
            f"opted out: targets.relaxed.security.{key} is false (environments/sandbox.yaml:")


# -- certificates: real TLS listeners serving weak ones -------------------------------------
class Listener:
    """The demo service's TLS listener in this process, serving ``files``; ``weak`` also
    lets it load keys and signatures OpenSSL's default level refuses (and speak TLS 1.0)."""

    def __init__(self, files: TlsFiles, *, weak: bool = True) -> None:
        context = server_context(str(files.cert), str(files.key), weak=weak)
        self.server = TlsDemoApp(0, context, faults=set(), dependencies={},
                                 limiter=RateLimiter(5, 10))
        self.port: int = self.server.server_address[1]
        self.files = files
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def sha1_signed(directory: Path) -> TlsFiles:
    """A certificate signed with SHA-1, which cryptography no longer signs: openssl does."""
    directory.mkdir(parents=True)
    files = TlsFiles.under(directory)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha1",
                    "-days", "60", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1", "-keyout", str(files.key),
                    "-out", str(files.cert)], check=True, capture_output=True)
    files.ca.write_bytes(files.cert.read_bytes())
    return files


@pytest.fixture(scope="module")
def listeners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Listener]]:
    root = tmp_path_factory.mktemp("certs")
    made = {
        "good": Listener(make_tls(root / "good"), weak=False),
        "renew-soon": Listener(make_tls(root / "renew-soon", days_left=20)),
        "expiring": Listener(make_tls(root / "expiring", days_left=10)),
        "expired": Listener(make_tls(root / "expired", expired=True)),
        "weak-key": Listener(make_tls(root / "weak-key", rsa_bits=1024)),
        "wrong-host": Listener(make_tls(root / "wrong-host", names=("api.example.com",))),
        "sha1": Listener(sha1_signed(root / "sha1")),
    }
    yield made
    for listener in made.values():
        listener.close()


def test_certificates_judged_against_real_listeners(
        project: Project, listeners: dict[str, Listener]) -> None:
    targets: dict[str, Any] = {}
    for name, listener in listeners.items():
        # Weak and misnamed certificates are reached with verify_tls: false (requests would
        # refuse them before any check ran); this check is what judges them.
        verify = str(listener.files.ca) if name in ("good", "renew-soon", "expiring") else False
        targets[name] = {"type": "http", "url": listener.url, "verify_tls": verify,
                         "health": {"path": "/health"}}
    checks = run(project, "certs", {"settings": {"timeout_s": 3}, "targets": targets},
                 "-k", "test_certificate")

    def outcome(check: str, target: str) -> str:
        return str(checks[f"test_certificate_{check}[{target}]"]["outcome"])

    assert {outcome(c, "good") for c in ("lifetime", "trusted", "hostname", "key",
                                         "signature")} == {"PASS"}
    assert outcome("lifetime", "renew-soon") == "WARN"
    assert outcome("lifetime", "expiring") == "FAIL"
    assert 9 < failing(checks["test_certificate_lifetime[expiring]"])["tls.days_left"] < 11
    assert failing(checks["test_certificate_lifetime[expired]"])["tls.days_left"] < 0
    assert failing(checks["test_certificate_key[weak-key]"]) == {"tls.key_bits": 1024}
    assert outcome("key", "renew-soon") == "PASS"  # EC P-256
    assert failing(checks["test_certificate_hostname[wrong-host]"]) == {
        "certificate valid for 127.0.0.1": False}
    assert measured(checks["test_certificate_hostname[wrong-host]"],
                    "subjectAltName") == "api.example.com"
    assert outcome("signature", "sha1") == "WARN"
    assert measured(checks["test_certificate_signature[sha1]"], "signature hash") == "sha1"
    # verify_tls: false does not make a certificate trusted: the default trust judges it.
    untrusted = failing(checks["test_certificate_trusted[wrong-host]"])
    assert untrusted == {"chain verifies":
                         "certificate verify failed: unable to get local issuer certificate"}
    assert "verify_tls is false" in measured(checks["test_certificate_trusted[wrong-host]"],
                                             "verified against")
    # Dates are the lifetime check's: an expired certificate's chain is judged on its own.
    assert outcome("hostname", "expired") == "PASS"


def test_the_protocol_scan_offers_each_version_alone(listeners: dict[str, Listener]) -> None:
    def unavailable(cause: str) -> Exception:
        raise AssertionError(cause)

    weak = tls.scan_protocols("127.0.0.1", listeners["sha1"].port, timeout_s=3,
                              unavailable=unavailable)
    assert weak.accepted == ("TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
    good = tls.scan_protocols("127.0.0.1", listeners["good"].port, timeout_s=3,
                              unavailable=unavailable)
    assert good.accepted == ("TLSv1.2", "TLSv1.3")
    assert [v for v, _ in good.refused] == ["TLSv1.0", "TLSv1.1"]


def test_a_server_without_tls_1_2_is_found(tmp_path: Path) -> None:
    """No TLS 1.2+ at all: requests cannot reach it (the target's gate is an ERROR), and the
    scan that the protocol check judges finds only the obsolete versions."""
    import ssl
    import warnings

    files = make_tls(tmp_path / "old")
    context = server_context(str(files.cert), str(files.key), weak=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    server = TlsDemoApp(0, context, faults=set(), dependencies={},
                        limiter=RateLimiter(5, 10))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        scan = tls.scan_protocols("127.0.0.1", server.server_address[1], timeout_s=3,
                                  unavailable=AssertionError)
    finally:
        server.shutdown()
        server.server_close()
    assert scan.accepted == ("TLSv1.0", "TLSv1.1")
    assert not [v for v in scan.accepted if v not in tls.OBSOLETE]


# -- headers, cookies, CORS, auth, redirects: small real servers answering badly ------------
class Page(BaseHTTPRequestHandler):
    server: Site

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        status, headers, body = self.server.pages.get(path, (404, [], b"{}"))
        if path in self.server.protected:
            self.server.seen_authorization.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") is None:
                status = 401
        origin = self.headers.get("Origin")
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value.replace("{origin}", origin or ""))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pages: dict[str, tuple[int, list[tuple[str, str]], bytes]],
                 protected: tuple[str, ...] = ()) -> None:
        super().__init__(("127.0.0.1", 0), Page)
        self.pages, self.protected = pages, protected
        self.seen_authorization: list[str | None] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


JSON = [("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")]
HTML = b"<!doctype html><title>x</title>"


@pytest.fixture
def sites() -> Iterator[dict[str, Site]]:
    made = {
        # A careless web app: HTML without CSP or framing protection, a leaky referrer
        # policy, a session cookie scripts can read, any origin granted with credentials.
        "careless": Site({"/": (200, [
            ("Content-Type", "text/html"), ("Referrer-Policy", "no-referrer, unsafe-url"),
            ("Set-Cookie", "sessionid=abc123; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT"),
            ("Set-Cookie", "theme=dark; Path=/"),
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Credentials", "true")], HTML)}),
        # An HTML page whose CSP lets scripts run inline, and frames from anywhere.
        "loose-csp": Site({"/": (200, [
            ("Content-Type", "text/html; charset=utf-8"), ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy",
             "default-src 'self'; script-src 'self' 'unsafe-inline'; frame-ancestors *")],
            HTML)}),
        # A JSON API with no CSP, no X-Frame-Options: nothing to ask of it but nosniff.
        "json-api": Site({"/": (200, JSON, b'{"ok": true}'),
                          "/admin": (200, JSON, b'{"secret": 1}')}, protected=("/admin",)),
        # What nginx's `return 301 https://$host$request_uri;` answers.
        "redirector": Site({"/": (301, [("Location", "https://127.0.0.1/")], b"")}),
    }
    yield made
    for site in made.values():
        site.shutdown()
        site.server_close()


def test_header_checks_fail_for_the_right_reason(project: Project,
                                                 sites: dict[str, Site]) -> None:
    json_api = sites["json-api"].url.replace("http://", "http://ops:hunter2@")
    env = {"settings": {"timeout_s": 3}, "targets": {
        "careless": {"type": "http", "url": sites["careless"].url,
                     "security": {"cors_allowed_origins": ["https://app.example.com"]}},
        "loose-csp": {"type": "http", "url": sites["loose-csp"].url},
        # Credentials in the URL: the anonymous GET must not send them.
        "json-api": {"type": "http", "url": json_api,
                     "security": {"auth_required": ["/admin"]}},
        "json-api-unprotected": {"type": "http", "url": sites["json-api"].url,
                                 "security": {"auth_required": ["/"]}},
        "redirector": {"type": "http", "url": sites["redirector"].url,
                       "security": {"require_https": True}},
        "no-redirect": {"type": "http", "url": sites["json-api"].url,
                        "security": {"require_https": True,
                                     "rate_limit": {"path": "/", "burst": 4}}},
    }}
    checks = run(project, "web", env, "-m", "security")
    careless = "test_{}[careless]".format
    assert failing(checks[careless("referrer_policy")]) == {
        "GET / Referrer-Policy is unsafe-url": True}
    assert failing(checks[careless("session_cookies")]) == {
        "GET / cookie sessionid lacks": "Secure, HttpOnly"}
    assert measured(checks[careless("session_cookies")], "cookies set") == "sessionid, theme"
    assert failing(checks[careless("content_security_policy")]) == {
        "GET / Content-Security-Policy present": False}
    assert failing(checks[careless("frame_options")]) == {"GET / framing restricted": False}
    assert failing(checks[careless("content_type_options")]) == {
        "GET / X-Content-Type-Options": "<missing>"}
    assert failing(checks[careless("cors")]) == {
        "GET / any origin granted with credentials": True, "GET / foreign origin granted": True}
    assert failing(checks["test_content_security_policy[loose-csp]"]) == {
        "GET / CSP script sources too broad": "'unsafe-inline'"}
    assert failing(checks["test_frame_options[loose-csp]"]) == {"GET / framing restricted": False}
    # No false positive on a JSON API without CSP or X-Frame-Options.
    for name in ("content_security_policy", "frame_options", "content_type_options",
                 "referrer_policy", "session_cookies", "cors"):
        assert checks[f"test_{name}[json-api]"]["outcome"] == "PASS", name
    assert measured(checks["test_content_security_policy[json-api]"],
                    "HTML pages") == "none (no CSP needed)"
    # auth_required: refused anonymously although the target's URL carries credentials.
    assert checks["test_auth_required[json-api]"]["outcome"] == "PASS"
    assert sites["json-api"].seen_authorization == [None]
    assert failing(checks["test_auth_required[json-api-unprotected]"]) == {
        "anonymous GET / status": 200}
    assert "test_auth_required[careless]" not in checks  # it declares no such paths
    # require_https
    assert checks["test_require_https[redirector]"]["outcome"] == "PASS"
    assert failing(checks["test_require_https[no-redirect]"]) == {
        "plain http redirects": False, "redirect goes to scheme": "<none>"}
    # rate_limit: four GETs, none limited; it stops at the burst.
    assert failing(checks["test_rate_limit[no-redirect]"]) == {"429 within 4 GETs": False}
    assert measured(checks["test_rate_limit[no-redirect]"], "GET / statuses") == \
        "200, 200, 200, 200"
    assert "hunter2" not in str(checks)


def test_hsts_max_age_below_180_days_fails(project: Project, tmp_path: Path) -> None:
    files = make_tls(tmp_path / "tls")
    site = Site({"/": (200, [*JSON, ("Strict-Transport-Security", "max-age=86400")], b"{}"),
                 "/none": (200, JSON, b"{}")})
    site.socket = server_context(str(files.cert), str(files.key)).wrap_socket(
        site.socket, server_side=True)
    url = site.url.replace("http://", "https://")
    try:
        checks = run(project, "hsts", {"targets": {
            "short": {"type": "http", "url": url, "verify_tls": str(files.ca)},
            "partial": {"type": "http", "url": url, "verify_tls": str(files.ca),
                        "security": {"pages": ["/", "/none"]}}}}, "-k", "test_hsts")
    finally:
        site.shutdown()
        site.server_close()
    assert failing(checks["test_hsts[short]"]) == {"http.hsts_max_age_days": 1}
    assert failing(checks["test_hsts[partial]"]) == {"http.hsts_max_age_days": 1,
                                                     "GET /none sends HSTS": False}


def test_the_security_section_is_validated() -> None:
    base = {"type": "http", "url": "https://api.example.com"}
    spec = HttpTarget.model_validate({**base, "security": {
        "cors_allowed_origins": ["https://app.example.com/"], "hsts": False,
        "rate_limit": {"path": "/login", "burst": 20}}})
    assert spec.security.cors_allowed_origins == ["https://app.example.com"]
    assert spec.security.rate_limit is not None
    assert spec.security.rate_limit.expect_status == 429
    assert spec.security.pages == ["/"]
    assert spec.security.require_https is False
    for bad in ({"hstss": False}, {"cors_allowed_origins": ["app.example.com"]},
                {"auth_required": ["admin"]}, {"rate_limit": {"path": "/", "burst": 5000}}):
        with pytest.raises(ValidationError):
            HttpTarget.model_validate({**base, "security": bad})
