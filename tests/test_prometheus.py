"""The prometheus target type: schema, and each check PASS/FAIL/ERROR against a real
Prometheus (Debian's ``prometheus``) started by the sandbox, as a user runs the suite."""

from __future__ import annotations

import re
import shutil
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.sandbox.process import free_port
from opsverify.targets.prometheus import Alert, PrometheusTarget
from tests.conftest import HungServer, Project, Result, processes_matching

needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None,
                                      reason="prometheus not found (apt-get install prometheus)")
TOKEN = "prom-token-s3cr3t-9f2c"  # a test value that must never be shown

# Three views of one server: the default (every target, Watchdog allowed), one that
# declares its jobs and allows the injected alert, one that expects a job nobody scrapes.
SANDBOX_ENV = """
settings: {timeout_s: 3}
sandbox:
  app: {}
  prometheus: {}
targets:
  prom:
    type: prometheus
    url: ${SANDBOX_PROMETHEUS_URL}
    allowed_alerts: [Watchdog]
  prom-core:
    type: prometheus
    url: ${SANDBOX_PROMETHEUS_URL}
    bearer_token: ${PROM_TOKEN}
    allowed_alerts: [Watchdog, InjectedFault]
    expect_up: [prometheus, ts-forecast-api]
  prom-billing:
    type: prometheus
    url: ${SANDBOX_PROMETHEUS_URL}
    expect_up: [billing]
  not-prom:
    type: prometheus
    url: ${SANDBOX_APP_URL}
"""


def run_checks(project: Project, env: str, *args: str) -> tuple[Result, dict[str, Any]]:
    """Run the stock prometheus checks in ``project``; outcomes keyed ``test[target]``."""
    project.copy_check("checks/health/test_prometheus.py")
    return project.run_checks("prom", env, *args, env={"PROM_TOKEN": TOKEN})


def failing_lines(check: dict[str, Any]) -> str:
    return "\n".join(f"{m['name']} = {m['value']}" for m in check["evidence"]
                     if m["verdict"] == "FAIL")


# -- schema ------------------------------------------------------------------------------
def test_schema_address_and_secrets() -> None:
    spec = PrometheusTarget(type="prometheus", url="https://ops:pw1@prom.example.com/prom",
                            bearer_token="tok1")
    assert spec.address() == "https://prom.example.com:443"
    assert {"pw1", "tok1", spec.url} <= set(spec.secrets())
    assert spec.expect_up is None
    assert spec.allowed_alerts == []


