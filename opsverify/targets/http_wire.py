"""One HTTP GET on ``http.client``, on the calling thread, within a whole-answer deadline.

The probe pool sends a run's GETs from its threads. Through requests a GET cost ~0.85 ms
of CPU here (``http.client``: ~0.25 ms), and requests bounds each socket read, not the whole
answer, so its whole-answer deadline took a second thread per call
(:func:`opsverify.targets.base.run_within`): threads that share one interpreter lock with
the checks. This wire reads through :class:`_DeadlineSocket` instead: every read waits at
most the per-read timeout and never past the answer's deadline, so a server that drips its
answer a byte at a time is cut at the deadline, on the caller's own thread.

It keeps what requests did for a plain target: the same CA bundles (certifi's,
``REQUESTS_CA_BUNDLE``, a declared file or directory) and hostname verification, Basic
credentials from ``~/.netrc`` or the URL, the session's headers and cookies, gzip and
deflate answers decoded, keep-alive connections. A target reached through a proxy stays on
requests (:class:`opsverify.targets.http.HttpClient` decides). Only GET is spoken here.
"""

from __future__ import annotations

import base64
import http.client
import io
import os
import socket
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote, urlsplit

# How long after its per-read timeout the whole answer may still take: a dripping server
# is cut then, and a plain read timeout, which comes first, keeps its own message.
WHOLE_ANSWER_GRACE_S = 0.5
ACCEPT_ENCODING = "gzip, deflate"  # what this module decodes (requests may offer more)


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes
    elapsed_ms: float
    headers: dict[str, str]  # lower-case names; several values of one joined with ", "
    set_cookies: tuple[str, ...] = ()


class NoCaBundle(Exception):
    """The CA bundle to verify with is not there (a declared path, or REQUESTS_CA_BUNDLE's)."""


class _WholeAnswerLate(Exception):
    """The answer's deadline passed while it was still being read."""


class _ConnectLate(Exception):
    """The TCP connection (or TLS handshake) did not complete within the timeout."""


class _DeadlineSocket:
    """A connected socket whose every read is bounded by the per-read timeout and by what
    is left of the whole answer's deadline. ``http.client`` reads through ``makefile``."""

    def __init__(self, sock: socket.socket, per_read_s: float) -> None:
        self._sock = sock
        self.per_read_s = per_read_s
        self.deadline_at = float("inf")

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        left = self.deadline_at - time.monotonic()
        if left <= 0:
            raise _WholeAnswerLate
        self._sock.settimeout(min(self.per_read_s, left))
        try:
            return self._sock.recv_into(buffer, nbytes, flags)
        except TimeoutError:
            if time.monotonic() >= self.deadline_at:
                raise _WholeAnswerLate from None
            raise

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        # As socket.makefile does: the socket stays open while a response reads from it,
        # even once its connection let go of it (http.client does, for a closing answer).
        self._sock._io_refs += 1  # type: ignore[attr-defined]
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def _decref_socketios(self) -> None:
        self._sock._decref_socketios()  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Deadlined:
    """Mixin for ``http.client`` connections: the connected socket is a
    :class:`_DeadlineSocket`."""

    sock: Any
    timeout: float | None

    def connect(self) -> None:
        try:
            super().connect()  # type: ignore[misc]
        except TimeoutError:
            raise _ConnectLate from None
        per_read = self.timeout if self.timeout is not None else float("inf")
        self.sock = _DeadlineSocket(self.sock, per_read)


class _Http(_Deadlined, http.client.HTTPConnection):
    pass


class _Https(_Deadlined, http.client.HTTPSConnection):
    pass


