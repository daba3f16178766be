"""HTTP targets: the schema of an ``http`` section and a GET/HEAD/OPTIONS-only client; and,
for a remediation only, a client that may also POST to the paths the section declares."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import urljoin, urlsplit

import requests
from pydantic import Field, field_validator, model_validator

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.remediation.http import HttpRemediation
from opsverify.targets import http_wire
from opsverify.targets.base import (
    DeclaredCheck,
    Section,
    TargetSpec,
)
from opsverify.targets.http_session import (
    NoCredentials,
    PostOnlySession,
    ReadOnlySession,
    anonymous_session,
    environment_proxies,
    get_within,
    pinned,
    reason,
    tls_verify,
)
from opsverify.targets.http_wire import Fetched

if TYPE_CHECKING:
    from opsverify.targets import tls

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class HealthProbe(Section):
    """One health endpoint and what its answer must look like."""

    path: str = "/health"
    expect_status: int = 200
    # Dotted JSON paths to expected values; ``*`` matches every key or item at that level:
    # {status: healthy, "components.*.status": healthy}
    expect_json: dict[str, Any] = Field(default_factory=dict)
    # One request's response time, judged as threshold http.response_ms (this is its default).
    max_ms: float | None = Field(default=None, gt=0)


class RedirectProbe(Section):
    """``{path: /docs, to: /docs/, status: 301}``: ``path`` must redirect to ``to``."""

    path: str
    to: str  # a path on the same target, or an absolute URL
    status: int | None = None  # any of 301, 302, 303, 307, 308 when left out

    @field_validator("status")
    @classmethod
    def _redirect_status(cls, value: int | None) -> int | None:
        if value is not None and value not in REDIRECT_STATUSES:
            choices = ", ".join(map(str, sorted(REDIRECT_STATUSES)))
            raise ValueError(f"expected a redirect status: {choices}")
        return value


class HttpCheck(DeclaredCheck):
    """A runbook's ``curl`` with what its answer must contain; markers from the declaration."""

    path: str = "/"
    expect_status: int = 200
    expect_json: dict[str, Any] = Field(default_factory=dict)  # as in health probes
    expect_body_contains: list[str] = Field(default_factory=list)
    # Header name (any case) -> expected value; ``*`` and ``?`` are wildcards.
    expect_header: dict[str, str] = Field(default_factory=dict)
    max_ms: float | None = Field(default=None, gt=0)

    @field_validator("expect_body_contains", mode="before")
    @classmethod
    def _one_string_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class LatencyProbe(Section):
    """Sample a path N times and judge the p95 against ``http.latency_p95_ms``."""

    path: str = "/health"
    samples: int = Field(default=10, ge=1, le=1000)


class RateLimit(Section):
    """``{path: /api/search, burst: 10, expect_status: 429}``: at most ``burst`` sequential
    GETs of ``path``, and ``expect_status`` must answer one of them (ERPFTS's "rate limiting
    on"). Opt-in: a limit only the target's owner knows."""

    path: str = Field(pattern=r"^/")
    burst: int = Field(ge=2, le=100)  # bounded: a check must never become a load test
    expect_status: int = Field(default=429, ge=400, le=599)


class HttpSecurity(Section):
    """A target's ``security:`` section. Every check applies by default (``<check>: false``
    opts out of one, shown as a SKIP that says where); the lists say what only the
    environment file can know."""

    certificate_lifetime: bool = True
    certificate_trusted: bool = True
    certificate_hostname: bool = True
    certificate_key: bool = True
    certificate_signature: bool = True
    tls_protocols: bool = True
    hsts: bool = True
    content_type_options: bool = True
    content_security_policy: bool = True
    frame_options: bool = True
    referrer_policy: bool = True
    session_cookies: bool = True
    cors: bool = True
    # The pages whose response headers and cookies are judged (GET each once).
    pages: list[str] = Field(default_factory=lambda: ["/"])
    # Paths an anonymous GET must be refused on: 401 or 403.
    auth_required: list[str] = Field(default_factory=list)
    # Origins allowed to read cross-origin; any other Origin must not be reflected.
    cors_allowed_origins: list[str] = Field(default_factory=list)
    # A plain-http address must redirect to https (on an https target: its http:// twin
    # on port 80, when the target uses port 443).
    require_https: bool = False
    rate_limit: RateLimit | None = None

    @field_validator("pages", "auth_required")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if not p.startswith("/")]
        if bad:
            raise ValueError(f"expected paths starting with /: {', '.join(bad)}")
        return value

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if origin != "*" and (parts.scheme not in ("http", "https") or not parts.hostname
                                  or parts.path not in ("", "/") or parts.query):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port]) or *")
        return [o.rstrip("/") for o in value]


