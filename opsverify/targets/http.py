"""HTTP targets: the schema of an ``http`` section and a GET/HEAD/OPTIONS-only client."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import requests
from pydantic import Field, field_validator

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.targets.base import Deadline, Section, TargetSpec

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
USER_AGENT = "opsverify/0.1"


class HealthProbe(Section):
    """One health endpoint and what its answer must look like."""

    path: str = "/health"
    expect_status: int = 200
    # Dotted JSON paths to expected values; ``*`` matches every key or item at that level:
    # {status: healthy, "components.*.status": healthy}
    expect_json: dict[str, Any] = Field(default_factory=dict)


class LatencyProbe(Section):
    """Sample a path N times and judge the p95 against ``http.latency_p95_ms``."""

    path: str = "/health"
    samples: int = Field(default=10, ge=1, le=1000)


class HttpTarget(TargetSpec):
    type: Literal["http"]
    url: str
    verify_tls: bool | str = True  # True, False, or a CA bundle path
    health: list[HealthProbe] = Field(default_factory=list)
    latency: LatencyProbe | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("health", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

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

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class ReadOnlySession(requests.Session):
    """A requests session that refuses every method that could change state."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        verb = method.decode() if isinstance(method, bytes) else method
        if verb.upper() not in SAFE_METHODS:
            raise WriteRefused(
                f"refusing HTTP {verb.upper()} from a non-destructive check "
                f"(allowed: {', '.join(sorted(SAFE_METHODS))})"
            )
        return super().request(method, url, *args, **kwargs)


class HttpClient:
    """Reads one HTTP target under a whole-request deadline (connect + headers + body)."""

    def __init__(self, name: str, spec: HttpTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.session = ReadOnlySession()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = spec.verify_tls

    def get(self, path: str) -> HttpResponse:
        """GET ``path``; an unreachable or slow target raises :class:`TargetUnavailable`."""
        url = urljoin(self.spec.url.rstrip("/") + "/", path.lstrip("/"))
        deadline = Deadline.start(self.timeout_s)
        started = time.perf_counter()
        try:
            with self.session.get(
                url, timeout=(self.timeout_s, self.timeout_s), stream=True, allow_redirects=False
            ) as response:
                body = bytearray()
                for chunk in response.iter_content(chunk_size=65536):
                    body += chunk
                    if deadline.expired():
                        raise self._unavailable(f"body not complete after {self.timeout_s:g} s")
                elapsed = (time.perf_counter() - started) * 1000
                return HttpResponse(
                    path,
                    response.status_code,
                    elapsed,
                    bytes(body),
                    response.headers.get("Content-Type", ""),
                )
        except requests.exceptions.ConnectTimeout:
            raise self._unavailable(f"connect timed out after {self.timeout_s:g} s") from None
        except (requests.exceptions.ReadTimeout, requests.exceptions.Timeout):
            raise self._unavailable(f"no answer within {self.timeout_s:g} s") from None
        except requests.exceptions.SSLError as exc:
            raise self._unavailable(f"TLS verification failed: {_reason(exc)}") from None
        except requests.exceptions.ConnectionError as exc:
            raise self._unavailable(f"cannot connect: {_reason(exc)}") from None

    def reachable(self) -> None:
        """One request to prove the target answers HTTP at all (any status will do)."""
        self.get(self.spec.health[0].path if self.spec.health else "/")

    def close(self) -> None:
        self.session.close()

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.spec.address(), cause)


def _reason(exc: Exception) -> str:
    """The innermost cause of a requests error, without the URL (it may hold credentials)."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "Connection reset", "certificate verify failed", "Remote end closed"):
        if marker in text:
            return marker.lower() if marker != "Connection refused" else "connection refused"
    return type(exc).__name__


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


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()
