"""A hung target costs one deadline, never the run.

A real socket that accepts and never answers stands in for a wedged HTTP server, PostgreSQL
and Redis, next to the healthy sandbox servers in the same run. ``timeout_s`` is 2 s: libpq's
``connect_timeout`` cannot go below 2 s, so a smaller value would not bound PostgreSQL.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from opsverify.errors import TargetUnavailable
from opsverify.targets.http import HttpClient, HttpTarget
from opsverify.targets.postgres import PostgresClient, PostgresTarget
from opsverify.targets.redis import RedisClient, RedisTarget
from tests.conftest import PYPROJECT, ROOT, HungServer, Project, Result

TIMEOUT_S = 2
BUDGET_S = TIMEOUT_S + 1  # what one hung target may cost
HUNG = ("hung-api", "hung-db", "hung-cache")

ENVIRONMENT = """\
description: timeouts proof
settings:
  timeout_s: {timeout}
sandbox:
  postgres: {{database: ts_forecast_system}}
  redis: {{}}
  app: {{}}
targets:
  api:
    type: http
    url: ${{SANDBOX_APP_URL}}
    health: {{path: /health, expect_status: 200, expect_json: {{status: healthy}}}}
    latency: {{path: /health, samples: 5}}
  db:
    type: postgres
    dsn: ${{SANDBOX_POSTGRES_DSN}}
  cache:
    type: redis
    url: ${{SANDBOX_REDIS_URL}}
  hung-api:
    type: http
    url: http://127.0.0.1:{port}
    health: {{path: /health}}
    latency: {{path: /health, samples: 5}}
  hung-db:
    type: postgres
    dsn: postgresql://opsverify:not-used@127.0.0.1:{port}/ts_forecast_system
  hung-cache:
    type: redis
    url: redis://127.0.0.1:{port}/0
"""


@pytest.fixture(scope="module")
def hung() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, hung: HungServer
        ) -> tuple[Result, dict[str, Any]]:
    root = tmp_path_factory.mktemp("timeouts") / "project"
    root.mkdir()
    shutil.copy(ROOT / "conftest.py", root / "conftest.py")
    (root / "pyproject.toml").write_text(PYPROJECT)
    project = Project(root)
    for name in ("test_http.py", "test_postgres.py", "test_redis.py"):
        project.write(f"checks/health/{name}", (ROOT / "checks" / "health" / name).read_text())
    project.write("environments/timeouts.yaml",
                  ENVIRONMENT.format(timeout=TIMEOUT_S, port=hung.port))
    result = project.run("--env", "timeouts", "-m", "daily", "-p", "no:randomly")
    summary = json.loads((project.latest("timeouts") / "summary.json").read_text())
    return result, summary


def checks_of(summary: dict[str, Any], target: str) -> list[dict[str, Any]]:
    found = [c for c in summary["checks"] if c["target"] == target]
    assert found, f"no check ran against {target}"
    return found


@pytest.mark.parametrize("target", HUNG)
def test_a_hung_target_is_an_error_within_its_deadline(run, hung, target):
    result, summary = run
    checks = checks_of(summary, target)
    assert {c["outcome"] for c in checks} == {"ERROR"}, result.output
    # The target's reachability probe pays the deadline, once; every check shares its error.
    probes = {p for c in checks for p in c["probes"]}
    assert len(probes) == 1, probes
    (probe,) = probes
    elapsed_ms = float(re.search(rf"probe {target} reachable: ([\d.]+) ms", probe)[1])
    assert (TIMEOUT_S - 0.2) * 1000 <= elapsed_ms <= BUDGET_S * 1000, probe
    # At most the first check waits for it (it may run before the probe ends).
    durations = sorted((c["duration_s"] for c in checks), reverse=True)
    assert durations[0] <= BUDGET_S, durations
    assert all(d < 0.5 for d in durations[1:]), durations


@pytest.mark.parametrize(("target", "cause"), [
    ("hung-api", "no answer within 2 s"),
    ("hung-db", "no answer within 2 s"),
    ("hung-cache", "no answer within 2 s"),
])
def test_the_error_is_one_line_naming_target_address_and_cause(run, hung, target, cause):
    result, summary = run
    address = f"127.0.0.1:{hung.port}"
    for check in checks_of(summary, target):
        message = check["message"]
        assert "\n" not in message, message
        assert message.startswith(f"{target} ("), message
        assert address in message
        assert message.endswith(cause), message
    # The terminal says it in one line per check, and shows no traceback for it.
    lines = [ln for ln in result.stdout.splitlines()
             if re.search(rf"\[{target}[]:-]", ln) and address in ln]
    assert lines, result.stdout
    assert all(ln.rstrip().endswith(cause) for ln in lines if " - " in ln or ": " in ln)


def test_no_traceback_for_any_hung_target(run):
    result, _ = run
    for noise in ("Traceback", "psycopg.", "redis.exceptions", "requests.exceptions",
                  "urllib3", "socket.timeout", "TimeoutError"):
        assert noise not in result.output, noise


def test_the_other_checks_still_run_and_pass(run):
    result, summary = run
    assert result.returncode == 1, result.output
    for target in ("api", "db", "cache"):
        outcomes = {c["nodeid"]: c["outcome"] for c in checks_of(summary, target)}
        assert set(outcomes.values()) == {"PASS"}, outcomes
    assert summary["counts"]["FAIL"] == 0
    assert summary["counts"]["ERROR"] == sum(len(checks_of(summary, t)) for t in HUNG)


def test_the_whole_run_is_bounded(run):
    """Three hung targets cost one deadline, probed at once; the rest is the harness."""
    result, summary = run
    hung_s = sum(c["duration_s"] for t in HUNG for c in checks_of(summary, t))
    assert hung_s <= BUDGET_S, hung_s
    # Sandbox start-up and interpreter included; far below any library default (60 s+).
    assert result.duration_s < 3 * BUDGET_S + 15, result.duration_s


@pytest.mark.parametrize("timeout_s", [0.5, 1.0])
def test_redis_and_http_honour_a_deadline_under_2s(hung_server, timeout_s):
    url = f"127.0.0.1:{hung_server.port}"
    probes = [
        lambda: RedisClient("c", RedisTarget(type="redis", url=f"redis://{url}/0"),
                            timeout_s).ping(),
        lambda: HttpClient("a", HttpTarget(type="http", url=f"http://{url}"),
                           timeout_s).reachable(),
    ]
    for probe in probes:
        started = time.monotonic()
        with pytest.raises(TargetUnavailable, match=f"no answer within {timeout_s:g} s"):
            probe()
        assert time.monotonic() - started <= timeout_s + 1


def test_postgres_honours_a_deadline_under_2s(hung_server):
    dsn = f"postgresql://u:p@127.0.0.1:{hung_server.port}/x"
    client = PostgresClient("db", PostgresTarget(type="postgres", dsn=dsn), 0.5)
    started = time.monotonic()
    with pytest.raises(TargetUnavailable):
        client.connect()
    assert time.monotonic() - started <= 0.5 + 1
