"""HTTP security, after Mozilla's HTTP Observatory: HSTS over https, ``nosniff``, a CSP and
framing protection on HTML pages (never asked of a JSON API), no ``unsafe-url`` referrer
policy, session cookies Secure and HttpOnly, CORS only for declared origins and never any
origin with credentials; and the runbooks' own: declared paths refuse anonymous GETs,
plain http redirects to https, and a declared rate limit answers 429 within its burst.

Every check applies to every http target and judges the pages its ``security.pages`` names
(``/`` unless declared); ``security: {hsts: false}`` (by check name) switches one off.
``auth_required``, ``require_https`` and ``rate_limit`` are declarations: a target that
declares none is a SKIP that says so. Cookie values are never read into evidence (they are
session tokens): only their names and flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.targets.http import REDIRECT_STATUSES
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.http import HttpClient, HttpResponse, HttpTarget, RateLimit

HSTS_DAYS = Threshold(crit=180, direction="min")  # Observatory: at least six months
# A stranger's origin: only ever sent as a header, never contacted.
FOREIGN_ORIGIN = "https://opsverify-foreign-origin.invalid"
HTML_TYPES = ("text/html", "application/xhtml+xml")
SESSION_NAMES = ("sess", "login", "auth", "token", "jwt")  # Observatory's, and tokens
REFERRER_POLICIES = frozenset({
    "no-referrer", "no-referrer-when-downgrade", "origin", "origin-when-cross-origin",
    "same-origin", "strict-origin", "strict-origin-when-cross-origin", "unsafe-url"})
BROAD_SOURCES = frozenset({"*", "http:", "https:", "data:", "'unsafe-inline'"})

# Every read here but the rate limit's is a GET of a declared path, prefetched in the probe
# pool; the header checks of a target share one GET per page.


@dataclass(frozen=True)
class CorsReading:
    """What the target answered a foreign Origin (per page) and each declared one."""

    foreign: tuple[HttpResponse, ...]
    declared: tuple[tuple[str, HttpResponse], ...]


@probe
def security_http_pages(http: HttpClient) -> tuple[HttpResponse, ...]:
    return tuple(http.get(page) for page in http.spec.security.pages)


@probe
def security_http_cors(http: HttpClient) -> CorsReading:
    pages = http.spec.security.pages
    foreign = tuple(http.get(page, headers={"Origin": FOREIGN_ORIGIN}) for page in pages)
    declared = tuple((origin, http.get(pages[0], headers={"Origin": origin}))
                     for origin in http.spec.security.cors_allowed_origins if origin != "*")
    return CorsReading(foreign, declared)


@probe
def security_http_anonymous(http: HttpClient, http_auth_required: tuple[str, ...],
                            ) -> tuple[HttpResponse, ...]:
    return tuple(http.get_anonymous(path) for path in http_auth_required)


@probe
def security_http_plain(http: HttpClient, http_require_https: bool) -> HttpResponse | None:
    twin = http.plain_twin()
    return http.get_url(twin, "/") if twin else None


@pytest.mark.monthly
@pytest.mark.security_check("hsts")
def test_hsts(http: HttpClient, http_tls: HttpTarget,
              security_http_pages: tuple[HttpResponse, ...], evidence: EvidenceLog) -> None:
    """Over https, every page sends Strict-Transport-Security with a max-age of at least
    180 days (``http.hsts_max_age_days``); collected for https targets only (browsers
    ignore HSTS over plain http: see ``security.require_https``)."""
    ages: list[float] = []
    for page in security_http_pages:
        value = page.header("Strict-Transport-Security")
        evidence.note(f"GET {page.url_path} Strict-Transport-Security", value or "<missing>")
        evidence.expect(f"GET {page.url_path} sends HSTS", value is not None, equals=True)
        age = _max_age(value)
        if value is not None:
            evidence.expect(f"GET {page.url_path} HSTS max-age parses", age is not None,
                            equals=True)
        if age is not None:
            ages.append(age / 86400)
    if ages:
        evidence.within("http.hsts_max_age_days", round(min(ages), 1), unit="days",
                        default=HSTS_DAYS)


@pytest.mark.monthly
@pytest.mark.security_check("content_type_options")
def test_content_type_options(security_http_pages: tuple[HttpResponse, ...],
                              evidence: EvidenceLog) -> None:
    """Every page with a body sends ``X-Content-Type-Options: nosniff``."""
    judged = [p for p in security_http_pages if p.body or p.content_type]
    evidence.note("pages with a body", len(judged))
    for page in judged:
        value = (page.header("X-Content-Type-Options") or "<missing>").strip().lower()
        evidence.expect(f"GET {page.url_path} X-Content-Type-Options", value, equals="nosniff")


@pytest.mark.monthly
@pytest.mark.security_check("content_security_policy")
def test_content_security_policy(security_http_pages: tuple[HttpResponse, ...],
                                 evidence: EvidenceLog) -> None:
    """Every HTML page sends a Content-Security-Policy whose scripts cannot come from
    anywhere or inline (a JSON API needs none)."""
    html = _html(security_http_pages)
    evidence.note("HTML pages", ", ".join(p.url_path for p in html) or "none (no CSP needed)")
    for page in html:
        policy = page.header("Content-Security-Policy")
        evidence.expect(f"GET {page.url_path} Content-Security-Policy present",
                        policy is not None, equals=True)
        if policy is None:
            continue
        directives = _csp(policy)
        scripts = directives.get("script-src", directives.get("default-src", {"*"}))
        nonce = any(s.startswith(("'nonce-", "'sha256-", "'sha384-", "'sha512-"))
                    for s in scripts)
        broad = sorted(s for s in scripts & BROAD_SOURCES
                       if not (nonce and s == "'unsafe-inline'"))
        evidence.expect(f"GET {page.url_path} CSP script sources too broad",
                        ", ".join(broad) or "none", equals="none")


@pytest.mark.monthly
@pytest.mark.security_check("frame_options")
def test_frame_options(security_http_pages: tuple[HttpResponse, ...],
                       evidence: EvidenceLog) -> None:
    """Every HTML page refuses to be framed by others: CSP ``frame-ancestors`` or
    ``X-Frame-Options: DENY|SAMEORIGIN`` (clickjacking)."""
    html = _html(security_http_pages)
    evidence.note("HTML pages", ", ".join(p.url_path for p in html) or "none (nothing to frame)")
    for page in html:
        ancestors = _csp(page.header("Content-Security-Policy") or "").get("frame-ancestors")
        xfo = (page.header("X-Frame-Options") or "").strip().lower()
        protected = (ancestors is not None and not ancestors & {"*", "http:", "https:"}) or \
            xfo in ("deny", "sameorigin")
        evidence.note(f"GET {page.url_path} X-Frame-Options", xfo or "<missing>")
        evidence.expect(f"GET {page.url_path} framing restricted", protected, equals=True)


@pytest.mark.monthly
@pytest.mark.security_check("referrer_policy")
def test_referrer_policy(security_http_pages: tuple[HttpResponse, ...],
                         evidence: EvidenceLog) -> None:
    """No page sets ``Referrer-Policy: unsafe-url`` (full URLs, queries included, sent to
    every site linked); none set is the browsers' safe default."""
    for page in security_http_pages:
        value = page.header("Referrer-Policy")
        # The last policy a browser knows is the one that applies.
        known = [t.strip() for t in (value or "").lower().split(",")
                 if t.strip() in REFERRER_POLICIES]
        policy = known[-1] if known else "<none: strict-origin-when-cross-origin>"
        evidence.note(f"GET {page.url_path} Referrer-Policy", policy)
        evidence.expect(f"GET {page.url_path} Referrer-Policy is unsafe-url",
                        policy == "unsafe-url", equals=False)


