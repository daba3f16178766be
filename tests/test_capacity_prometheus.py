"""checks/capacity/test_prometheus.py against a real Prometheus whose TSDB was backfilled
with ``promtool tsdb create-blocks-from openmetrics``: the declared queries, and each SLO's
error budget and burn rates, compared with values worked out by hand from the histories.

Every history below runs 30 days at 10 requests a second up to the server's start, and
goes on at its last stretch's rates (recording rules); the checks evaluate seconds later.
A window wholly inside one stretch is exact; one that spans stretches starts a little
later than the hand computation's (by the seconds since the start, and up to one sample
interval: 15 s to 1 h, older samples being sparser), hence the tolerances.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.process import wait_until
from opsverify.sandbox.prometheus import PrometheusServer
from opsverify.sandbox.prometheus_history import RequestHistory, Stretch
from opsverify.sandbox.spec import PrometheusComponent
from opsverify.targets.prometheus import PrometheusClient, PrometheusTarget
from tests.conftest import (
    PYPROJECT,
    ROOT,
    Project,
    Result,
    outcomes,
    running,
    sandbox_subset,
)

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus not found (apt-get install prometheus)")
pytestmark = needs_prometheus

DAY, HOUR = 86400.0, 3600.0
MONTH = 30 * DAY
BUDGET = 0.001  # 99.9 %
CHECK = "checks/capacity/test_prometheus.py"

# job -> its history, oldest stretch first (seconds, share of 5xx; 10 requests a second).
HISTORIES = {
    "healthy": [(MONTH, 0.0001)],
    "burning": [(MONTH - 2 * HOUR, 0.0001), (2 * HOUR, 0.2)],  # 20 % 5xx for 2 h
    "slow": [(MONTH - 36 * HOUR, 0.0001), (36 * HOUR, 0.005)],  # 0.5 % for 1.5 days
    "spent": [(10 * DAY, 0.0001), (10 * DAY, 0.003), (10 * DAY, 0.0001)],  # old incident
    "thin": [(MONTH, 0.0008)],  # 0.08 %: most of the budget, slowly
    "perfect": [(MONTH, 0.0)],  # never a 5xx: no 5xx series at all
}


def history(job: str) -> RequestHistory:
    return RequestHistory(job, tuple(Stretch(s, share) for s, share in HISTORIES[job]))


# The service behind "quiet" stopped getting requests an hour ago (its counters stand still).
QUIET = RequestHistory("quiet", (Stretch(MONTH - HOUR, 0.0001), Stretch(HOUR, 0.0001, rate=0)))


@pytest.fixture(scope="module")
def prometheus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """One real Prometheus holding every history above, started once for the module."""
    ctx = SandboxContext(tmp_path_factory.mktemp("prometheus"), "unused", frozenset())
    server = PrometheusServer(PrometheusComponent(), ctx)
    server.history = [*(history(job) for job in HISTORIES), QUIET]
    yield from running(server)


@pytest.fixture(scope="module")
def prometheus_url(prometheus_server: PrometheusServer) -> str:
    return prometheus_server.url


def slo(name: str, job: str, period: str = "30d") -> dict[str, Any]:
    return {"name": name, "objective": 99.9, "period": period,
            "errors": f'sum(rate(http_requests_total{{job="{job}",code=~"5.."}}[$window]))',
            "total": f'sum(rate(http_requests_total{{job="{job}"}}[$window]))'}


def error_pct(job: str) -> str:
    return (f'100 * sum(rate(http_requests_total{{job="{job}",code="500"}}[5m]))'
            f' / sum(rate(http_requests_total{{job="{job}"}}[5m]))')


QUERIES: list[dict[str, Any]] = [
    {"name": "burning_error_pct", "query": error_pct("burning"), "unit": "%",
     "thresholds": {"warn": 1, "crit": 5}},
    {"name": "healthy_error_pct", "query": error_pct("healthy"), "unit": "%",
     "thresholds": {"warn": 1, "crit": 5}},
    {"name": "slow_error_pct", "query": error_pct("slow"), "unit": "%",
     "thresholds": {"warn": 0.1, "crit": 1}},
    # Fewer requests than expected is what is bad here.
    {"name": "healthy_rps", "query": 'sum(rate(http_requests_total{job="healthy"}[5m]))',
     "unit": "req/s", "thresholds": {"warn": 50, "crit": 20}, "direction": "below"},
    {"name": "healthy_rps_scalar",
     "query": 'scalar(sum(rate(http_requests_total{job="healthy"}[5m])))',
     "unit": "req/s", "thresholds": {"warn": 5, "crit": 1}, "direction": "below"},
    # One series a job: the worst is judged.
    {"name": "errors_by_job", "query": 'sum by (job) (rate(http_requests_total{code="500"}[5m]))',
     "unit": "req/s", "thresholds": {"warn": 0.5, "crit": 1}},
    {"name": "missing", "query": 'sum(rate(http_requests_total{job="missing"}[5m]))',
     "thresholds": {"crit": 1}},
    {"name": "quiet_error_pct", "query": error_pct("quiet"), "thresholds": {"crit": 1}},
    {"name": "typo", "query": "sum(rate(http_requests_total[5m])", "thresholds": {"crit": 1}},
    {"name": "range", "query": 'http_requests_total{job="healthy"}[5m]',
     "thresholds": {"crit": 1}},
]
SLOS = [slo(job, job) for job in HISTORIES] + [
    slo("quiet", "quiet"), slo("missing", "missing"), slo("burning-28d", "burning", "28d"),
    {**slo("typo", "healthy"), "total": "sum(rate(http_requests_total[$window])"},
]


def env_text(url: str) -> str:
    return yaml.safe_dump({"settings": {"timeout_s": 5}, "targets": {"prom": {
        "type": "prometheus", "url": url, "queries": QUERIES, "slos": SLOS}}}, sort_keys=False)


@pytest.fixture(scope="module")
def run(prometheus_url: str, tmp_path_factory: pytest.TempPathFactory,
        ) -> tuple[Result, dict[str, Any]]:
    """The capacity checks run once against the backfilled server, as a user runs them."""
    root = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "conftest.py", root / "conftest.py")
    (root / "pyproject.toml").write_text(PYPROJECT)
    project = Project(root)
    project.copy_check(CHECK)
    return project.run_checks("backfilled", env_text(prometheus_url))


def values(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"]}


def measurement(check: dict[str, Any], name: str) -> dict[str, Any]:
    found = [m for m in check["evidence"] if m["name"] == name]
    assert found, (name, check["evidence"])
    return found[0]


def burn_rates(check: dict[str, Any]) -> dict[str, Any]:
    got = values(check)
    return {w: got[f"slo.burn_rate_{w}"] for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")}


# -- burn rates, worked out by hand (errors / total / budget) -----------------------------
def test_healthy_history_passes_with_a_tenth_of_the_budget_spent(
        run: tuple[Result, dict[str, Any]]) -> None:
    result, checks = run
    burn = checks["test_burn_rate[prom:healthy]"]
    assert burn["outcome"] == "PASS", result.output
    # 0.01 % errors / 0.1 % budget = 0.1 in every window.
    assert burn_rates(burn) == pytest.approx(dict.fromkeys(burn_rates(burn), 0.1), rel=1e-4)
    budget = checks["test_error_budget[prom:healthy]"]
    assert budget["outcome"] == "PASS"
    remaining = measurement(budget, "slo.budget_remaining_pct")
    assert remaining["value"] == pytest.approx(90.0, abs=1e-6)
    assert remaining["expected"] == "≥ 0 %"
    assert values(budget)["slo.error_ratio_pct"] == pytest.approx(0.01, rel=1e-4)
    assert values(budget)["error budget"] == (
        "0.1 % of requests, 43.2 min of full outage per 30d")


def test_fast_burn_pages_on_1h_and_5m(run: tuple[Result, dict[str, Any]]) -> None:
    result, checks = run
    burn = checks["test_burn_rate[prom:burning]"]
    assert burn["outcome"] == "FAIL", result.output
    # 5m to 2h lie inside the 2 h at 20 %: 0.2 / 0.001 = 200. 6h: 2 h at 0.2 and 4 h at
    # 0.0001, (0.4 + 0.0004) / 6 / 0.001 = 66.73; 1d: (0.4 + 22 x 0.0001) / 24 / 0.001 =
    # 16.76; 3d: (0.4 + 70 x 0.0001) / 72 / 0.001 = 5.65.
    assert burn_rates(burn) == pytest.approx(
        {"5m": 200, "30m": 200, "1h": 200, "2h": 200, "6h": 66.733, "1d": 16.758,
         "3d": 5.6528}, rel=1e-2)
    failing = {m["name"]: m for m in burn["evidence"] if m["verdict"] == "FAIL"}
    assert set(failing) == {"slo.burn_rate_1h_5m", "slo.burn_rate_6h_30m"}
    page = failing["slo.burn_rate_1h_5m"]
    assert page["value"] == pytest.approx(200, rel=1e-4)  # the lower of burn(1h), burn(5m)
    assert page["expected"] == "≤ 14.4 ×"
    assert page["source"] == "crit from SRE Workbook: 2 % of the 30d budget in 1h"
    assert failing["slo.burn_rate_6h_30m"]["expected"] == "≤ 6 ×"
    # The ticket rules fire too (16.76 > 3, 5.65 > 1); the page is what the check says.
    assert measurement(burn, "slo.burn_rate_1d_2h")["verdict"] == "WARN"
    assert measurement(burn, "slo.burn_rate_3d_6h")["value"] == pytest.approx(5.6528, rel=1e-2)
    assert re.search(r"prom: slo\.burn_rate_1h_5m = 200(\.0)? ×, expected ≤ 14\.4 × \(crit "
                     r"from SRE Workbook: 2 % of the 30d budget in 1h\) → FAIL", result.output)
    # 2 h at 20 % spent 2 x 0.2 / (720 x 0.001) = 55.6 % of the month's budget and the rest
    # 718 x 0.0001 / 0.72 = 10 %: (1 - (0.4 + 0.0718) / 720 / 0.001) x 100 = 34.5 % left.
    budget = checks["test_error_budget[prom:burning]"]
    assert budget["outcome"] == "PASS"
    assert values(budget)["slo.budget_remaining_pct"] == pytest.approx(34.47, abs=0.3)


def test_slow_burn_warns(run: tuple[Result, dict[str, Any]]) -> None:
    result, checks = run
    burn = checks["test_burn_rate[prom:slow]"]
    assert burn["outcome"] == "WARN", result.output
    # 0.5 % / 0.1 % = 5 up to 1d; 3d: (36 h x 0.005 + 36 h x 0.0001) / 72 h / 0.001 = 2.55.
    assert burn_rates(burn) == pytest.approx(
        {"5m": 5, "30m": 5, "1h": 5, "2h": 5, "6h": 5, "1d": 5, "3d": 2.55}, rel=1e-2)
    verdicts = {m["name"]: m["verdict"] for m in burn["evidence"]
                if m["name"].count("_") == 3}  # the rules, slo.burn_rate_<long>_<short>
    assert verdicts == {"slo.burn_rate_1h_5m": "PASS", "slo.burn_rate_6h_30m": "PASS",
                        "slo.burn_rate_1d_2h": "WARN", "slo.burn_rate_3d_6h": "WARN"}
    assert measurement(burn, "slo.burn_rate_1d_2h")["expected"] == "≤ 3 ×"
    # (0.18 + 684 x 0.0001) / 720 / 0.001 = 34.5 % spent.
    budget = checks["test_error_budget[prom:slow]"]
    assert values(budget)["slo.budget_remaining_pct"] == pytest.approx(65.5, abs=0.3)


def test_spent_budget_fails_and_thin_budget_warns(run: tuple[Result, dict[str, Any]]) -> None:
    result, checks = run
    # Ten days at 0.3 % between 20 and 10 days ago: (10 x 0.0001 + 10 x 0.003 + 10 x
    # 0.0001) / 30 = 0.10667 %, more than the 0.1 % budget: -6.7 % left. Burning now: no.
    spent = checks["test_error_budget[prom:spent]"]
    assert spent["outcome"] == "FAIL", result.output
    remaining = measurement(spent, "slo.budget_remaining_pct")
    assert remaining["value"] == pytest.approx(-6.67, abs=0.3)
    assert remaining["verdict"] == "FAIL"
    assert checks["test_burn_rate[prom:spent]"]["outcome"] == "PASS"
    # 0.08 % of 0.1 %: 20 % left, under the warn line of 25 %; burning at 0.8: no rule.
    thin = checks["test_error_budget[prom:thin]"]
    assert thin["outcome"] == "WARN"
    assert values(thin)["slo.budget_remaining_pct"] == pytest.approx(20.0, abs=1e-3)
    assert measurement(thin, "slo.budget_remaining_pct")["expected"] == "≥ 25 %"
    assert checks["test_burn_rate[prom:thin]"]["outcome"] == "PASS"
    assert burn_rates(checks["test_burn_rate[prom:thin]"])["3d"] == pytest.approx(0.8)


def test_no_5xx_series_is_no_errors(run: tuple[Result, dict[str, Any]]) -> None:
    _, checks = run
    budget = checks["test_error_budget[prom:perfect]"]
    assert budget["outcome"] == "PASS"
    assert values(budget)["errors over 30d"] == "no series"
    assert values(budget)["slo.budget_remaining_pct"] == 100
    assert set(burn_rates(checks["test_burn_rate[prom:perfect]"]).values()) == {0}


def test_other_periods_scale_the_factors(run: tuple[Result, dict[str, Any]]) -> None:
    _, checks = run
    burn = checks["test_burn_rate[prom:burning-28d]"]
    assert burn["outcome"] == "FAIL"
    # 2 % x 672 h / 1 h = 13.44; 10 % x 672 h / 72 h = 0.933.
    assert measurement(burn, "slo.burn_rate_1h_5m")["expected"] == "≤ 13.4 ×"
    assert measurement(burn, "slo.burn_rate_1h_5m")["source"] == (
        "crit from SRE Workbook: 2 % of the 28d budget in 1h")
    assert measurement(burn, "slo.burn_rate_3d_6h")["expected"] == "≤ 0.933 ×"
    # (0.4 + 670 x 0.0001) / 672 / 0.001 = 69.5 % spent over 28 days.
    budget = checks["test_error_budget[prom:burning-28d]"]
    assert values(budget)["slo.budget_remaining_pct"] == pytest.approx(30.5, abs=0.3)
    assert values(budget)["error budget"] == (
        "0.1 % of requests, 40.3 min of full outage per 28d")


def test_no_traffic_is_no_data_never_a_pass(run: tuple[Result, dict[str, Any]]) -> None:
    result, checks = run
    # No requests for an hour: 5m, 30m and 1h have nothing to divide by.
    quiet = checks["test_burn_rate[prom:quiet]"]
    assert quiet["outcome"] == "ERROR", result.output
    assert quiet["message"] == (
        f"prom ({prom_address(result)}): slo quiet: no data: no traffic over 5m, 30m, 1h "
        "(its total is 0 or returned no series)")
    assert values(quiet)["slo.burn_rate_5m"] == "no data: no traffic"
    assert values(quiet)["slo.burn_rate_1h_5m"] == "no data"
    assert values(quiet)["slo.burn_rate_2h"] == pytest.approx(0.1, rel=1e-4)
    # The month still had traffic: the budget is judged.
    assert checks["test_error_budget[prom:quiet]"]["outcome"] == "PASS"
    # A selector that matches nothing: both checks, no data.
    for test in ("test_burn_rate", "test_error_budget"):
        missing = checks[f"{test}[prom:missing]"]
        assert missing["outcome"] == "ERROR"
        assert "slo missing: no data: no traffic over " in missing["message"]
        assert f"ERROR checks/capacity/test_prometheus.py::{test}[prom:missing]" in result.output


def test_a_promql_mistake_in_an_slo_is_one_failing_line(
        run: tuple[Result, dict[str, Any]]) -> None:
    result, checks = run
    for test in ("test_burn_rate", "test_error_budget"):
        check = checks[f"{test}[prom:typo]"]
        assert check["outcome"] == "FAIL"
        failing = [m for m in check["evidence"] if m["verdict"] == "FAIL"]
        assert [m["name"] for m in failing] == ["slo typo answer"]
        assert failing[0]["value"].startswith("total over ")
        assert "bad_data: " in failing[0]["value"]
        assert "parse error" in failing[0]["value"]
        assert failing[0]["source"].startswith("slos at environments/backfilled.yaml:")
    assert "Traceback" not in result.output


# -- declared queries ---------------------------------------------------------------------
def test_queries_are_judged_against_their_thresholds(run: tuple[Result, dict[str, Any]]) -> None:
    result, checks = run
    assert outcomes({k: v for k, v in checks.items() if k.startswith("test_query")}) == {
        "test_query[prom:burning_error_pct]": "FAIL",
        "test_query[prom:healthy_error_pct]": "PASS",
        "test_query[prom:slow_error_pct]": "WARN",
        "test_query[prom:healthy_rps]": "FAIL",
        "test_query[prom:healthy_rps_scalar]": "PASS",
        "test_query[prom:errors_by_job]": "FAIL",
        "test_query[prom:missing]": "ERROR",
        "test_query[prom:quiet_error_pct]": "ERROR",
        "test_query[prom:typo]": "FAIL",
        "test_query[prom:range]": "FAIL",
    }, result.output
    over = measurement(checks["test_query[prom:burning_error_pct]"], "promql.burning_error_pct")
    assert over["value"] == pytest.approx(20.0, rel=1e-4)  # 20 % of the last 5 minutes
    assert over["expected"] == "≤ 5 %"
    assert over["source"].startswith("crit from queries at environments/backfilled.yaml:")
    under = measurement(checks["test_query[prom:healthy_error_pct]"], "promql.healthy_error_pct")
    assert under["value"] == pytest.approx(0.01, rel=1e-4)
    slow = measurement(checks["test_query[prom:slow_error_pct]"], "promql.slow_error_pct")
    assert (slow["verdict"], slow["expected"]) == ("WARN", "≤ 0.1 %")
    # direction: below; 10 requests a second is under the crit line of 20.
    rps = measurement(checks["test_query[prom:healthy_rps]"], "promql.healthy_rps")
    assert rps["value"] == pytest.approx(10.0, rel=1e-4)
    assert (rps["verdict"], rps["expected"]) == ("FAIL", "≥ 20 req/s")
    assert values(checks["test_query[prom:healthy_rps_scalar]"])[
        "promql.healthy_rps_scalar"] == pytest.approx(10.0, rel=1e-4)


def test_several_series_show_each_and_judge_the_worst(
        run: tuple[Result, dict[str, Any]]) -> None:
    _, checks = run
    check = checks["test_query[prom:errors_by_job]"]
    got = values(check)
    # 10 requests a second times each job's share of 5xx now ("perfect" has no 5xx series).
    assert got['series {job="burning"}'] == pytest.approx(2.0, rel=1e-4)
    assert got['series {job="slow"}'] == pytest.approx(0.05, rel=1e-4)
    assert got['series {job="healthy"}'] == pytest.approx(0.001, rel=1e-4)
    assert got['series {job="quiet"}'] == 0
    assert not any("perfect" in name for name in got)
    assert got["judged"] == 'the worst of 6 series, {job="burning"}'
    assert got["promql.errors_by_job"] == pytest.approx(2.0, rel=1e-4)


def test_nothing_to_judge_is_an_error_and_a_bad_query_a_failure(
        run: tuple[Result, dict[str, Any]]) -> None:
    result, checks = run
    address = prom_address(result)
    assert checks["test_query[prom:missing]"]["message"] == (
        f"prom ({address}): query missing: no data (the query returned no series)")
    # 0 / 0 requests: NaN, which no threshold can judge.
    assert checks["test_query[prom:quiet_error_pct]"]["message"] == (
        f"prom ({address}): query quiet_error_pct: no data (every value is NaN)")
    typo = measurement(checks["test_query[prom:typo]"], "promql.typo answer")
    assert typo["verdict"] == "FAIL"
    assert typo["value"].startswith("bad_data: ")
    assert "\n" not in typo["value"]
    assert typo["expected"] == "= 'an instant vector or scalar'"
    ranged = measurement(checks["test_query[prom:range]"], "promql.range answer")
    assert ranged["value"] == "answers a matrix"
    assert "Traceback" not in result.output


def test_history_keeps_each_window_and_rule(run: tuple[Result, dict[str, Any]]) -> None:
    """The run history gets every burn rate and budget, item = the SLO's name."""
    result, _ = run
    history_lines = [json.loads(line) for line in history_file(result).read_text().splitlines()]
    metrics = {(h["metric"], h["item"]) for h in history_lines}
    assert ("slo.burn_rate_5m", "healthy") in metrics
    assert ("slo.burn_rate_1h_5m", "burning") in metrics
    assert ("slo.budget_remaining_pct", "spent") in metrics
    assert ("promql.burning_error_pct", "burning_error_pct") in metrics


