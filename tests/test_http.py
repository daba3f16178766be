"""The http target type: schema, and each health check PASS and FAIL against the real demo
service, healthy and then broken with sandbox faults, as a user runs the suite."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.errors import TargetUnavailable
from opsverify.targets.http import (
    HttpCheck,
    HttpClient,
    HttpTarget,
    RedirectProbe,
    header_matches,
)
from tests.conftest import DripServer, Project, Result

ENV = """
settings: {timeout_s: 3}
sandbox:
  app: {}
targets:
  api:
    type: http
    url: ${SANDBOX_APP_URL}
    health:
      - {path: /health, expect_json: {status: healthy}, max_ms: 300}
    redirects:
      - {path: /docs, to: /docs/, status: 301}
    http_checks:
      - name: service_identity
        path: /
        expect_json: {service: ts-forecast-api}
        expect_header: {Content-Type: application/json}
      - name: metrics_exposed
        path: /metrics
        expect_header: {content-type: "text/plain*"}
        expect_body_contains: http_requests_total
        cadence: [weekly, deploy_gate]
        category: capacity
  api-any-redirect:  # the same service: any redirect status will do, to an absolute URL
    type: http
    url: ${SANDBOX_APP_URL}/
    redirects:
      - {path: /docs, to: "${SANDBOX_APP_URL}/docs/"}
  api-plain:  # declares none of redirects, http_checks, max_ms
    type: http
    url: ${SANDBOX_APP_URL}
    health: {path: /health}