_CONTEXTS: dict[bool | str, ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()


def tls_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context requests would use for ``verify`` (made once per value): certifi's
    bundle for True, a CA file or directory, or no verification for False. A path that is
    not there raises :class:`NoCaBundle`; a file holding no certificate, ssl.SSLError."""
    with _CONTEXTS_LOCK:
        found = _CONTEXTS.get(verify)
        if found is not None:
            return found
        if verify is False:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif verify is True:
            import certifi  # requests' own default bundle

            context = ssl.create_default_context(cafile=certifi.where())
        elif os.path.isdir(verify):
            context = ssl.create_default_context(capath=verify)
        elif os.path.exists(verify):
            context = ssl.create_default_context(cafile=verify)
        else:
            raise NoCaBundle(verify)
        _CONTEXTS[verify] = context
        return context


def basic_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode("latin1")).decode("ascii")
    return f"Basic {token}"


class Wire:
    """Connections to one origin (scheme, host, port) and the GETs sent on them; safe to
    use from several threads (each GET has a connection of its own while it runs)."""

    def __init__(self, url: str, verify: bool | str) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.verify = verify
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def get(self, target: str, headers: Mapping[str, str], *, timeout_s: float,
            cookies: Any, url: str) -> Fetched:
        """GET ``target`` (path and query) with ``headers`` (names distinct regardless of
        case; ``Accept-Encoding`` at most :data:`ACCEPT_ENCODING`); ``cookies`` is a cookie
        jar the answer's cookies go into and the request's come from (``url`` says for where).
        Raises what the connection raised; :func:`cause` names it in one line."""
        started = time.perf_counter()
        sent = dict(headers)
        request = None
        if cookies is not None and len(cookies):
            request = _cookie_request(url)
            cookies.add_cookie_header(request)
            if request.unredirected_hdrs.get("Cookie"):
                sent["Cookie"] = request.unredirected_hdrs["Cookie"]
        deadline_at = time.monotonic() + timeout_s + WHOLE_ANSWER_GRACE_S
        connection, reused = self._connection(timeout_s)
        try:
            try:
                response = self._send(connection, target, sent, deadline_at)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                # A kept-alive connection the server had closed meanwhile: once more, anew.
                connection.close()
                connection, reused = self._new(timeout_s), False
                response = self._send(connection, target, sent, deadline_at)
            body = _decoded(response.read(), response.getheader("content-encoding"))
        except BaseException:
            connection.close()
            raise
        elapsed = (time.perf_counter() - started) * 1000
        message = response.msg
        names = dict.fromkeys(k.lower() for k in message)
        answer = Fetched(response.status, body, elapsed,
                         {n: ", ".join(message.get_all(n) or ()) for n in names},
                         tuple(message.get_all("set-cookie") or ()))
        if answer.set_cookies and cookies is not None:
            cookies.extract_cookies(_Answer(message), request or _cookie_request(url))
        if response.will_close:
            connection.close()
        else:
            with self._lock:
                self._idle.append(connection)
        return answer

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _connection(self, timeout_s: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._new(timeout_s), False

    def _new(self, timeout_s: float) -> http.client.HTTPConnection:
        if self.https:
            return _Https(self.host, self.port, timeout=timeout_s,
                          context=tls_context(self.verify))
        return _Http(self.host, self.port, timeout=timeout_s)

    @staticmethod
    def _send(connection: http.client.HTTPConnection, target: str,
              headers: Mapping[str, str], deadline_at: float) -> http.client.HTTPResponse:
        if connection.sock is None:
            connection.connect()
        cast(_DeadlineSocket, connection.sock).deadline_at = deadline_at
        connection.request("GET", target, headers=dict(headers))
        return connection.getresponse()


def _cookie_request(url: str) -> urllib.request.Request:
    """What ``http.cookiejar`` reads of a request: its URL (it is never opened)."""
    return urllib.request.Request(url)  # noqa: S310 - a cookie jar's view, not an opener


class _Answer:
    """What ``http.cookiejar`` reads of a response: its headers."""

    def __init__(self, message: http.client.HTTPMessage) -> None:
        self._message = message

    def info(self) -> http.client.HTTPMessage:
        return self._message


def _decoded(body: bytes, encoding: str | None) -> bytes:
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity") or not body:  # a 204 or 304 may name a coding it never used
        return body
    try:
        if coding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if coding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some send
    except zlib.error:
        raise UndecodableAnswer(coding) from None
    raise UndecodableAnswer(coding)


class UndecodableAnswer(Exception):
    """An answer in a Content-Encoding that was not asked for, or a corrupt one."""


def url_credentials(url: str) -> tuple[str, str] | None:
    """The ``user:password@`` of ``url``, unquoted, as requests takes them."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def cause(exc: BaseException, timeout_s: float, verify: bool | str,
          reason: Callable[[BaseException], str]) -> str | None:
    """The one-line cause of a failed GET, in the words requests' failures were given;
    None for an exception that is not about reaching the target."""
    if isinstance(exc, _WholeAnswerLate):
        return f"no complete answer within {timeout_s:g} s"
    if isinstance(exc, _ConnectLate):
        return f"connect timed out after {timeout_s:g} s"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, NoCaBundle):
        return f"verify_tls {verify} is not a readable CA bundle"
    if isinstance(exc, ssl.SSLError):
        if "no certificate or crl found" in str(exc).lower():
            return f"verify_tls {verify} holds no CA certificate"
        return f"TLS verification failed: {reason(exc)}"
    if isinstance(exc, UndecodableAnswer):
        return f"answer not decodable (Content-Encoding: {exc.args[0]})"
    if isinstance(exc, http.client.IncompleteRead):
        return "answer cut short: the connection closed before the whole body"
    if isinstance(exc, (OSError, http.client.HTTPException)):
        return f"cannot connect: {reason(exc)}"
    return None
