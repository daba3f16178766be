"""HTTP health: the runbooks' ``curl -f /health``, redirects, response times and their
declared ``curl`` checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.stats import percentile
from opsverify.targets.http import MISSING, REDIRECT_STATUSES, header_matches, json_path
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.http import (
        HealthProbe,
        HttpCheck,
        HttpClient,
        HttpResponse,
        LatencyProbe,
        RedirectProbe,
    )

# Every read here is a GET of a declared path, prefetched in the probe pool; checks that GET
# the same path share one answer (and the first health path is the reachability probe's).


@probe(key=lambda http, http_health: ("GET", http_health.path))
def health_response(http: HttpClient, http_health: HealthProbe) -> HttpResponse:
    return http.get(http_health.path)


@probe(key=lambda http, http_response_time: ("GET", http_response_time.path))
def timed_response(http: HttpClient, http_response_time: HealthProbe) -> HttpResponse:
    return http.get(http_response_time.path)


@probe(key=lambda http, http_redirect: ("GET", http_redirect.path))
def redirect_response(http: HttpClient, http_redirect: RedirectProbe) -> HttpResponse:
    return http.get(http_redirect.path)


@probe(key=lambda http, http_check: ("GET", http_check.path))
def checked_response(http: HttpClient, http_check: HttpCheck) -> HttpResponse:
    return http.get(http_check.path)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_health(http_health: HealthProbe, health_response: HttpResponse,
                evidence: EvidenceLog) -> None:
    """The health endpoint answers with the declared status and JSON values."""
    response = health_response
    evidence.note(f"GET {http_health.path} response time", response.elapsed_ms, unit="ms")
    evidence.expect(f"GET {http_health.path} status", response.status,
                    equals=http_health.expect_status)
    _expect_json(evidence, response, http_health.expect_json)


@pytest.mark.daily
def test_response_time(http: HttpClient, http_response_time: HealthProbe,
                       timed_response: HttpResponse, evidence: EvidenceLog) -> None:
    """One request to a health endpoint answers within its ``max_ms``."""
    declared = http_response_time
    index = http.spec.health.index(declared)
    response = timed_response
    evidence.note(f"GET {declared.path} status", response.status)
    assert declared.max_ms is not None
    evidence.within("http.response_ms", response.elapsed_ms, unit="ms",
                    default=Threshold(crit=declared.max_ms),
                    default_source=evidence.source_of("targets", http.name, "health", index,
                                                      "max_ms"))


@pytest.mark.daily
def test_latency_p95(http: HttpClient, http_latency: LatencyProbe, after_burst: None,
                     evidence: EvidenceLog) -> None:
    """The p95 response time over N sequential requests stays under its threshold (taken
    inline, one after another, once the prefetching burst is over)."""
    samples = [http.get(http_latency.path).elapsed_ms for _ in range(http_latency.samples)]
    evidence.note("samples", len(samples))
    evidence.note("max", max(samples), unit="ms")
    evidence.within("http.latency_p95_ms", percentile(samples, 95), unit="ms",
                    default=Threshold(warn=1000, crit=2000))


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_redirect(http: HttpClient, http_redirect: RedirectProbe,
                  redirect_response: HttpResponse, evidence: EvidenceLog) -> None:
    """An old address redirects where it is declared to, with the declared status."""
    redirect = http_redirect
    where = evidence.source_of("targets", http.name, "redirects",
                               http.spec.redirects.index(redirect))
    response = redirect_response
    if redirect.status is not None:
        evidence.expect(f"GET {redirect.path} status", response.status, equals=redirect.status,
                        source=where)
    else:
        evidence.expect(f"GET {redirect.path} status is a redirect",
                        response.status in REDIRECT_STATUSES, equals=True, source=where)
        evidence.note(f"GET {redirect.path} status", response.status)
    location = http.redirect_target(redirect.path, response.header("Location"))
    evidence.expect(f"GET {redirect.path} Location", location or "<none>",
                    equals=http.shown(redirect.to), source=where)


def test_http_check(http: HttpClient, http_check: HttpCheck, checked_response: HttpResponse,
                    evidence: EvidenceLog) -> None:
    """A request declared in the environment file answers as declared (status, JSON values,
    body text, headers, response time). Cadence and category markers come from the
    declaration."""
    check = http_check
    index = http.spec.http_checks.index(check)
    where = evidence.source_of("targets", http.name, "http_checks", index)
    response = checked_response
    evidence.expect(f"GET {check.path} status", response.status, equals=check.expect_status,
                    source=where)
    _expect_json(evidence, response, check.expect_json)
    text = response.text()
    for needle in check.expect_body_contains:
        evidence.expect(f"GET {check.path} body contains {needle!r}", needle in text,
                        equals=True, source=where)
    for name, pattern in check.expect_header.items():
        actual = response.header(name)
        if not any(wildcard in pattern for wildcard in "*?["):
            evidence.expect(f"GET {check.path} header {name}", actual or "<missing>",
                            equals=pattern, source=where)
            continue
        evidence.note(f"GET {check.path} header {name}", actual or "<missing>")
        evidence.expect(f"GET {check.path} header {name} matches {pattern!r}",
                        header_matches(actual, pattern), equals=True, source=where)
    if check.max_ms is not None:
        evidence.within("http.response_ms", response.elapsed_ms, unit="ms",
                        default=Threshold(crit=check.max_ms), default_source=where)
    else:
        evidence.note(f"GET {check.path} response time", response.elapsed_ms, unit="ms")


def _expect_json(evidence: EvidenceLog, response: HttpResponse, expected: dict[str, Any]) -> None:
    """Every dotted path of ``expected`` (``*`` for each key or item) holds its value."""
    __tracebackhide__ = True
    if not expected:
        return
    document = response.json()
    evidence.expect(f"GET {response.url_path} body is JSON", document is not None, equals=True)
    for path, value in expected.items():
        for concrete, actual in json_path(document, path):
            shown = "<missing>" if actual is MISSING else actual
            evidence.expect(f"{response.url_path} {concrete}", shown, equals=value)
