"""The sandbox's demo HTTP service, shaped like the runbooks' FastAPI apps.

``/health`` answers liveness, ``/health/detailed`` checks its real dependencies (TCP to the
sandbox PostgreSQL and Redis) and its search-results cache per component like the ERPFTS
runbook, ``/metrics`` speaks the Prometheus text format, ``/docs`` redirects to ``/docs/`` as
FastAPI behind a proxy does. ``GET /performance/cache-status`` and ``POST
/performance/cache/clear`` are ERPFTS's cache statistics and its runbook's cache clear.
It is secure by default, as a reviewed service is: security headers on every answer (CSP and
framing on HTML, HSTS over TLS), CORS for its one front end, ``/api/admin/stats`` behind a
bearer token, ``/api/search`` rate limited, its session cookie Secure and HttpOnly, TLS 1.2+.
Run as ``python -m opsverify.sandbox.demo_app --port N``; with ``--tls-port M --cert F --key
K`` it also answers the same routes over TLS (certificates from ``sandbox/tls.py``).
"""

from __future__ import annotations

import argparse
import collections
import json
import secrets
import socket
import ssl
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()
REQUESTS = Counter("http_requests", "HTTP requests", ["path", "status"], registry=REGISTRY)
LATENCY = Histogram("http_request_duration_seconds", "Request latency", ["path"],
                    registry=REGISTRY)
FRONT_END = "https://forecast.example.com"  # the one origin CORS allows (ERPFTS's rule)
HSTS = "max-age=31536000; includeSubDomains"
CSP = "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'"
RATE_LIMIT = (5, 10.0)  # requests per client per window (s) on /api/search
CACHE_TTL_S = 3600  # ERPFTS's cache.ttl.search_results: 1 hour
CACHE_ENTRIES = 12


class DemoApp(ThreadingHTTPServer):
    daemon_threads = True
    tls = False

    def __init__(self, port: int, *, faults: set[str], dependencies: dict[str, int],
                 limiter: RateLimiter, cache: SearchCache | None = None) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.faults = faults
        self.dependencies = dependencies
        self.limiter = limiter
        self.cache = cache if cache is not None else SearchCache(stale=False)
        self.admin_token = secrets.token_urlsafe(24)  # known to nobody: every GET is refused