@pytest.mark.parametrize(("keys", "error"), [
    ({"url": "prom:9090"}, "expected an http:// or https:// URL"),
    ({"url": "http://p:9090", "expect_up": []}, "name at least one job"),
    ({"url": "http://p:9090", "allowed_alert": ["x"]}, "Extra inputs are not permitted"),
])
def test_schema_rejects(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        PrometheusTarget(type="prometheus", **keys)


def test_alert_label_reads_like_promql() -> None:
    alert = Alert("HighErrorRate", "firing",
                  {"alertname": "HighErrorRate", "severity": "page", "job": "api"}, "t")
    assert alert.label == 'HighErrorRate{job="api", severity="page"}'


# -- against a real Prometheus -----------------------------------------------------------
@needs_prometheus
def test_healthy_prometheus_passes_and_declared_jobs_are_required(project: Project) -> None:
    result, checks = run_checks(project, SANDBOX_ENV)
    for target in ("prom", "prom-core"):
        for test in ("test_ready", "test_scrape_targets_up", "test_no_unexpected_alert_firing"):
            assert checks[f"{test}[{target}]"]["outcome"] == "PASS", result.output
    allowed = checks["test_no_unexpected_alert_firing[prom]"]["evidence"]
    assert any(m["name"].startswith("alert Watchdog") and "(allowed)" in m["name"]
               for m in allowed)
    ups = {m["name"]: m["value"] for m in checks["test_scrape_targets_up[prom]"]["evidence"]}
    assert ups["targets up"] == 2  # prometheus itself and the demo app
    # expect_up names a job Prometheus does not scrape: FAIL, saying which.
    billing = checks["test_scrape_targets_up[prom-billing]"]
    assert billing["outcome"] == "FAIL"
    assert "job billing scrape targets = 0" in failing_lines(billing)
    # No allowed_alerts: the always-firing Watchdog is unexpected there.
    strict = checks["test_no_unexpected_alert_firing[prom-billing]"]
    assert strict["outcome"] == "FAIL"
    assert 'alert Watchdog{severity="none"} = firing since' in failing_lines(strict)
    # Something that answers HTTP but is not Prometheus cannot be evaluated: one line.
    assert checks["test_ready[not-prom]"]["outcome"] == "ERROR"
    assert "GET /-/healthy answered 404: not a Prometheus server" in result.output
    assert TOKEN not in result.output
    for path in project.latest("prom").rglob("*"):
        if path.is_file():
            assert TOKEN not in path.read_text(errors="replace"), path


@needs_prometheus
def test_alert_firing_fails_the_alert_check_with_its_labels(project: Project) -> None:
    result, checks = run_checks(project, SANDBOX_ENV, "--sandbox-fault", "alert-firing",
                                "--target", "prom", "--target", "prom-core")
    alerts = checks["test_no_unexpected_alert_firing[prom]"]
    assert alerts["outcome"] == "FAIL", result.output
    lines = failing_lines(alerts)
    assert 'alert InjectedFault{service="ts-forecast-api", severity="critical"} = firing' in lines
    assert "alerts firing outside allowed_alerts = 1" in lines
    assert "Watchdog" not in lines  # allowed
    assert "InjectedFault" in result.output  # the terminal says why, too
    # Allowed on prom-core; nothing else is red.
    assert checks["test_no_unexpected_alert_firing[prom-core]"]["outcome"] == "PASS"
    for target in ("prom", "prom-core"):
        assert checks[f"test_ready[{target}]"]["outcome"] == "PASS"
        assert checks[f"test_scrape_targets_up[{target}]"]["outcome"] == "PASS"
    assert result.returncode == 1


@needs_prometheus
def test_unreachable_scrape_target_fails_the_targets_check(project: Project) -> None:
    result, checks = run_checks(project, SANDBOX_ENV,
                                "--sandbox-fault", "scrape-target-unreachable",
                                "--target", "prom", "--target", "prom-core")
    targets = checks["test_scrape_targets_up[prom]"]
    assert targets["outcome"] == "FAIL", result.output
    lines = failing_lines(targets)
    assert "target ts-forecast-worker 127.0.0.1:" in lines
    assert "= down (Get " in lines  # with its lastError
    assert "connection refused" in lines
    assert "targets not up = 1" in lines
    # prom-core expects only its own jobs: the worker is not its business.
    assert checks["test_scrape_targets_up[prom-core]"]["outcome"] == "PASS"
    for target in ("prom", "prom-core"):
        assert checks[f"test_ready[{target}]"]["outcome"] == "PASS"
        assert checks[f"test_no_unexpected_alert_firing[{target}]"]["outcome"] == "PASS"


@needs_prometheus
def test_not_ready_fails_the_ready_check_and_errors_the_api_checks(project: Project) -> None:
    result, checks = run_checks(project, SANDBOX_ENV, "--sandbox-fault", "prometheus-not-ready",
                                "--target", "prom")
    ready = checks["test_ready[prom]"]
    assert ready["outcome"] == "FAIL", result.output
    assert "GET /-/ready status = 503" in failing_lines(ready)
    for test in ("test_scrape_targets_up", "test_no_unexpected_alert_firing"):
        assert checks[f"{test}[prom]"]["outcome"] == "ERROR"
    assert "GET /api/v1/alerts answered 503 (not ready: see /-/ready)" in result.output
    assert "Traceback" not in result.output
    assert not processes_matching(str(project.path))  # no server outlives the run


@needs_prometheus
def test_prometheus_down_is_one_error_per_check(project: Project) -> None:
    result, checks = run_checks(project, SANDBOX_ENV, "--sandbox-fault", "prometheus-down",
                                "--target", "prom")
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}, result.output
    # A sandbox address is generated, not taken from the process environment: it is shown.
    assert re.search(r"prom \(http://127\.0\.0\.1:\d+\): cannot connect", result.output), \
        result.output
    assert "cannot connect: connection refused" in result.output


def test_unreachable_and_hung_servers_error_within_the_deadline(
    project: Project, hung_server: HungServer
) -> None:
    env = f"""
settings: {{timeout_s: 1}}
targets:
  hung: {{type: prometheus, url: "http://127.0.0.1:{hung_server.port}"}}
  closed: {{type: prometheus, url: "http://127.0.0.1:{free_port()}"}}
"""
    result, checks = run_checks(project, env)
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}, result.output
    assert len(checks) == 6
    error_lines = [ln for ln in result.output.splitlines() if ln.startswith("ERROR ")]
    assert any("hung (http://127.0.0.1:" in ln and "no answer within 1 s" in ln
               for ln in error_lines), result.output
    assert any("closed (http://127.0.0.1:" in ln and "connection refused" in ln
               for ln in error_lines), result.output
    assert "Traceback" not in result.output
    assert result.duration_s < 20  # one deadline per target, shared by its checks