@pytest.mark.monthly
@pytest.mark.security_check("session_cookies")
def test_session_cookies(security_http_pages: tuple[HttpResponse, ...],
                         evidence: EvidenceLog) -> None:
    """Session cookies (named like ``session``, ``login``, ``auth``, ``token``) are set
    Secure and HttpOnly: never sent in clear, never readable by scripts."""
    cookies = [(page.url_path, *_cookie(header)) for page in security_http_pages
               for header in page.set_cookies]
    evidence.note("cookies set", ", ".join(sorted({c[1] for c in cookies})) or "none")
    for path, name, flags in cookies:
        if not any(word in name.lower() for word in SESSION_NAMES):
            continue
        missing = [f for f in ("Secure", "HttpOnly") if f.lower() not in flags]
        evidence.expect(f"GET {path} cookie {name} lacks", ", ".join(missing) or "nothing",
                        equals="nothing")


@pytest.mark.monthly
@pytest.mark.security_check("cors")
def test_cors(http: HttpClient, security_http_cors: CorsReading,
              evidence: EvidenceLog) -> None:
    """A foreign Origin is not granted access (never with credentials, never beyond
    ``security.cors_allowed_origins``), and each declared origin is."""
    allowed = http.spec.security.cors_allowed_origins
    where = evidence.source_of("targets", http.name, "security", "cors_allowed_origins")
    evidence.note("declared origins", ", ".join(allowed) or "none")
    for page in security_http_cors.foreign:
        granted = page.header("Access-Control-Allow-Origin")
        credentials = (page.header("Access-Control-Allow-Credentials") or "").lower() == "true"
        shown = "<none>" if granted is None else (
            "the foreign origin, reflected" if granted == FOREIGN_ORIGIN else granted)
        evidence.note(f"GET {page.url_path} Origin: {FOREIGN_ORIGIN} → "
                      "Access-Control-Allow-Origin", shown)
        evidence.expect(f"GET {page.url_path} any origin granted with credentials",
                        credentials and granted in (FOREIGN_ORIGIN, "*"), equals=False)
        if allowed and "*" not in allowed:
            evidence.expect(f"GET {page.url_path} foreign origin granted", granted is not None
                            and granted in (FOREIGN_ORIGIN, "*"), equals=False, source=where)
    for origin, page in security_http_cors.declared:
        granted = page.header("Access-Control-Allow-Origin")
        evidence.expect(f"GET {page.url_path} Origin: {origin} granted",
                        granted in (origin, "*"), equals=True, source=where)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_auth_required(http: HttpClient, security_http_anonymous: tuple[HttpResponse, ...],
                       evidence: EvidenceLog) -> None:
    """Every path of ``security.auth_required`` refuses an anonymous GET with 401 or 403
    (no credentials, no cookie); collected for targets that declare such paths."""
    where = evidence.source_of("targets", http.name, "security", "auth_required")
    for response in security_http_anonymous:
        # 401 or 403 (402 is a refusal too): anything else served a stranger or failed.
        evidence.expect(f"anonymous GET {response.url_path} status", response.status,
                        at_least=401, at_most=403, source=where)


