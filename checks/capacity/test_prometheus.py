"""Prometheus capacity: the declared ``queries:`` and each SLO's error budget and burn rate.

Every read is an instant query (``GET /api/v1/query``) evaluated at the probe's start, so
the windows of one SLO see the same moment. A query or window with nothing to judge is
"no data", an ERROR: an empty answer never passes.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify import slo
from opsverify.evidence import EvidenceLog
from opsverify.targets.prometheus_slo import NoData
from opsverify.thresholds import Threshold, Verdict

if TYPE_CHECKING:
    from opsverify.targets.prometheus import PrometheusClient
    from opsverify.targets.prometheus_slo import PromQuery, QueryAnswer, Slo, SloReading

BUDGET_LEFT = Threshold(warn=25, crit=0, direction="min")  # percent of the period's budget
INSTANT = "an instant vector or scalar"


@probe
def prometheus_query_answer(prometheus: PrometheusClient,
                            prometheus_query: PromQuery) -> QueryAnswer:
    return prometheus.query(prometheus_query.query, at=time.time())


@probe
def prometheus_slo_budget(prometheus: PrometheusClient, prometheus_slo: Slo) -> SloReading:
    """The SLO's errors and total over its whole period."""
    return prometheus.slo_reading(prometheus_slo, [prometheus_slo.period], at=time.time())


@probe
def prometheus_slo_burn(prometheus: PrometheusClient, prometheus_slo: Slo) -> SloReading:
    """The SLO's errors and total over each burn-rate window (5m to 3d)."""
    return prometheus.slo_reading(prometheus_slo, slo.WINDOWS, at=time.time())


@pytest.mark.daily
def test_query(prometheus: PrometheusClient, prometheus_query: PromQuery,
               prometheus_query_answer: QueryAnswer, evidence: EvidenceLog) -> None:
    """A declared query's value stays within its thresholds (``promql.<name>``).

    A query answering several series shows each and judges the worst (the highest for
    ``direction: above``, the lowest for ``below``); no series at all is no data.
    """
    declared, answer = prometheus_query, prometheus_query_answer
    index = prometheus.spec.queries.index(declared)
    source = f"queries at {evidence.source_of('targets', prometheus.name, 'queries', index)}"
    metric = f"promql.{declared.name}"
    evidence.note("query", declared.query)
    if answer.refused or answer.result_type not in ("vector", "scalar"):
        problem = answer.refused or f"answers a {answer.result_type}"
        evidence.expect(f"{metric} answer", problem, equals=INSTANT, source=source)
        return
    judged = [s for s in answer.series if not math.isnan(s.value)]
    if not judged:
        why = "every value is NaN" if answer.series else "the query returned no series"
        raise NoData(prometheus.name, prometheus.spec.address(),
                     f"query {declared.name}: no data ({why})")
    pick = max if declared.direction == "above" else min
    worst = pick(judged, key=lambda s: s.value)
    if len(judged) > 1:
        for series in judged:
            evidence.note(f"series {series.label}", series.value, unit=declared.unit)
        evidence.note("judged", f"the worst of {len(judged)} series, {worst.label}")
    evidence.within(metric, worst.value, unit=declared.unit, default=declared.threshold,
                    default_source=source)


@pytest.mark.daily
def test_error_budget(prometheus: PrometheusClient, prometheus_slo: Slo,
                      prometheus_slo_budget: SloReading, evidence: EvidenceLog) -> None:
    """Enough of the SLO's error budget is left over its period
    (``slo.budget_remaining_pct``: warn under 25 %, FAIL under 0 %)."""
    objective, reading = prometheus_slo, prometheus_slo_budget
    budget = slo.error_budget(objective.objective)
    minutes = slo.budget_minutes(objective.objective, objective.period_s)
    evidence.note("objective", f"{objective.objective:g} % over {objective.period}")
    evidence.note("error budget", f"{budget * 100:g} % of requests, "
                  f"{minutes:.1f} min of full outage per {objective.period}")
    if _refused(prometheus, objective, reading, evidence):
        return
    traffic = reading.traffic[objective.period]
    _note_traffic(evidence, objective.period, traffic)
    ratio = traffic.error_ratio
    if ratio is None:
        raise _no_traffic(prometheus, objective, [objective.period])
    remaining = slo.budget_remaining_pct(ratio, budget)
    evidence.note("slo.error_ratio_pct", ratio * 100, unit="%")
    evidence.note("budget left", f"{max(remaining, 0) * minutes / 100:.1f} min of full outage")
    evidence.within("slo.budget_remaining_pct", remaining, unit="%", default=BUDGET_LEFT)


@pytest.mark.daily
def test_burn_rate(prometheus: PrometheusClient, prometheus_slo: Slo,
                   prometheus_slo_burn: SloReading, evidence: EvidenceLog) -> None:
    """The SLO's budget does not burn fast: the SRE Workbook's multiwindow rules.

    For a 30d period: FAIL when burn(1h) and burn(5m) exceed 14.4, or burn(6h) and
    burn(30m) exceed 6; WARN when burn(1d) and burn(2h) exceed 3, or burn(3d) and burn(6h)
    exceed 1 (``share * period / window``: other periods scale). Each rule,
    ``slo.burn_rate_<long>_<short>``, judges the lower of its two burn rates; a window
    without traffic is no data (an ERROR, unless a page rule already fires).
    """
    objective, reading = prometheus_slo, prometheus_slo_burn
    evidence.note("objective", f"{objective.objective:g} % over {objective.period}")
    if _refused(prometheus, objective, reading, evidence):
        return
    budget = slo.error_budget(objective.objective)
    burns = {w: slo.burn_rate(reading.traffic[w], budget) for w in slo.WINDOWS}
    for window, burn in burns.items():
        if burn is None:
            evidence.note(f"slo.burn_rate_{window}", "no data: no traffic")
        else:
            evidence.note(f"slo.burn_rate_{window}", burn, unit="×")
    for rule in slo.RULES:
        value = rule.value(burns)
        if value is None:
            evidence.note(rule.threshold_id, "no data")
            continue
        factor = rule.factor(objective.period_s)
        default = Threshold(crit=factor) if rule.verdict is Verdict.FAIL else Threshold(
            warn=factor)
        evidence.within(rule.threshold_id, value, unit="×", default=default,
                        default_source=rule.describe(objective.period))
    missing = [w for w, burn in burns.items() if burn is None]
    if missing and evidence.verdict is not Verdict.FAIL:
        raise _no_traffic(prometheus, objective, missing)


def _refused(prometheus: PrometheusClient, objective: Slo, reading: SloReading,
             evidence: EvidenceLog) -> bool:
    """A query the server rejected (a PromQL mistake) is the check's FAIL, in one line."""
    if not reading.refused:
        return False
    index = prometheus.spec.slos.index(objective)
    where = evidence.source_of("targets", prometheus.name, "slos", index)
    evidence.expect(f"slo {objective.name} answer", reading.refused, equals=INSTANT,
                    source=f"slos at {where}")
    return True


def _note_traffic(evidence: EvidenceLog, window: str, traffic: slo.Traffic) -> None:
    for part, value in (("errors", traffic.errors), ("total", traffic.total)):
        evidence.note(f"{part} over {window}", "no series" if value is None else value)


def _no_traffic(prometheus: PrometheusClient, objective: Slo, windows: list[str]) -> NoData:
    where = ", ".join(windows)
    return NoData(prometheus.name, prometheus.spec.address(),
                  f"slo {objective.name}: no data: no traffic over {where} "
                  "(its total is 0 or returned no series)")