"""
FAULTS = ("redirect-broken", "metrics-disabled", "slow-app")


def run_checks(project: Project, *args: str) -> tuple[Result, dict[str, Any]]:
    """Run the stock http checks in ``project``; outcomes keyed ``test[id]``."""
    project.copy_check("checks/health/test_http.py")
    return project.run_checks("web", ENV, *args)


def failing(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"] if m["verdict"] == "FAIL"}


def measured(check: dict[str, Any], name: str) -> Any:
    return next(m["value"] for m in check["evidence"] if m["name"] == name)


# -- schema ------------------------------------------------------------------------------
def test_schema_of_redirects_and_http_checks() -> None:
    spec = HttpTarget.model_validate({
        "type": "http", "url": "https://api.example.com",
        "redirects": {"path": "/old", "to": "/new", "status": 308},
        "http_checks": [{"name": "version", "path": "/v", "expect_body_contains": "1.4",
                         "cadence": "weekly"}],
        "health": [{"path": "/health", "max_ms": 250}],
    })
    assert spec.redirects == [RedirectProbe(path="/old", to="/new", status=308)]
    check = spec.http_checks[0]
    assert (check.expect_body_contains, check.cadence, check.category) == (
        ["1.4"], ["weekly"], "health")
    assert spec.health[0].max_ms == 250


@pytest.mark.parametrize(("keys", "error"), [
    ({"redirects": [{"path": "/a", "to": "/b", "status": 200}]}, "expected a redirect status"),
    ({"redirects": [{"path": "/a"}]}, "Field required"),
    ({"http_checks": [{"name": "Bad Name"}]}, "String should match pattern"),
    ({"http_checks": [{"name": "a"}, {"name": "a"}]}, "names must be unique: a"),
    ({"http_checks": [{"name": "a", "cadence": "hourly"}]}, "Input should be 'daily'"),
    ({"health": [{"path": "/h", "max_ms": 0}]}, "greater than 0"),
])
def test_schema_errors(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        HttpTarget.model_validate({"type": "http", "url": "http://h", **keys})


def test_header_patterns() -> None:
    assert header_matches("text/plain; version=0.0.4", "text/plain*")
    assert not header_matches("application/json", "text/plain*")
    assert not header_matches(None, "*")
    assert HttpCheck(name="x").expect_status == 200


# -- against the real demo service --------------------------------------------------------
def test_each_check_passes_on_a_healthy_service(project: Project) -> None:
    result, checks = run_checks(project)
    assert result.returncode == 0, result.output
    expected = {
        "test_health[api:/health]", "test_response_time[api:/health]",
        "test_redirect[api:/docs]", "test_redirect[api-any-redirect:/docs]",
        "test_http_check[api:service_identity]", "test_http_check[api:metrics_exposed]",
        "test_health[api-plain:/health]",
    }
    assert expected <= {k for k, c in checks.items() if c["outcome"] == "PASS"}, checks.keys()
    redirect = checks["test_redirect[api:/docs]"]
    # The Location is shown as a path: the target's URL is a secret and would be masked.
    assert measured(redirect, "GET /docs Location") == "/docs/"
    assert measured(checks["test_redirect[api-any-redirect:/docs]"],
                    "GET /docs status is a redirect") is True
    response = next(m for m in checks["test_response_time[api:/health]"]["evidence"]
                    if m["name"] == "http.response_ms")
    assert response["verdict"] == "PASS"
    assert response["value"] < 300
    assert "web.yaml:" in response["source"]  # max_ms, from where it was declared


def test_checks_need_their_declarations(project: Project) -> None:
    """A target that declares no redirect, http_check or max_ms gets no such check, and the
    declared cadence and category of an http_check are its markers."""
    project.copy_check("checks/health/test_http.py")
    project.write("environments/web.yaml", ENV)
    listed = project.run("--env", "web", "--collect-only", "-q").stdout
    assert "test_redirect[api:/docs]" in listed
    assert not [line for line in listed.splitlines() if "api-plain" in line
                and ("redirect" in line or "http_check" in line or "response_time" in line)]
    weekly = project.run("--env", "web", "--collect-only", "-q", "-m", "weekly and capacity")
    assert [ln for ln in weekly.stdout.splitlines() if "::" in ln] == [
        "checks/health/test_http.py::test_http_check[api:metrics_exposed]"]


def test_each_check_fails_for_the_right_reason_on_a_broken_service(project: Project) -> None:
    args = [f"--sandbox-fault={fault}" for fault in FAULTS]
    result, checks = run_checks(project, *args)
    assert result.returncode == 1, result.output
    outcomes = {k: c["outcome"] for k, c in checks.items()}

    # slow-app: every answer takes 400 ms; max_ms is 300.
    assert outcomes["test_response_time[api:/health]"] == "FAIL"
    assert failing(checks["test_response_time[api:/health]"])["http.response_ms"] >= 300
    # ... but it is still healthy: only the response-time check says so.
    assert outcomes["test_health[api:/health]"] == "PASS"

    # redirect-broken: /docs answers 404 with no Location.
    assert failing(checks["test_redirect[api:/docs]"]) == {
        "GET /docs status": 404, "GET /docs Location": "<none>"}
    assert failing(checks["test_redirect[api-any-redirect:/docs]"]) == {
        "GET /docs status is a redirect": False, "GET /docs Location": "<none>"}

    # metrics-disabled: /metrics answers 404 JSON; every expectation of the check says why.
    assert failing(checks["test_http_check[api:metrics_exposed]"]) == {
        "GET /metrics status": 404,
        "GET /metrics body contains 'http_requests_total'": False,
        "GET /metrics header content-type matches 'text/plain*'": False,
    }
    assert outcomes["test_http_check[api:service_identity]"] == "PASS"
    assert "GET /metrics status = 404, expected = 200" in result.stdout


def test_a_redirect_to_the_wrong_place_fails(project: Project) -> None:
    env = ENV.replace("to: /docs/, status: 301", "to: /documentation/, status: 302")
    project.copy_check("checks/health/test_http.py")
    project.write("environments/web.yaml", env)
    result = project.run("--env", "web", "-p", "no:xdist", "-k", "test_redirect and api:")
    assert result.returncode == 1, result.output
    assert "GET /docs status = 301, expected = 302" in result.stdout
    assert "GET /docs Location = '/docs/', expected = '/documentation/'" in result.stdout


# -- a server that drips its answer ------------------------------------------------------
@pytest.mark.parametrize(("head", "drip"), [
    (b"HTTP/1.1 200 OK\r\n", b"X-Drip: " + b"a" * 10_000),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n", b"x" * 10_000),
], ids=["headers", "body"])
def test_a_dripping_server_is_cut_at_the_deadline(head: bytes, drip: bytes) -> None:
    """A byte every 0.2 s passes every socket read timeout; the whole answer's deadline
    still holds, and a body being read is hung up on, not left to drip on."""
    server = DripServer(head, drip)
    try:
        client = HttpClient("api", HttpTarget(type="http", url=f"http://127.0.0.1:{server.port}"),
                            1.0)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable) as caught:
            client.get("/health")
        assert time.monotonic() - started < 1.0 + 1  # timeout_s + 1 s
        assert str(caught.value) == (
            f"api (http://127.0.0.1:{server.port}): no complete answer within 1 s")
        if drip.startswith(b"x"):
            deadline = time.monotonic() + 3
            while server.cut_after_s is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert server.cut_after_s is not None
            assert server.cut_after_s < 3
    finally:
        server.close()
