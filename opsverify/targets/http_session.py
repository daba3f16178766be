"""The requests side of the http target: sessions that refuse writes, what requests would
read from the environment on every request read once, and a request under a whole-answer
deadline. The http client's own GETs go on :mod:`opsverify.targets.http_wire`; requests
carries what that does not speak: proxies, the anonymous and POST-only sessions, ClickHouse.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import requests

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.targets.base import Deadline, DeadlinePassed, run_within
from opsverify.targets.http_wire import Fetched

S = TypeVar("S", bound=requests.Session)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
USER_AGENT = "opsverify/0.1"


class _GuardedSession(requests.Session):
    """A requests session whose every request passes :meth:`_allow` first."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self._allow(_verb(method))
        # Given per request, the target's verify_tls wins: a session's own value loses to
        # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (psf/requests#3829), so a declared CA or
        # ``verify_tls: false`` would be ignored wherever those are set.
        kwargs.setdefault("verify", self.verify)
        return super().request(method, url, *args, **kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        # Every request ends here, prepared ones included: the guard cannot be walked around.
        self._allow(_verb(request.method or ""))
        return super().send(request, **kwargs)

    def _allow(self, verb: str) -> None:
        raise NotImplementedError


class ReadOnlySession(_GuardedSession):
    """A requests session that refuses every method that could change state."""

    def _allow(self, verb: str) -> None:
        if verb not in SAFE_METHODS:
            raise WriteRefused(f"refusing HTTP {verb} from a non-destructive check "
                               f"(allowed: {', '.join(sorted(SAFE_METHODS))})")


class PostOnlySession(_GuardedSession):
    """The write-capable client's second session: POST, and nothing else (its reads go
    through a :class:`ReadOnlySession`)."""

    def _allow(self, verb: str) -> None:
        if verb != "POST":
            raise WriteRefused(f"refusing HTTP {verb} on the POST-only session (reads go "
                               "through the read-only one)")


def _verb(method: str | bytes) -> str:
    return (method.decode() if isinstance(method, bytes) else method).upper()


def pinned(session: S, url: str, verify_tls: bool | str) -> S:
    """``session`` with what requests would read from the environment on every request read
    once, now: the proxies for ``url`` (``*_PROXY``, ``NO_PROXY``), ``~/.netrc``'s credentials
    for its host (they win over the URL's, as in requests) and, for ``verify_tls: true``,
    ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``. Probes run on the pool's threads while
    pytest sets ``PYTEST_CURRENT_TEST`` on its own: reading ``os.environ`` there raced it
    (a KeyError out of ``getproxies``), and cost a scan of the environment per request."""
    session.trust_env = False
    session.proxies.update(environment_proxies(url))
    netrc = requests.utils.get_netrc_auth(url)
    if netrc:
        session.auth = netrc
    session.verify = tls_verify(verify_tls)
    session.headers["User-Agent"] = USER_AGENT
    return session


def tls_verify(verify_tls: bool | str) -> bool | str:
    """What requests verifies a server's certificate against: ``verify_tls: true`` is
    ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` when set, else its own bundle."""
    if verify_tls is True:
        return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    return verify_tls


# The variables requests takes a proxy of an http:// or https:// URL from (and their
# upper-case twins); ``no_proxy`` only matters when one of them is set.
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


def environment_proxies(url: str) -> dict[str, str]:
    """``requests.utils.get_environ_proxies(url)``, which scans the whole environment
    twice (0.6 ms a client, 0.6 s of a 1,000-target run's start), only when some proxy
    variable is set at all."""
    if not any(os.environ.get(n) or os.environ.get(n.upper()) for n in _PROXY_VARIABLES):
        return {}
    return requests.utils.get_environ_proxies(url)


class NoCredentials(requests.auth.AuthBase):
    """An explicit "no authentication": requests then takes none from the URL or netrc."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


def anonymous_session(like: requests.Session) -> requests.Session:
    """A read-only session that keeps no cookie (its jar refuses every one)."""
    session = ReadOnlySession()
    session.trust_env = False
    session.proxies.update(like.proxies)
    session.headers["User-Agent"] = USER_AGENT
    session.verify = like.verify
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def get_within(session: requests.Session, url: str, *, timeout_s: float,
               verify_tls: bool | str, unavailable: Callable[[str], TargetUnavailable],
               params: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None, auth: Any = None,
               method: str = "GET") -> Fetched:
    """GET ``url`` without following redirects, whole answer within ``timeout_s`` (connect,
    headers, body); what keeps it from being evaluated raises ``unavailable(cause)`` with a
    one-line cause that never holds the URL (it may carry credentials). ``method`` is for
    the write-capable client's POST: the session decides what it may send."""
    deadline = Deadline.start(timeout_s)
    responses: list[requests.Response] = []

    def fetch() -> Fetched:
        started = time.perf_counter()
        with session.request(method, url, params=params, headers=headers, auth=auth,
                             timeout=(timeout_s, timeout_s), stream=True,
                             allow_redirects=False) as response:
            responses.append(response)
            body = bytearray()
            for chunk in response.iter_content(chunk_size=65536):
                body += chunk
                if deadline.expired():
                    raise unavailable(f"body not complete after {timeout_s:g} s")
            elapsed = (time.perf_counter() - started) * 1000
            return Fetched(response.status_code, bytes(body), elapsed,
                           {k.lower(): v for k, v in response.headers.items()},
                           tuple(response.raw.headers.getlist("set-cookie")))

    try:
        # The socket timeouts bound each read; a server dripping its headers or body a byte
        # at a time would pass every one of them. Some grace, so that their message wins a tie.
        return run_within(fetch, timeout_s + 0.5, name="opsverify-http-get")
    except DeadlinePassed:
        for response in responses:
            _cut(response)
        raise unavailable(f"no complete answer within {timeout_s:g} s") from None
    except requests.exceptions.ConnectTimeout:
        raise unavailable(f"connect timed out after {timeout_s:g} s") from None
    except (requests.exceptions.ReadTimeout, requests.exceptions.Timeout):
        raise unavailable(f"no answer within {timeout_s:g} s") from None
    except requests.exceptions.SSLError as exc:
        if "no certificate or crl found" in str(exc).lower():
            raise unavailable(f"verify_tls {verify_tls} holds no CA certificate") from None
        raise unavailable(f"TLS verification failed: {reason(exc)}") from None
    except requests.exceptions.ConnectionError as exc:
        raise unavailable(f"cannot connect: {reason(exc)}") from None
    except OSError as exc:  # requests' own check of verify_tls, before connecting
        if "CA certificate bundle" not in str(exc):
            raise
        raise unavailable(f"verify_tls {verify_tls} is not a readable CA bundle") from None


def _cut(response: requests.Response) -> None:
    """End the abandoned read of ``response`` now, not at the end of the drip. Its socket is
    shut down, not closed: closing would wait for the reading thread's buffer lock."""
    sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, without the URL (it may hold credentials)."""
    text = str(exc)
    verify = re.search(r"certificate verify failed: ([^(]+?)\s*\(_ssl", text)
    if verify:  # OpenSSL's reason: expired, unknown issuer, self-signed, hostname mismatch
        return f"certificate verify failed: {verify.group(1)}"
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "Connection reset", "certificate verify failed", "Remote end closed"):
        if marker in text:
            return marker.lower() if marker != "Connection refused" else "connection refused"
    return type(exc).__name__