class HttpTarget(TargetSpec):
    type: Literal["http"]
    url: str
    verify_tls: bool | str = True  # True, False, or a CA bundle path
    health: list[HealthProbe] = Field(default_factory=list)
    latency: LatencyProbe | None = None
    redirects: list[RedirectProbe] = Field(default_factory=list)
    http_checks: list[HttpCheck] = Field(default_factory=list)
    security: HttpSecurity = Field(default_factory=HttpSecurity)
    # Fixes checks/remediation/ may apply here (each also needs -m destructive and
    # --allow-destructive naming the environment).
    remediation: HttpRemediation = Field(default_factory=HttpRemediation)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @model_validator(mode="after")
    def _clear_cache_is_judged(self) -> HttpTarget:
        if self.remediation.clear_cache is not None and not self.health:
            raise ValueError("remediation.clear_cache needs a declared health GET (health:): "
                             "it says whether the cache needs clearing and whether that worked")
        return self

    @field_validator("health", "redirects", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    @field_validator("http_checks")
    @classmethod
    def _unique_names(cls, value: list[HttpCheck]) -> list[HttpCheck]:
        names = [check.name for check in value]
        doubles = sorted({n for n in names if names.count(n) > 1})
        if doubles:
            raise ValueError(f"http_checks names must be unique: {', '.join(doubles)}")
        return value

    def address(self) -> str:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.scheme}://{parts.hostname}:{port}"


