"""Prometheus targets: the ``prometheus`` section and a GET-only client of its HTTP API.

The runbooks' "Prometheus :9090, alerts" becomes three questions asked of the server's own
API: is it ready (``/-/ready``), is every scrape target up (``/api/v1/targets``), and is any
alert firing that nobody allowed (``/api/v1/alerts``). Capacity asks it instant queries
(``/api/v1/query``): the declared ``queries:`` and each SLO's errors and total per window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from pydantic import Field, ValidationInfo, field_validator

from opsverify import slo
from opsverify.errors import TargetUnavailable
from opsverify.targets.base import TargetSpec
from opsverify.targets.http import HttpClient, HttpResponse, HttpTarget, http_url
from opsverify.targets.prometheus_slo import (
    PromQuery,
    QueryAnswer,
    Series,
    Slo,
    SloReading,
    unique_names,
)


class PrometheusTarget(TargetSpec):
    type: Literal["prometheus"]
    url: str  # http(s)://[user:password@]host:9090[/prefix]
    verify_tls: bool | str = True  # True, False, or a CA bundle path
    bearer_token: str | None = None
    # Alert names that may fire without failing the check (a Watchdog, a known incident).
    allowed_alerts: list[str] = Field(default_factory=list)
    # Jobs whose every scrape target must be up; absent: every active target.
    expect_up: list[str] | None = None
    queries: list[PromQuery] = Field(default_factory=list)
    slos: list[Slo] = Field(default_factory=list)

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

    @field_validator("queries", "slos")
    @classmethod
    def _unique_names(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        unique_names(value, str(info.field_name))
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

    def query(self, promql: str, *, at: float) -> QueryAnswer:
        """One instant query evaluated at ``at`` (Unix time); the server is told the same
        deadline, so a heavy query stops there too."""
        path = "/api/v1/query?" + urlencode(
            {"query": promql, "time": f"{at:.3f}", "timeout": f"{self.timeout_s:g}"})
        response = self.get(path)
        document = response.json()
        # 400 bad_data, 422 execution: the query is at fault, not the server.
        if (response.status in (400, 422) and isinstance(document, dict)
                and document.get("status") == "error"):
            reason = " ".join(str(document.get("error", "")).split())
            return QueryAnswer("", refused=f"{document.get('errorType', 'error')}: {reason}")
        data = self._data(path, response)
        kind = str(data.get("resultType", ""))
        result = data.get("result")
        if kind == "scalar" and isinstance(result, list) and len(result) == 2:
            return QueryAnswer(kind, (Series({}, float(result[1])),))
        if kind != "vector" or not isinstance(result, list):
            return QueryAnswer(kind)  # matrix or string: nothing a threshold applies to
        return QueryAnswer(kind, tuple(
            Series({str(k): str(v) for k, v in item.get("metric", {}).items()},
                   float(item["value"][1]))
            for item in result if isinstance(item, dict) and "value" in item))

    def slo_reading(self, objective: Slo, windows: Sequence[str], *, at: float) -> SloReading:
        """``objective``'s errors and total over each window, all evaluated at ``at``."""
        traffic: dict[str, slo.Traffic] = {}
        for window in windows:
            values: dict[str, float | None] = {}
            for part in ("errors", "total"):
                answer = self.query(objective.promql(part, window), at=at)
                problem = answer.refused or (
                    "" if answer.result_type in ("vector", "scalar") else
                    f"returns a {answer.result_type}, not an instant vector or scalar")
                if problem:
                    return SloReading(at, traffic, f"{part} over {window}: {problem}")
                values[part] = answer.total()
            traffic[window] = slo.Traffic(values["errors"], values["total"])
        return SloReading(at, traffic)

    def close(self) -> None:
        self.http.close()

    def _api(self, path: str, *, required: bool = True) -> Any:
        """The ``data`` of a successful API answer; anything else cannot be evaluated."""
        return self._data(path, self.get(path), required=required)

    def _data(self, path: str, response: HttpResponse, *, required: bool = True) -> Any:
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