class RateLimiter:
    """A sliding window per client address, shared by the plain and the TLS listener."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self.seen: dict[str, collections.deque[float]] = {}
        self.lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self.lock:
            recent = self.seen.setdefault(client, collections.deque())
            while recent and now - recent[0] > self.window_s:
                recent.popleft()
            if len(recent) >= self.limit:
                return False
            recent.append(now)
            return True


class SearchCache:
    """The service's search-results cache, shared by both listeners: entries and when each
    was stored. ``stale``: its invalidation stopped two hours ago, so every entry is past
    its TTL (what ``cache-stale`` starts with); a clear empties it."""

    def __init__(self, *, stale: bool) -> None:
        stored = time.time() - (2 * CACHE_TTL_S if stale else 60)
        self.entries = {f"search:{i}": stored + i for i in range(CACHE_ENTRIES)}
        self.lock = threading.Lock()

    def stats(self) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            ages = [now - stored for stored in self.entries.values()]
        return {"entries": len(ages), "oldest_age_s": round(max(ages, default=0.0)),
                "ttl_s": CACHE_TTL_S, "stale_entries": sum(1 for a in ages if a > CACHE_TTL_S)}

    def clear(self) -> int:
        with self.lock:
            cleared = len(self.entries)
            self.entries.clear()
        return cleared


class TlsDemoApp(DemoApp):
    """The same service over TLS. The handshake runs in the request's own thread, so a
    client that never completes it holds up nobody else."""

    tls = True

    def __init__(self, port: int, context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(port, **kwargs)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(5)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the client refused our certificate, or went away
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class Handler(BaseHTTPRequestHandler):
    server: DemoApp
    server_version = "demo-forecast-api/1.0"

    def do_GET(self) -> None:
        started = time.perf_counter()
        if "slow-app" in self.server.faults:
            time.sleep(0.4)
        path = self.path.split("?", 1)[0]
        routes = {"/health": self._health, "/health/detailed": self._detailed,
                  "/metrics": self._metrics, "/": self._root, "/docs": self._docs_redirect,
                  "/docs/": self._docs, "/api/admin/stats": self._admin,
                  "/api/search": self._search, "/performance/cache-status": self._cache_status}
        self._route(routes, path, started)

    def do_POST(self) -> None:
        started = time.perf_counter()
        self._route({"/performance/cache/clear": self._cache_clear},
                    self.path.split("?", 1)[0], started)

    def _route(self, routes: dict[str, Any], path: str, started: float) -> None:
        handler = routes.get(path)
        status = handler() if handler else self._send_json(404, {"detail": "Not Found"})
        REQUESTS.labels(path if handler else "other", str(status)).inc()
        LATENCY.labels(path if handler else "other").observe(time.perf_counter() - started)

    def _cache_status(self) -> int:
        return self._send_json(200, {"cache_stats": self.server.cache.stats()})

    def _cache_clear(self) -> int:
        # The runbook's `curl -X POST /performance/cache/clear`; a body, if any, is ignored.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))
        return self._send_json(200, {"status": "cleared", "cleared": self.server.cache.clear()})

    def _root(self) -> int:
        return self._send_json(200, {"service": "ts-forecast-api", "version": "1.4.2"})

    def _health(self) -> int:
        if "app-unhealthy" in self.server.faults:
            return self._send_json(503, {"status": "unhealthy", "detail": "model not loaded"})
        return self._send_json(200, {"status": "healthy", "version": "1.4.2"})

    def _detailed(self) -> int:
        components: dict[str, dict[str, Any]] = {}
        for name, port in self.server.dependencies.items():
            ok = _tcp_ok(port)
            components[name] = {"status": "healthy" if ok else "unhealthy",
                                "detail": f"127.0.0.1:{port} " + ("reachable" if ok else "refused")}
        # The cache: its backend (Redis, when the app has it) and whether what it serves is
        # past its TTL.
        stats = self.server.cache.stats()
        cache = components.setdefault("cache", {"status": "healthy", "backend": "memory"})
        if cache["status"] == "healthy" and stats["stale_entries"]:
            cache["status"] = "stale"
        cache.update(stats)
        components["vector_db"] = {"status": "healthy", "collections": 3}
        components["embedding_model"] = {
            "status": "unhealthy" if "app-unhealthy" in self.server.faults else "healthy"}
        overall = all(c["status"] == "healthy" for c in components.values())
        body = {"status": "healthy" if overall else "degraded", "components": components}
        return self._send_json(200 if overall else 503, body)

    def _docs_redirect(self) -> int:
        if "redirect-broken" in self.server.faults:
            return self._send_json(404, {"detail": "Not Found"})  # the rewrite rule is gone
        self.send_response(301)
        self.send_header("Location", "/docs/")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return 301

    def _docs(self) -> int:
        payload = b"<!doctype html><title>ts-forecast-api</title><h1>API documentation</h1>\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        if "headers-missing" not in self.server.faults:
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Frame-Options", "DENY")
        self.send_header("Set-Cookie", f"session={secrets.token_urlsafe(16)}; Path=/; Secure; "
                                       "HttpOnly; SameSite=Lax")
        self.end_headers()
        self.wfile.write(payload)
        return 200

    def _admin(self) -> int:
        granted = self.headers.get("Authorization") == f"Bearer {self.server.admin_token}"
        if granted or "auth-bypass" in self.server.faults:  # the middleware lost its route
            return self._send_json(200, {"users": 42, "runs_today": 17})
        return self._send_json(401, {"detail": "Not authenticated"},
                               extra={"WWW-Authenticate": "Bearer"})

    def _search(self) -> int:
        if not self.server.limiter.allow(self.client_address[0]):
            return self._send_json(429, {"detail": "rate_limit_exceeded"},
                                   extra={"Retry-After": str(int(RATE_LIMIT[1]))})
        return self._send_json(200, {"results": []})

    def end_headers(self) -> None:
        # What a reviewed service's middleware adds to every answer.
        if "headers-missing" not in self.server.faults:
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "strict-origin-when-cross-origin")
            if self.server.tls:
                self.send_header("Strict-Transport-Security", HSTS)
        origin = self.headers.get("Origin")
        if origin and (origin == FRONT_END or "cors-wildcard" in self.server.faults):
            # cors-wildcard: "allow every origin, with credentials", which reflects any.
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Vary", "Origin")
        super().end_headers()

    def _metrics(self) -> int:
        if "metrics-disabled" in self.server.faults:
            return self._send_json(404, {"detail": "Not Found"})  # exporter switched off
        payload = generate_latest(REGISTRY)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        return 200

    def _send_json(self, status: int, body: dict[str, Any],
                   extra: dict[str, str] | None = None) -> int:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        return status

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _tcp_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fault", action="append", default=[])
    parser.add_argument("--dependency", action="append", default=[], metavar="NAME=PORT")
    parser.add_argument("--tls-port", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    deps = {name: int(port) for name, port in (d.split("=", 1) for d in args.dependency)}
    faults = set(args.fault)
    limiter = RateLimiter(*RATE_LIMIT)
    cache = SearchCache(stale="cache-stale" in faults)
    if args.tls_port:
        context = server_context(args.cert, args.key, weak="tls-weak" in faults)
        tls = TlsDemoApp(args.tls_port, context, faults=faults, dependencies=deps,
                         limiter=limiter, cache=cache)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    DemoApp(args.port, faults=faults, dependencies=deps, limiter=limiter,
            cache=cache).serve_forever()


def server_context(cert: str, key: str, *, weak: bool = False) -> ssl.SSLContext:
    """TLS 1.2 and 1.3 (Mozilla's intermediate profile). ``weak``: TLS 1.0 and 1.1 accepted
    too, with every cipher OpenSSL still has (an old load balancer's policy)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if weak:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(cert, key)
    return context


if __name__ == "__main__":
    main()