def prom_address(result: Result) -> str:
    found = re.search(r"prom \((http://127\.0\.0\.1:\d+)\)", result.output)
    assert found, result.output
    return found.group(1)


def history_file(result: Result) -> Path:
    found = re.search(r"history: \d+ readings added to (\S+)", result.output)
    assert found, result.output
    return Path(found.group(1))


def test_the_seeded_counters_go_on_after_the_backfill(
        prometheus_server: PrometheusServer) -> None:
    """Recording rules continue each history from its last sample: a 5m window is never
    left empty by a run that lasts longer than 5 minutes."""
    # A deadline under a second is handed to the server as it reads one: 0.5 (seconds).
    client = PrometheusClient("prom", PrometheusTarget(type="prometheus",
                                                       url=prometheus_server.url), 0.5)
    try:
        assert client.query("vector(1)", at=time.time()).series[0].value == 1
        def newest() -> float:
            answer = client.query('max(timestamp(http_requests_total{job="burning"}))',
                                  at=time.time())
            return answer.series[0].value
        # The rules' first evaluation comes within their 15 s interval of the start.
        wait_until(lambda: newest() > prometheus_server.seeded_at, timeout_s=30,
                   what="a sample written by the continuation rules")
        at = time.time()
        # Still 20 % 5xx, as in the last stretch, in the minute after the backfill's end.
        after = prometheus_server.seeded_at + 60
        share = client.query('sum(increase(http_requests_total{job="burning",code="500"}[1m]))'
                             ' / sum(increase(http_requests_total{job="burning"}[1m]))',
                             at=min(at, after))
        assert share.series[0].value == pytest.approx(0.2, rel=1e-4)
    finally:
        client.close()