@pytest.mark.monthly
def test_require_https(http: HttpClient, security_http_plain: HttpResponse | None,
                       evidence: EvidenceLog) -> None:
    """Where ``security.require_https`` is declared, plain http redirects to https."""
    if security_http_plain is None:
        pytest.skip(f"{http.name} is https on port {http.host_port()[1]}: no plain-http twin "
                    "to probe; declare the http:// address as a target of its own")
    where = evidence.source_of("targets", http.name, "security", "require_https")
    response = security_http_plain
    location = response.header("Location")
    evidence.note("plain-http status", response.status)
    evidence.expect("plain http redirects", response.status in REDIRECT_STATUSES, equals=True,
                    source=where)
    evidence.expect("redirect goes to scheme", urlsplit(location or "").scheme or "<none>",
                    equals="https", source=where)


@pytest.mark.monthly
def test_rate_limit(http: HttpClient, http_rate_limit: RateLimit, after_burst: None,
                    evidence: EvidenceLog) -> None:
    """Where ``security.rate_limit`` is declared, at most ``burst`` sequential GETs of its
    path (taken inline, after the prefetching burst) meet ``expect_status``; it stops at the
    first one."""
    limit = http_rate_limit
    where = evidence.source_of("targets", http.name, "security", "rate_limit")
    statuses = _until_limited(http, limit)
    evidence.note(f"GET {limit.path} statuses", ", ".join(map(str, statuses)))
    evidence.expect(f"{limit.expect_status} within {limit.burst} GETs",
                    limit.expect_status in statuses, equals=True, source=where)
    if limit.expect_status in statuses:
        evidence.note("limited at request", statuses.index(limit.expect_status) + 1)


def _until_limited(http: HttpClient, limit: RateLimit) -> list[int]:
    statuses: list[int] = []
    for _ in range(limit.burst):
        statuses.append(http.get(limit.path).status)
        if statuses[-1] == limit.expect_status:
            break
    return statuses


def _html(pages: tuple[HttpResponse, ...]) -> list[HttpResponse]:
    return [p for p in pages if p.content_type.split(";")[0].strip().lower() in HTML_TYPES]


def _max_age(value: str | None) -> int | None:
    for part in (value or "").split(";"):
        name, _, number = part.strip().partition("=")
        if name.lower() == "max-age":
            try:
                return int(number.strip().strip('"'))
            except ValueError:
                return None
    return None


def _csp(policy: str) -> dict[str, set[str]]:
    """``default-src 'self'; script-src x y`` -> {directive: {sources}}; the first of a
    repeated directive applies, as browsers do."""
    directives: dict[str, set[str]] = {}
    for entry in policy.split(";"):
        words = entry.split()
        if words and words[0].lower() not in directives:
            directives[words[0].lower()] = {w.lower() for w in words[1:]} or {"'none'"}
    return directives


def _cookie(header: str) -> tuple[str, set[str]]:
    """The name of a Set-Cookie header and its attribute names, lower-case (never its
    value: a session token)."""
    first, *attributes = header.split(";")
    name = first.split("=", 1)[0].strip()
    return name, {a.split("=", 1)[0].strip().lower() for a in attributes}
