"""The SLO arithmetic (opsverify/slo.py), the prometheus target's queries: and slos: schema,
and the seeded request history, against values worked out by hand."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify import slo
from opsverify.sandbox.prometheus_history import (
    RequestHistory,
    Stretch,
    continuation_rules,
    openmetrics,
    sample_ages,
)
from opsverify.targets.prometheus import PrometheusTarget
from opsverify.targets.prometheus_slo import PromQuery, QueryAnswer, Series, Slo
from opsverify.thresholds import Verdict

DAY, HOUR = 86400.0, 3600.0
ERRORS = 'sum(rate(http_requests_total{code=~"5.."}[$window]))'
TOTAL = "sum(rate(http_requests_total[$window]))"


# -- durations and windows -----------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("5m", 300), ("30d", 30 * DAY), ("1h30m", 5400), ("4w", 28 * DAY), ("500ms", 0.5),
    ("1y", 365 * DAY), ("2d12h", 2.5 * DAY),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert slo.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "1.5h", "30 d", "-1h", "0s", "1hour"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a"):
        slo.parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (300, "5m"), (3 * DAY, "3d"), (5400, "1h30m"), (30 * DAY, "30d"), (0.25, "250ms"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert slo.format_duration(seconds) == text


def test_windows_are_the_workbooks_shortest_first() -> None:
    assert slo.WINDOWS == ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    assert [(r.long, r.short) for r in slo.RULES] == [
        ("1h", "5m"), ("6h", "30m"), ("1d", "2h"), ("3d", "6h")]
    # Each short window is 1/12 of its long one.
    assert all(slo.parse_duration(r.long) == 12 * slo.parse_duration(r.short)
               for r in slo.RULES)


# -- factors: share of the budget x period / long window -----------------------------------
def test_factors_for_30_days_are_the_workbooks() -> None:
    period = 30 * DAY
    # 2 % x 720 h / 1 h, 5 % x 720 h / 6 h, 10 % x 720 h / 24 h, 10 % x 720 h / 72 h
    assert [r.factor(period) for r in slo.RULES] == pytest.approx([14.4, 6, 3, 1])
    assert [r.verdict for r in slo.RULES] == [Verdict.FAIL, Verdict.FAIL, Verdict.WARN,
                                              Verdict.WARN]
    assert [r.threshold_id for r in slo.RULES] == [
        "slo.burn_rate_1h_5m", "slo.burn_rate_6h_30m", "slo.burn_rate_1d_2h",
        "slo.burn_rate_3d_6h"]
    assert slo.RULES[0].describe("30d") == "SRE Workbook: 2 % of the 30d budget in 1h"


def test_factors_scale_with_the_period() -> None:
    # 28 days = 672 h: 0.02 x 672 = 13.44, 0.05 x 672 / 6 = 5.6, 0.1 x 672 / 24 = 2.8,
    # 0.1 x 672 / 72 = 0.9333; a week: 0.02 x 168 = 3.36.
    assert [r.factor(28 * DAY) for r in slo.RULES] == pytest.approx([13.44, 5.6, 2.8, 0.93333],
                                                                   rel=1e-4)
    assert slo.RULES[0].factor(7 * DAY) == pytest.approx(3.36)


# -- budget and burn rates -----------------------------------------------------------------
def test_error_budget_of_tekutokos_slo() -> None:
    assert slo.error_budget(99.9) == pytest.approx(0.001)
    assert slo.error_budget(99.0) == pytest.approx(0.01)
    # TekuToko's runbook: 0.1 % of 30 days = 43.2 minutes of downtime.
    assert slo.budget_minutes(99.9, 30 * DAY) == pytest.approx(43.2)


@pytest.mark.parametrize(("errors", "total", "ratio", "burn", "remaining"), [
    (0.001, 10.0, 0.0001, 0.1, 90.0),  # 0.01 % errors: a tenth of the budget
    (0.01, 10.0, 0.001, 1.0, 0.0),  # exactly the budget
    (2.0, 10.0, 0.2, 200.0, -19900.0),  # 20 % errors
    (None, 10.0, 0.0, 0.0, 100.0),  # no 5xx series at all: no errors, not no data
])
def test_ratio_burn_and_budget_left(errors: float | None, total: float, ratio: float,
                                    burn: float, remaining: float) -> None:
    traffic = slo.Traffic(errors, total)
    assert traffic.has_traffic
    assert traffic.error_ratio == pytest.approx(ratio)
    assert slo.burn_rate(traffic, slo.error_budget(99.9)) == pytest.approx(burn)
    assert slo.budget_remaining_pct(ratio, slo.error_budget(99.9)) == pytest.approx(
        remaining, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("traffic", [
    slo.Traffic(None, None),  # no series at all
    slo.Traffic(0.0, 0.0),  # counters that did not move
    slo.Traffic(None, float("nan")),
])
def test_no_traffic_is_no_data(traffic: slo.Traffic) -> None:
    assert not traffic.has_traffic
    assert traffic.error_ratio is None
    assert slo.burn_rate(traffic, 0.001) is None


# -- verdicts ------------------------------------------------------------------------------
def burns(**by_window: float | None) -> dict[str, float | None]:
    """Burn rates of every window, 0.1 (healthy) unless given (``h1=`` for 1h...)."""
    names = {"m5": "5m", "m30": "30m", "h1": "1h", "h2": "2h", "h6": "6h", "d1": "1d",
             "d3": "3d"}
    rates: dict[str, float | None] = dict.fromkeys(slo.WINDOWS, 0.1)
    rates.update({names[k]: v for k, v in by_window.items()})
    return rates


@pytest.mark.parametrize(("rates", "expected"), [
    (burns(), Verdict.PASS),
    # Page: both windows of a pair past the factor.
    (burns(h1=15, m5=15), Verdict.FAIL),
    (burns(h6=6.1, m30=7), Verdict.FAIL),
    # Only one window of the pair: a spike that ended (5m calm) or just began (1h calm).
    (burns(h1=15, m5=2), Verdict.PASS),
    (burns(h1=2, m5=50), Verdict.PASS),
    (burns(h1=14.4, m5=14.4), Verdict.PASS),  # "more than", not "at least"
    # Ticket.
    (burns(d1=3.5, h2=4), Verdict.WARN),
    (burns(d3=1.2, h6=1.1), Verdict.WARN),
    (burns(d3=1.2, h6=0.9), Verdict.PASS),
    # A window without traffic: no data, unless a page rule fires on the others.
    (burns(m5=None), None),
    (burns(d3=None, h1=20, m5=20), Verdict.FAIL),
    (burns(m5=None, d1=4, h2=4), None),  # the page rule could not be evaluated
])
def test_verdict(rates: dict[str, float | None], expected: Verdict | None) -> None:
    assert slo.verdict(rates, 30 * DAY) == expected


def test_rule_value_is_the_lower_window() -> None:
    rule = slo.RULES[0]
    assert rule.value(burns(h1=20, m5=16)) == 16
    assert rule.value(burns(h1=None)) is None


def test_a_shorter_period_pages_sooner() -> None:
    # 7 days: page at 3.36 (0.02 x 168 h / 1 h).
    assert slo.verdict(burns(h1=4, m5=4), 7 * DAY) is Verdict.FAIL
    assert slo.verdict(burns(h1=4, m5=4), 30 * DAY) is Verdict.PASS  # 14.4 for 30 days


# -- schema --------------------------------------------------------------------------------
def target(**keys: Any) -> PrometheusTarget:
    return PrometheusTarget(type="prometheus", url="http://prom:9090", **keys)


def test_schema_defaults_and_substitution() -> None:
    spec = target(
        queries=[{"name": "error_rate", "query": "up", "thresholds": {"warn": 1, "crit": 5}}],
        slos=[{"name": "api-availability", "objective": 99.9, "errors": ERRORS,
               "total": TOTAL}])
    query, objective = spec.queries[0], spec.slos[0]
    assert query.direction == "above"
    assert (query.threshold.warn, query.threshold.crit, query.threshold.direction) == (
        1, 5, "max")
    assert objective.period == "30d"
    assert objective.period_s == 30 * DAY
    assert objective.promql("errors", "5m") == 'sum(rate(http_requests_total{code=~"5.."}[5m]))'
    assert objective.promql("total", "3d") == "sum(rate(http_requests_total[3d]))"
    below = PromQuery(name="rps", query="x", thresholds={"warn": 10, "crit": 2},
                      direction="below")
    assert below.threshold.direction == "min"


@pytest.mark.parametrize(("keys", "error"), [
    ({"slos": [{"name": "a", "objective": 99.9, "errors": "sum(rate(x[5m]))",
                "total": TOTAL}]}, r"write \$window where the range goes"),
    ({"slos": [{"name": "a", "objective": 99.9, "period": "1d", "errors": ERRORS,
                "total": TOTAL}]}, "shorter than 3d, the longest burn-rate window"),
    ({"slos": [{"name": "a", "objective": 99.9, "period": "30 days", "errors": ERRORS,
                "total": TOTAL}]}, "not a duration"),
    ({"slos": [{"name": "a", "objective": 100, "errors": ERRORS, "total": TOTAL}]},
     "less than 100"),
    ({"slos": [{"name": "a", "objective": 99, "errors": ERRORS, "total": TOTAL}] * 2},
     "slos names must be unique: a"),
    ({"queries": [{"name": "q", "query": "up", "thresholds": {"warn": 1, "crit": 5}}] * 2},
     "queries names must be unique: q"),
    ({"queries": [{"name": "q", "query": "up", "thresholds": {"warn": 5, "crit": 1}}]},
     "direction above: warn must be at most crit"),
    ({"queries": [{"name": "q", "query": "up", "thresholds": {"warn": 1, "crit": 5},
                   "direction": "below"}]}, "direction below: warn must be at least crit"),
    ({"queries": [{"name": "q", "query": "up", "thresholds": {}}]}, "give warn, crit or both"),
    ({"queries": [{"name": "q", "query": "up", "thresholds": {"crit": 1},
                   "direction": "over"}]}, "'above' or 'below'"),
    ({"queries": [{"name": "Error Rate", "query": "up", "thresholds": {"crit": 1}}]},
     "should match pattern"),
])
def test_schema_rejects(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        target(**keys)


def test_answer_totals_and_labels() -> None:
    answer = QueryAnswer("vector", (Series({"code": "500", "job": "api"}, 1.5),
                                    Series({"code": "503", "job": "api"}, 0.5),
                                    Series({}, float("nan"))))
    assert answer.total() == 2.0
    assert QueryAnswer("vector").total() is None
    assert QueryAnswer("vector", (Series({}, float("nan")),)).total() is None
    assert answer.series[0].label == '{code="500", job="api"}'
    assert Series({"__name__": "up", "job": "api"}, 1).label == 'up{job="api"}'


def test_slo_model_is_immutable() -> None:
    objective = Slo(name="a", objective=99.9, errors=ERRORS, total=TOTAL)
    with pytest.raises(ValidationError):
        objective.objective = 99.0  # type: ignore[misc]


# -- the seeded history --------------------------------------------------------------------
def test_sample_ages_thin_out_with_age() -> None:
    ages = sample_ages(30 * DAY)
    assert ages[0] == 30 * DAY
    assert ages[-1] == 0
    assert ages == sorted(ages, reverse=True)
    steps = {round(a - b) for a, b in itertools.pairwise(ages)}
    assert steps == {15, 300, 3600}
    # 6 h at 15 s, 6 h to 4 d at 5 min, then hourly: about 3,100 samples, not 172,800.
    assert len(ages) == 1440 + 1080 + 624 + 1
    assert {2 * HOUR, 36 * HOUR, 10 * DAY} <= set(ages)  # the tests' stretch boundaries


def test_counters_integrate_the_stretches() -> None:
    history = RequestHistory("api", (Stretch(DAY, 0.0001), Stretch(2 * HOUR, 0.2)))
    assert history.counters(history.span_s) == (0.0, 0.0)
    ok, errors = history.counters(2 * HOUR)  # after one day at 10 requests/s
    assert ok == pytest.approx(86400 * 10 * 0.9999)
    assert errors == pytest.approx(86400 * 10 * 0.0001)
    ok_end, errors_end = history.counters(0)
    assert errors_end - errors == pytest.approx(7200 * 10 * 0.2)
    assert ok_end - ok == pytest.approx(7200 * 10 * 0.8)


def test_openmetrics_text() -> None:
    history = RequestHistory("api", (Stretch(HOUR, 0.5, rate=2),))
    lines = list(openmetrics([history], now=1_000_000.0))
    assert lines[:2] == ["# HELP http_requests HTTP requests by status code (a seeded history).",
                         "# TYPE http_requests counter"]
    assert lines[-1] == "# EOF"
    assert lines[2] == 'http_requests_total{code="200",job="api"} 0 996400.000'
    assert 'http_requests_total{code="500",job="api"} 3600 1000000.000' in lines
    assert len(lines) == 2 * 241 + 3
    # A job without errors has no 5xx series, as a real exporter would.
    clean = list(openmetrics([RequestHistory("web", (Stretch(HOUR, 0.0),))], now=1e6))
    assert not any('code="500"' in line for line in clean)


def test_continuation_rules_go_on_at_the_last_stretchs_rates() -> None:
    history = RequestHistory("api", (Stretch(HOUR, 0.0), Stretch(HOUR, 0.25, rate=4)))
    rules = continuation_rules([history], now=1_000_000.5)
    # 3600 x 10 + 3600 x 4 x 0.75 = 46800 answered 200, 3600 x 4 x 0.25 = 3600 failed.
    assert rules == [
        {"record": "http_requests_total", "expr": "vector(46800.0 + (time() - 1000000.5) * 3.0)",
         "labels": {"job": "api", "code": "200"}},
        {"record": "http_requests_total", "expr": "vector(3600.0 + (time() - 1000000.5) * 1.0)",
         "labels": {"job": "api", "code": "500"}},
    ]
    assert len(continuation_rules([RequestHistory("web", (Stretch(HOUR, 0.0),))], 0)) == 1