# -- a query past its deadline ------------------------------------------------------------
class _HangingQueries(BaseHTTPRequestHandler):
    """Answers /-/healthy like Prometheus and never answers a query."""

    def do_GET(self) -> None:
        if self.path.startswith("/-/healthy"):
            body = b"Prometheus Server is Healthy.\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        threading.Event().wait(10)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_hung_query_costs_one_deadline(project: Project) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HangingQueries)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        project.copy_check(CHECK)
        url = f"http://127.0.0.1:{server.server_address[1]}"
        env = f"""
settings: {{timeout_s: 1}}
targets:
  slow-prom:
    type: prometheus
    url: {url}
    queries: [{{name: q, query: up, thresholds: {{crit: 1}}}}]
    slos: [{{name: a, objective: 99.9, errors: 'sum(rate(x[$window]))',
             total: 'sum(rate(y[$window]))'}}]
"""
        result, checks = project.run_checks("hung", env)
    finally:
        server.shutdown()
        server.server_close()
    assert set(outcomes(checks).values()) == {"ERROR"}, result.output
    for check in checks.values():
        assert check["message"].endswith("no answer within 1 s"), check["message"]
    assert result.duration_s < 30


# -- the sandbox --------------------------------------------------------------------------
def sandbox_monitoring(project: Project) -> None:
    """environments/sandbox.yaml cut to the demo app, Prometheus and its target."""
    data = sandbox_subset({"app", "prometheus"})
    data["targets"] = {"monitoring": data["targets"]["monitoring"]}
    project.write_env(data)
    project.copy_check(CHECK)
    project.copy_check("checks/health/test_prometheus.py")