@dataclass(frozen=True)
class HttpResponse:
    url_path: str
    status: int
    elapsed_ms: float
    body: bytes
    content_type: str
    # Lower-case header names; several values of one header are joined with ", ".
    headers: Mapping[str, str] = field(default_factory=dict)
    # Each Set-Cookie header on its own (joined, their Expires dates would split them).
    set_cookies: tuple[str, ...] = ()

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def http_url(value: str) -> str:
    """The validator of every ``url`` that opsverify reads over HTTP."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    return value


class HttpClient:
    """Reads one HTTP target under a whole-request deadline (connect + headers + body)."""

    def __init__(self, name: str, spec: HttpTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        # The session is made on first use (a run builds every client before its probes
        # start: 60 ms of a 1,000-target run's were sessions); in the probe process that is
        # the first GET.
        self._session: ReadOnlySession | None = None
        self._session_lock = threading.Lock()
        self._lock = threading.Lock()
        self._anonymous: requests.Session | None = None
        # The target's own GETs go on the wire unless a proxy carries them (requests does).
        proxied = requests.utils.select_proxy(spec.url, environment_proxies(spec.url))
        self._wire = None if proxied else http_wire.Wire(spec.url, tls_verify(spec.verify_tls))
        self._authorization: str | None = None

    @property
    def session(self) -> ReadOnlySession:
        """The read-only requests session: proxies, ``~/.netrc``, headers and cookies."""
        with self._session_lock:
            if self._session is None:
                session = pinned(ReadOnlySession(), self.spec.url, self.spec.verify_tls)
                netrc = session.auth if isinstance(session.auth, tuple) else None
                credentials = netrc or http_wire.url_credentials(self.spec.url)
                self._authorization = http_wire.basic_auth(*credentials) if credentials \
                    else None
                self._session = session
            return self._session

    def url_for(self, path: str) -> str:
        """``path`` under the target's URL (``https://host/api`` + ``/health``)."""
        return urljoin(self.spec.url.rstrip("/") + "/", path.lstrip("/"))

    def get(self, path: str, *, headers: Mapping[str, str] | None = None) -> HttpResponse:
        """GET ``path`` without following redirects; an unreachable or slow target raises
        :class:`TargetUnavailable`."""
        return self._get(self.session, self.url_for(path), path, headers)

    def get_anonymous(self, path: str) -> HttpResponse:
        """GET ``path`` as a stranger would: no credentials from the URL or ``~/.netrc``, and
        no cookie this client was ever given."""
        with self._lock:
            if self._anonymous is None:
                self._anonymous = anonymous_session(self.session)
        parts = urlsplit(self.url_for(path))
        bare = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
        return self._get(self._anonymous, bare, path, None, auth=NoCredentials())

    def plain_twin(self) -> str | None:
        """The ``http://`` address of an https target on port 443 (port 80, same host and
        path); None on any other port, where no twin can be derived."""
        parts = urlsplit(self.spec.url)
        if parts.scheme != "https":
            return self.spec.url
        if parts.port not in (None, 443):
            return None
        host = parts.hostname or ""
        shown = f"[{host}]" if ":" in host else host
        return parts._replace(scheme="http", netloc=shown).geturl()

    def get_url(self, url: str, path: str) -> HttpResponse:
        """GET an absolute ``url`` of this target (its http:// twin), shown as ``path``."""
        return self._get(self.session, url, path, None)

    @property
    def is_https(self) -> bool:
        return urlsplit(self.spec.url).scheme == "https"

    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.spec.url)
        return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)

    def tls_certificate(self) -> tls.Certificate:
        """The certificate an https target presents, and whether it verifies."""
        from opsverify.targets import tls  # cryptography: only for the TLS checks

        host, port = self.host_port()
        return tls.read_certificate(host, port, verify_tls=self.spec.verify_tls,
                                    timeout_s=self.timeout_s, unavailable=self._unavailable)

    def tls_protocols(self) -> tls.ProtocolScan:
        """Which of SSLv3 to TLS 1.3 an https target completes a handshake for."""
        from opsverify.targets import tls

        host, port = self.host_port()
        return tls.scan_protocols(host, port, timeout_s=self.timeout_s,
                                  unavailable=self._unavailable)

    def _get(self, session: requests.Session, url: str, path: str,
             headers: Mapping[str, str] | None, auth: Any = None) -> HttpResponse:
        if session is self.session and self._wire is not None and auth is None and \
                _origin(url) == _origin(self.spec.url):
            fetched = self._wire_get(self._wire, url, headers)
        else:
            fetched = get_within(session, url, timeout_s=self.timeout_s,
                                 verify_tls=self.spec.verify_tls,
                                 unavailable=self._unavailable, headers=headers, auth=auth)
        return HttpResponse(path, fetched.status, fetched.elapsed_ms, fetched.body,
                            fetched.headers.get("content-type", ""), fetched.headers,
                            fetched.set_cookies)

    def _wire_get(self, wire: http_wire.Wire, url: str,
                  headers: Mapping[str, str] | None) -> Fetched:
        """A GET as requests would send it (the session's headers, then the call's, then
        the credentials), on the wire."""
        session = self.session  # made first: it reads the credentials
        sent = requests.structures.CaseInsensitiveDict(session.headers)
        sent.update(headers or {})
        sent["Accept-Encoding"] = http_wire.ACCEPT_ENCODING
        if self._authorization:
            sent["Authorization"] = self._authorization
        parts = urlsplit(url)
        target = requests.utils.requote_uri(
            (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        try:
            return wire.get(target, cast(Mapping[str, str], sent), timeout_s=self.timeout_s,
                            cookies=session.cookies, url=url)
        except Exception as exc:
            said = http_wire.cause(exc, self.timeout_s, self.spec.verify_tls, reason)
            if said is None:
                raise
            raise self._unavailable(said) from None

    def redirect_target(self, path: str, location: str | None) -> str | None:
        """Where a ``Location`` answered for ``path`` points, shown as a path when it stays
        on this target (the target's URL may be a secret), else as the absolute URL."""
        if location is None:
            return None
        return self.shown(urljoin(self.url_for(path), location))

    def shown(self, url_or_path: str) -> str:
        """A URL as evidence shows it: relative to the target when it is on the target."""
        absolute = urljoin(self.url_for("/"), url_or_path)
        there = urlsplit(absolute)
        if _origin(absolute) != _origin(self.spec.url):
            return absolute
        return there.path + (f"?{there.query}" if there.query else "")

    def reach_path(self) -> str:
        """What proves the target answers HTTP at all (any status will do): its first
        health path, whose answer the health check then judges, else ``/``."""
        return self.spec.health[0].path if self.spec.health else "/"

    def reachable(self) -> HttpResponse:
        return self.get(self.reach_path())

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        if self._wire is not None:
            self._wire.close()
        if self._anonymous is not None:
            self._anonymous.close()

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.spec.address(), cause)


class HttpWriteClient(HttpClient):
    """An :class:`HttpClient` that may also POST, to the paths the target's ``remediation:``
    declares and no other; exists only inside an allowed destructive check. Its GETs still
    go through the read-only session."""

    def __init__(self, name: str, spec: HttpTarget, timeout_s: float) -> None:
        super().__init__(name, spec, timeout_s)
        self.poster = pinned(PostOnlySession(), spec.url, spec.verify_tls)
        self.allowed_posts = spec.remediation.posts()

    def post(self, path: str) -> HttpResponse:
        """POST ``path`` (no body, no redirects followed) under the whole-request deadline."""
        if path not in self.allowed_posts:
            declared = ", ".join(sorted(self.allowed_posts)) or "none"
            raise WriteRefused(f"refusing HTTP POST {path}: not a declared remediation path "
                               f"(declared: {declared})")
        fetched = get_within(self.poster, self.url_for(path), timeout_s=self.timeout_s,
                             verify_tls=self.spec.verify_tls, unavailable=self._unavailable,
                             method="POST")
        return HttpResponse(path, fetched.status, fetched.elapsed_ms, fetched.body,
                            fetched.headers.get("content-type", ""), fetched.headers,
                            fetched.set_cookies)

    def close(self) -> None:
        super().close()
        self.poster.close()


def json_path(document: Any, dotted: str) -> list[tuple[str, Any]]:
    """All ``(concrete path, value)`` pairs matching ``a.*.b``; a missing key yields
    ``(path, MISSING)``."""
    results: list[tuple[str, Any]] = [("", document)]
    for part in dotted.split("."):
        step: list[tuple[str, Any]] = []
        for prefix, node in results:
            here = f"{prefix}.{part}" if prefix else part
            if node is MISSING:
                step.append((here, MISSING))
            elif part == "*" and isinstance(node, dict):
                step += [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items()]
            elif part == "*" and isinstance(node, list):
                step += [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
            elif isinstance(node, dict) and part in node:
                step.append((here, node[part]))
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                step.append((f"{prefix}[{part}]", node[int(part)]))
            else:
                step.append((here, MISSING))
        results = step
    return results


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)


def header_matches(actual: str | None, pattern: str) -> bool:
    """Header values compare exactly, with ``*`` and ``?`` as wildcards."""
    return actual is not None and fnmatchcase(actual, pattern)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
