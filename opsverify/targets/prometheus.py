"""Prometheus targets: the ``prometheus`` section and a GET-only client of its HTTP API.

The runbooks' "Prometheus :9090, alerts" becomes three questions asked of the server's own
API: is it ready (``/-/ready``), is every scrape target up (``/api/v1/targets``), and is any
alert firing that nobody allowed (``/api/v1/alerts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from opsverify.errors import TargetUnavailable
from opsverify.targets.base import TargetSpec
from opsverify.targets.http import HttpClient, HttpResponse, HttpTarget, http_url


class PrometheusTarget(TargetSpec):
    type: Literal["prometheus"]
    url: str  # http(s)://[user:password@]host:9090[/prefix]
    verify_tls: bool | str = True  # True, False, or a CA bundle path
    bearer_token: str | None = None
    # Alert names that may fire without failing the check (a Watchdog, a known incident).
    allowed_alerts: list[str] = Field(default_factory=list)
    # Jobs whose every scrape target must be up; absent: every active target.
    expect_up: list[str] | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("expect_up")
    @classmethod
    def _some_jobs(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("name at least one job, or leave expect_up out for every target")
        return value

    def address(self) -> str:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.scheme}://{parts.hostname}:{port}"

    def secrets(self) -> list[str]:
        password = urlsplit(self.url).password
        return [value for value in (self.bearer_token, password) if value] + (
            [self.url] if password else [])


@dataclass(frozen=True)
class ScrapeTarget:
    """One active scrape target, as ``/api/v1/targets`` reports it."""

    job: str
    instance: str
    health: str  # up, down, unknown (not scraped yet)
    last_error: str
    last_scrape: str

    @property
    def label(self) -> str:
        return f"{self.job} {self.instance}"


@dataclass(frozen=True)
class Alert:
    """One active alert, as ``/api/v1/alerts`` reports it."""

    name: str
    state: str  # firing or pending
    labels: dict[str, str]
    active_at: str

    @property
    def label(self) -> str:
        """``HighErrorRate{job="api", severity="page"}``, as PromQL would print it."""
        shown = ", ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items())
                          if k != "alertname")
        return f"{self.name}{{{shown}}}" if shown else self.name


class PrometheusClient:
    """Reads one Prometheus server: GET only, every request under ``timeout_s``."""

    def __init__(self, name: str, spec: PrometheusTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        # The HTTP client already owns the whole-request deadline and the GET-only session.
        self.http = HttpClient(name, HttpTarget(type="http", url=spec.url,
                                                verify_tls=spec.verify_tls), timeout_s)
        if spec.bearer_token:
            self.http.session.headers["Authorization"] = f"Bearer {spec.bearer_token}"

    def get(self, path: str) -> HttpResponse:
        return self.http.get(path)

    def reachable(self) -> None:
        """Prove the server answers HTTP as Prometheus does (``/-/healthy``)."""
        response = self.get("/-/healthy")
        if response.status in (401, 403):
            raise self._unavailable(f"GET /-/healthy answered {response.status}: "
                                    "check the credentials")
        if response.status == 404:
            raise self._unavailable("GET /-/healthy answered 404: not a Prometheus server")

    def ready(self) -> HttpResponse:
        return self.get("/-/ready")

    def version(self) -> str:
        """The server's version, or ``unknown`` when buildinfo is not served."""
        data = self._api("/api/v1/status/buildinfo", required=False)
        return str(data.get("version", "unknown")) if isinstance(data, dict) else "unknown"

    def targets(self) -> list[ScrapeTarget]:
        data = self._api("/api/v1/targets?state=active")
        return [
            ScrapeTarget(
                job=str(t.get("labels", {}).get("job", t.get("scrapePool", ""))),
                instance=str(t.get("labels", {}).get("instance", t.get("scrapeUrl", ""))),
                health=str(t.get("health", "unknown")),
                last_error=str(t.get("lastError", "")),
                last_scrape=str(t.get("lastScrape", "")),
            )
            for t in data.get("activeTargets", [])
        ]

    def alerts(self) -> list[Alert]:
        data = self._api("/api/v1/alerts")
        return [
            Alert(
                name=str(a.get("labels", {}).get("alertname", "")),
                state=str(a.get("state", "")),
                labels={str(k): str(v) for k, v in a.get("labels", {}).items()},
                active_at=str(a.get("activeAt", "")),
            )
            for a in data.get("alerts", [])
        ]

    def close(self) -> None:
        self.http.close()

    def _api(self, path: str, *, required: bool = True) -> Any:
        """The ``data`` of a successful API answer; anything else cannot be evaluated."""
        response = self.get(path)
        document = response.json()
        ok = (response.status == 200 and isinstance(document, dict)
              and document.get("status") == "success" and isinstance(document.get("data"), dict))
        if ok:
            return document["data"]
        if not required:
            return None
        error = document.get("error") if isinstance(document, dict) else None
        detail = (f": {error}" if error else " (not ready: see /-/ready)"
                  if response.status == 503 else " without a Prometheus API answer")
        raise self._unavailable(f"GET {path.split('?', 1)[0]} answered {response.status}{detail}")

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.spec.address(), cause)
