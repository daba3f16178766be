"""Prometheus health: the runbook's "Prometheus :9090, alerts", asked of its own API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog

if TYPE_CHECKING:
    from opsverify.targets.http import HttpResponse
    from opsverify.targets.prometheus import Alert, PrometheusClient, ScrapeTarget

# The three API reads, prefetched in the probe pool.


@dataclass(frozen=True)
class Readiness:
    """``/-/ready``'s answer and the server's version (``unknown`` without buildinfo)."""

    response: HttpResponse
    version: str


@probe
def prometheus_readiness(prometheus: PrometheusClient) -> Readiness:
    return Readiness(prometheus.ready(), prometheus.version())


@probe
def prometheus_scrape_targets(prometheus: PrometheusClient) -> tuple[ScrapeTarget, ...]:
    return tuple(prometheus.targets())


@probe
def prometheus_alerts(prometheus: PrometheusClient) -> tuple[Alert, ...]:
    return tuple(prometheus.alerts())


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_ready(prometheus_readiness: Readiness, evidence: EvidenceLog) -> None:
    """The server is ready to serve queries: ``/-/ready`` answers 200."""
    response = prometheus_readiness.response
    evidence.expect("GET /-/ready status", response.status, equals=200)
    evidence.note("GET /-/ready says", response.body.decode(errors="replace").strip()[:200])
    evidence.note("version", prometheus_readiness.version)


@pytest.mark.daily
def test_scrape_targets_up(prometheus: PrometheusClient,
                           prometheus_scrape_targets: tuple[ScrapeTarget, ...],
                           evidence: EvidenceLog) -> None:
    """Every scrape target, or every target of the jobs in ``expect_up``, is up."""
    jobs = prometheus.spec.expect_up
    active = prometheus_scrape_targets
    checked = active if jobs is None else [t for t in active if t.job in jobs]
    if jobs is None:
        source = "every active target: no expect_up declared"
        evidence.expect("scrape targets", len(active), at_least=1, source=source)
    else:
        source = f"expect_up at {evidence.source_of('targets', prometheus.name, 'expect_up')}"
        for job in jobs:
            count = sum(t.job == job for t in active)
            evidence.expect(f"job {job} scrape targets", count, at_least=1, source=source)
    down = [t for t in checked if t.health != "up"]
    for target in down:
        reason = f" ({target.last_error})" if target.last_error else ""
        evidence.expect(f"target {target.label}", f"{target.health}{reason}", equals="up",
                        source=source)
    evidence.note("targets up", len(checked) - len(down))
    evidence.expect("targets not up", len(down), at_most=0, source=source)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_no_unexpected_alert_firing(prometheus: PrometheusClient,
                                    prometheus_alerts: tuple[Alert, ...],
                                    evidence: EvidenceLog) -> None:
    """No alert fires unless its name is in ``allowed_alerts``."""
    allowed = set(prometheus.spec.allowed_alerts)
    where = evidence.source_of("targets", prometheus.name, "allowed_alerts")
    source = f"allowed_alerts at {where}" if allowed else "no allowed_alerts declared"
    alerts = prometheus_alerts
    firing = [a for a in alerts if a.state == "firing"]
    unexpected = [a for a in firing if a.name not in allowed]
    for alert in unexpected:
        evidence.expect(f"alert {alert.label}", f"firing since {alert.active_at}",
                        equals="not firing", source=source)
    for alert in firing:
        if alert.name in allowed:
            evidence.note(f"alert {alert.label} (allowed)", "firing")
    pending = sorted({a.name for a in alerts if a.state == "pending"})
    evidence.note("alerts pending", ", ".join(pending) or "none")
    evidence.expect("alerts firing outside allowed_alerts", len(unexpected), at_most=0,
                    unit="alerts", source=source)
