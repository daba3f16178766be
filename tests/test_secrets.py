"""A secret canary never leaves a run: not the terminal, not a single report artifact.

The canary is the sandbox's PostgreSQL and Redis password (``OPSVERIFY_SANDBOX_PASSWORD``)
and the value of a variable the environment file interpolates; a second one is a wrong
password. The runs fail on purpose in every way we know: checks that print, log, warn,
skip, assert and raise with the DSN, faults (db-down, app-unhealthy), an authentication
failure, ``-v --showlocals``, ``-n 2``, and a destructive check that audits a DSN.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYPROJECT, ROOT, Project, Result

CANARY = "canary-S3cr3t-7f9a"
WRONG = "canary-Wr0ngPw-3c1d"

ENVIRONMENT = """\
description: secrets proof (token ${OPS_API_TOKEN})
settings:
  timeout_s: 3
  allure: true
sandbox:
  postgres: {database: ts_forecast_system}
  redis: {}
  app: {}
targets:
  api:
    type: http
    url: ${SANDBOX_APP_URL}
    health: {path: "/health?token=${OPS_API_TOKEN}", expect_status: 200}
  db:
    type: postgres
    dsn: ${SANDBOX_POSTGRES_DSN}
    sql_checks:
      - name: token_length
        query: SELECT length('${OPS_API_TOKEN}')
        expect: {max: 1}
  db-wrong-password:
    type: postgres
    dsn: ${SANDBOX_POSTGRES_DSN}?password=${OPS_WRONG_PASSWORD}
  cache:
    type: redis
    url: ${SANDBOX_REDIS_URL}
