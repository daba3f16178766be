"""The sandbox's demo HTTP service, shaped like the runbooks' FastAPI apps.

``/health`` answers liveness, ``/health/detailed`` checks its real dependencies (TCP to the
sandbox PostgreSQL and Redis) per component like the ERPFTS runbook, ``/metrics`` speaks the
Prometheus text format, ``/docs`` redirects to ``/docs/`` as FastAPI behind a proxy does.
Run as ``python -m opsverify.sandbox.demo_app --port N``; with ``--tls-port M --cert F --key
K`` it also answers the same routes over TLS (certificates from ``sandbox/tls.py``).
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()
REQUESTS = Counter("http_requests", "HTTP requests", ["path", "status"], registry=REGISTRY)
LATENCY = Histogram("http_request_duration_seconds", "Request latency", ["path"],
                    registry=REGISTRY)


class DemoApp(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, *, faults: set[str], dependencies: dict[str, int]) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.faults = faults
        self.dependencies = dependencies


class TlsDemoApp(DemoApp):
    """The same service over TLS. The handshake runs in the request's own thread, so a
    client that never completes it holds up nobody else."""

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
                  "/docs/": self._docs}
        handler = routes.get(path)
        status = handler() if handler else self._send_json(404, {"detail": "Not Found"})
        REQUESTS.labels(path if handler else "other", str(status)).inc()
        LATENCY.labels(path if handler else "other").observe(time.perf_counter() - started)

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
        self.end_headers()
        self.wfile.write(payload)
        return 200

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

    def _send_json(self, status: int, body: dict[str, Any]) -> int:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
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
    if args.tls_port:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        tls = TlsDemoApp(args.tls_port, context, faults=set(args.fault), dependencies=deps)
        threading.Thread(target=tls.serve_forever, daemon=True).start()
    DemoApp(args.port, faults=set(args.fault), dependencies=deps).serve_forever()


if __name__ == "__main__":
    main()