def test_sandbox_history_passes(project: Project) -> None:
    sandbox_monitoring(project)
    result = project.run("-p", "no:xdist")
    checks = project.checks()
    assert set(outcomes(checks).values()) == {"PASS"}, result.output
    assert set(outcomes(checks)) >= {
        "test_query[monitoring:api_error_rate_pct]",
        "test_error_budget[monitoring:api-availability]",
        "test_burn_rate[monitoring:api-availability]"}
    # 0.02 % 5xx against a 0.1 % budget: 80 % left, burning at 0.2.
    budget = values(checks["test_error_budget[monitoring:api-availability]"])
    assert budget["slo.budget_remaining_pct"] == pytest.approx(80.0, abs=0.1)
    burn = burn_rates(checks["test_burn_rate[monitoring:api-availability]"])
    assert burn == pytest.approx(dict.fromkeys(burn, 0.2), rel=1e-3)


def test_slo_burning_fault_turns_exactly_the_burn_rate_red(project: Project) -> None:
    sandbox_monitoring(project)
    result = project.run("-p", "no:xdist", "--sandbox-fault", "slo-burning")
    checks = project.checks()
    red = {k for k, v in outcomes(checks).items() if v in ("FAIL", "ERROR")}
    assert red == {"test_burn_rate[monitoring:api-availability]"}, result.output
    burn = checks["test_burn_rate[monitoring:api-availability]"]
    failing = {m["name"]: m["value"] for m in burn["evidence"] if m["verdict"] == "FAIL"}
    # The last hour at 3 % 5xx: 0.03 / 0.001 = 30 in 5m and 1h; 6h stays under 6:
    # (0.03 + 5 x 0.0002) / 6 / 0.001 = 5.17.
    assert failing == {"slo.burn_rate_1h_5m": pytest.approx(30, rel=1e-3)}
    assert values(burn)["slo.burn_rate_6h"] == pytest.approx(5.17, rel=1e-2)
    # The month's budget holds: (0.03 + 719 x 0.0002) / 720 / 0.001 = 24.1 % spent.
    budget = checks["test_error_budget[monitoring:api-availability]"]
    assert budget["outcome"] == "PASS"
    assert values(budget)["slo.budget_remaining_pct"] == pytest.approx(75.9, abs=0.2)
    # The 5-minute error rate shows the spike too, as a warning (3 % > 1 %, under 5 %).
    assert checks["test_query[monitoring:api_error_rate_pct]"]["outcome"] == "WARN"
    assert result.returncode == 1