"""

HEALTH = '''\
"""Checks that pass with the canary, and checks that spill every secret they can reach."""

import logging
import os
import sys
import warnings

import pytest


@pytest.mark.daily
def test_uses_the_canary(postgres, redis, evidence):
    """The canary really is the password these sessions authenticated with."""
    canary = os.environ["OPS_API_TOKEN"]
    evidence.expect("postgres password is the canary", postgres.spec.password() == canary,
                    equals=True)
    evidence.expect("redis password is the canary", redis.spec.password() == canary,
                    equals=True)
    evidence.expect("postgres answers", postgres.scalar("SELECT 1"), equals=1)
    evidence.expect("redis answers", redis.ping(), equals=True)


@pytest.mark.daily
def test_accepts_queries(postgres, evidence):
    evidence.expect("SELECT 1", postgres.scalar("SELECT 1"), equals=1)


@pytest.mark.daily
def test_ping(redis, evidence):
    evidence.expect("PING", redis.ping(), equals=True)


@pytest.mark.daily
def test_health(http, http_health, evidence):
    evidence.expect(f"GET {http_health.path}", http.get(http_health.path).status, equals=200)


@pytest.mark.daily
@pytest.mark.parametrize("token", [os.environ["OPS_API_TOKEN"]])
def test_parametrized_with_the_token(token, evidence):
    evidence.note("token length", len(token))


def test_sql_check(postgres, sql_check, evidence):
    value = postgres.scalar(sql_check.query)
    evidence.expect(f"sql.{sql_check.name}", value, at_most=sql_check.expect.max)


@pytest.mark.daily
def test_spills_the_dsn(env, evidence):
    """Print, log, warn, record and assert with every secret of the file (no connection)."""
    dsn = env.model.targets["db"].dsn
    url = env.model.targets["cache"].url
    password = env.model.targets["db"].password()
    token = os.environ["OPS_API_TOKEN"]
    print(f"connecting with {dsn} and {url}")
    print(f"password={password} token={token}", file=sys.stderr)
    logging.getLogger("leaky").warning("dsn=%s", dsn)
    warnings.warn(f"deprecated: {dsn}", UserWarning, stacklevel=1)
    evidence.note("dsn", dsn)
    evidence.expect("the DSN", dsn, equals="something else")
    assert dsn == url, f"cannot use {dsn} (password {password})"


@pytest.mark.daily
def test_raises_with_the_dsn(postgres, evidence):
    dsn = postgres.spec.dsn
    evidence.note("connected to", dsn)
    raise RuntimeError(f"could not use {dsn}: password {postgres.spec.password()} rejected")


@pytest.mark.daily
def test_skips_with_the_password(redis, evidence):
    pytest.skip(f"not today, {redis.spec.url}")
'''

REMEDIATION = '''\
"""A destructive check whose action, before and after all carry the DSN."""

import pytest

from opsverify.remediation import Item


class Reconnect:
    """An action whose identity, before and after all carry the DSN and its password."""

    name = "reconnect"

    def __init__(self, client):
        self.client, self.target = client, client.name

    def select(self):
        return [Item(self.client.spec.dsn, f"password {self.client.spec.password()}")]

    def drift(self, item):
        return None

    def apply(self, item):
        return self.client.spec.dsn


@pytest.mark.destructive
def test_audits_the_dsn(postgres_admin, remediation, evidence):
    remediation.run(Reconnect(postgres_admin))
    evidence.expect("reconnected", postgres_admin.scalar("SELECT 1"), equals=1)
'''

ENVIRON = {"OPSVERIFY_SANDBOX_PASSWORD": CANARY, "OPS_API_TOKEN": CANARY,
           "OPS_WRONG_PASSWORD": WRONG}


def forms(secret: str) -> dict[str, bytes]:
    """The secret as it could sit in a file: raw, and inside base64 at each alignment."""
    raw = secret.encode()
    out = {"raw": raw}
    for shift in range(3):
        padded = b"\0" * shift + raw
        encoded = base64.b64encode(padded)
        out[f"base64+{shift}"] = encoded[4 if shift else 0:len(padded) // 3 * 4]
    return out


def leaks(data: bytes) -> list[str]:
    return [f"{secret} ({how})" for secret in (CANARY, WRONG)
            for how, form in forms(secret).items() if form in data]


def artifact_leaks(reports: Path) -> dict[str, list[str]]:
    files = [p for p in sorted(reports.rglob("*")) if p.is_file()]
    assert files, "no artifact was written"
    found = {str(p.relative_to(reports)): leaks(p.read_bytes()) for p in files}
    return {path: what for path, what in found.items() if what}


@pytest.fixture(scope="module")
def sandbox_dir() -> Iterator[Path]:
    # Not under tmp_path: its 0700 parents would keep the unprivileged PostgreSQL out.
    path = Path(tempfile.mkdtemp(prefix="opsverify-secrets-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def new_project(tmp: Path) -> Project:
    root = tmp / "project"
    root.mkdir()
    shutil.copy(ROOT / "conftest.py", root / "conftest.py")
    (root / "pyproject.toml").write_text(PYPROJECT)
    project = Project(root, extra_env=dict(ENVIRON))
    project.write("environments/secrets.yaml", ENVIRONMENT)
    project.write("checks/health/test_leaky.py", HEALTH)
    project.write("checks/remediation/test_leaky.py", REMEDIATION)
    return project


def summary(project: Project) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (project.latest("secrets") / "summary.json").read_text())
    data["by_id"] = {c["nodeid"].split("::", 1)[1]: c for c in data["checks"]}
    return data


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory,
           sandbox_dir: Path) -> tuple[Project, Result]:
    """No fault: the canary authenticates; the spilling checks fail; one audited change."""
    project = new_project(tmp_path_factory.mktemp("secrets"))
    # Every check, the destructive one named (its second opt-in) among them.
    result = project.run("--env", "secrets", "-v", "--showlocals", "-rA",
                         "-m", "destructive or not destructive",
                         "--allow-destructive=secrets", "-p", "no:randomly",
                         env={"OPSVERIFY_SANDBOX_DIR": str(sandbox_dir)})
    return project, result


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Result]:
    """Faults and two xdist workers: database down, app unhealthy."""
    project = new_project(tmp_path_factory.mktemp("secrets-n2"))
    result = project.run("--env", "secrets", "-n", "2", "-v", "--showlocals", "-rA",
                         "--sandbox-fault", "db-down", "--sandbox-fault", "app-unhealthy")
    return project, result


def test_the_canary_is_really_the_password(serial, sandbox_dir):
    project, result = serial
    checks = summary(project)["by_id"]
    assert checks["test_uses_the_canary[cache-db]"]["outcome"] == "PASS", result.output
    assert checks["test_accepts_queries[db]"]["outcome"] == "PASS"
    assert checks["test_ping[cache]"]["outcome"] == "PASS"
    # The server side agrees: redis-server was configured with the canary.
    assert f"requirepass {CANARY}\n" in (sandbox_dir / "redis.conf").read_text()
    # And a password is checked: the wrong one is refused, in one line.
    wrong = checks["test_accepts_queries[db-wrong-password]"]
    assert wrong["outcome"] == "ERROR"
    assert 'password authentication failed for user "opsverify"' in wrong["message"]


def test_the_spilling_checks_ran_and_failed(serial):
    project, result = serial
    checks = summary(project)["by_id"]
    assert result.returncode == 1, result.output
    assert checks["test_spills_the_dsn"]["outcome"] == "FAIL"
    assert checks["test_raises_with_the_dsn[db]"]["outcome"] == "FAIL"
    assert checks["test_skips_with_the_password[cache]"]["outcome"] == "SKIP"
    assert checks["test_sql_check[db:token_length]"]["outcome"] == "FAIL"
    assert checks["test_audits_the_dsn[db]"]["outcome"] == "PASS"
    # Test ids made of secrets (a health path with a token, a parameter) are masked.
    assert checks["test_health[api:***]"]["outcome"] == "PASS"
    assert checks["test_parametrized_with_the_token[***]"]["outcome"] == "PASS"
    # The secrets were there to leak, and were masked where they would have been.
    assert "connecting with *** and ***" in result.stdout
    assert "cannot use *** (password ***)" in result.stdout
    assert "RuntimeError: could not use ***: password *** rejected" in result.stdout
    # Every interpolated value is a secret: here, the whole description.
    assert "opsverify: ***\n" in result.stdout


@pytest.mark.parametrize("run", ["serial", "distributed"])
def test_the_canary_is_not_in_the_terminal(run, request):
    _, result = request.getfixturevalue(run)
    assert result.returncode == 1, result.output
    assert leaks(result.output.encode()) == [], result.output


@pytest.mark.parametrize("run", ["serial", "distributed"])
def test_the_canary_is_in_no_artifact(run, request):
    project, _ = request.getfixturevalue(run)
    run_dir = project.latest("secrets")
    for name in ("report.html", "junit.xml", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "allure-results").iterdir())
    if run == "serial":
        assert (project.reports / "audit.jsonl").is_file()
    assert artifact_leaks(project.reports) == {}


def test_faults_and_workers_were_exercised(distributed):
    project, result = distributed
    data = summary(project)
    checks = data["by_id"]
    assert data["environment"]["sandbox_faults"] == ["app-unhealthy", "db-down"]
    assert "[gw0]" in result.stdout
    assert "[gw1]" in result.stdout
    assert checks["test_accepts_queries[db]"]["outcome"] == "ERROR"
    assert "connection refused" in checks["test_accepts_queries[db]"]["message"].lower()
    assert checks["test_health[api:***]"]["outcome"] == "FAIL"
    assert checks["test_spills_the_dsn"]["outcome"] == "FAIL"
    assert "connecting with *** and ***" in result.stdout


def test_the_detector_finds_a_planted_canary(tmp_path):
    """Control: the scan above would see the canary, raw or base64-encoded at any offset."""
    for shift, prefix in enumerate(("", "x", "xy")):
        planted = tmp_path / f"planted-{shift}" / "attachment.txt"
        planted.parent.mkdir()
        planted.write_bytes(b"data:" + base64.b64encode(f"{prefix}{CANARY}!".encode()))
        assert artifact_leaks(planted.parent) == {
            "attachment.txt": [f"{CANARY} (base64+{shift})"]}
    (tmp_path / "raw.txt").write_text(f"dsn=postgresql://u:{WRONG}@h/db")
    assert leaks((tmp_path / "raw.txt").read_bytes()) == [f"{WRONG} (raw)"]
