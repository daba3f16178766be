"""Outcomes as a user sees them: WARN, FAIL, SKIP, WAIVED, threshold sources, markers,
--target and empty selections, run through pytest in a subprocess against the real sandbox
(or, where no server needs to answer, against an environment that is never contacted)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from html import unescape
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STALE = "checks/capacity/test_postgres.py::test_stale_idle_sessions[db]"
LATENCY = "checks/health/test_http.py::test_latency_p95[{}:/health]"
PING = "checks/health/test_redis.py::test_ping[cache]"






def line_of(path: Path, pattern: str, after: str = "") -> int:
    """The 1-based line of the first line matching ``pattern`` (after one matching ``after``)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(after, line)) if after else 0
    return next(i for i, line in enumerate(lines) if i >= start and re.search(pattern, line)) + 1


def summary(project: Any, env: str = "sandbox") -> dict[str, Any]:
    return json.loads((project.latest(env) / "summary.json").read_text())  # type: ignore[no-any-return]


def by_id(project: Any, env: str = "sandbox") -> dict[str, dict[str, Any]]:
    return {c["nodeid"]: c for c in summary(project, env)["checks"]}


def junit_properties(project: Any, name: str, env: str = "sandbox") -> list[tuple[str, str]]:
    tree = ET.parse(project.latest(env) / "junit.xml")
    for case in tree.iter("testcase"):
        if case.get("name") == name:
            return [(p.get("name", ""), p.get("value", "")) for p in case.iter("property")]
    raise AssertionError(f"no testcase {name} in junit.xml")


def html_results(project: Any, env: str = "sandbox") -> dict[str, list[str]]:
    """The result column of report.html's table, per test (pytest-html keeps it as JSON)."""
    text = (project.latest(env) / "report.html").read_text()
    blob = re.search(r'data-jsonblob="([^"]*)"', text)
    assert blob is not None, "report.html has no results table"
    tests = json.loads(unescape(blob.group(1)))["tests"]
    return {nodeid: [row["result"] for row in rows] for nodeid, rows in tests.items()}


# -- WARN ----------------------------------------------------------------------------------
def test_warn_is_visible_as_warn_everywhere(project: Any) -> None:
    """An environment override makes 4 idle sessions a warning: shown as WARN in the terminal,
    JUnit, the HTML report and summary.json, and the run passes."""
    env = project.use_foundation()
    env["thresholds"]["postgres.stale_idle_sessions"] = {"warn": 1, "crit": 10}
    path = project.write_env(env)
    source = f"warn from environments/sandbox.yaml:{line_of(path, r'postgres.stale_idle_sessions')}"
    result = project.run("checks/capacity", "--target", "db", "-v",
                         "--sandbox-fault", "idle-connections")
    assert result.returncode == 0, result.output
    expected = (f"db: postgres.stale_idle_sessions = 4 sessions, expected ≤ 1 sessions "
                f"({source}) → WARN")
    # Terminal: the status word, the evidence section, the summary line.
    assert re.search(rf"^{re.escape(STALE)} WARN\b", result.stdout, re.M), result.stdout
    assert f"WARN  {STALE}: {expected}" in result.stdout
    assert re.search(r"\b1 warned in [\d.]+s =+$", result.stdout, re.M), result.stdout
    # JUnit: a property outcome=WARN and the evidence.
    props = junit_properties(project, "test_stale_idle_sessions[db]")
    assert ("outcome", "WARN") in props
    assert ("evidence", expected) in props
    # summary.json
    check = by_id(project)[STALE]
    assert check["outcome"] == "WARN"
    assert summary(project)["counts"]["WARN"] == 1
    measured = [m for m in check["evidence"] if m["name"] == "postgres.stale_idle_sessions"]
    assert measured == [{"name": "postgres.stale_idle_sessions", "target": "db", "value": 4,
                         "unit": "sessions", "verdict": "WARN", "expected": "≤ 1 sessions",
                         "source": source, "item": "", "capacity": None,
                         "warn": 1.0, "crit": 10.0}]
    # HTML: in the warnings section first, and as the result of the row.
    html = (project.latest() / "report.html").read_text()
    attention = html[html.index("<h3>Failures and warnings</h3>"):]
    assert re.search(r"<b style='color:#[0-9a-f]+'>WARN</b> <code>" + re.escape(STALE), attention)
    assert expected in attention
    assert html_results(project)[STALE] == ["Warn"]


# -- thresholds: precedence and source ---------------------------------------------------------
def test_threshold_precedence_target_over_environment_over_check_default(project: Any) -> None:
    env = project.use_foundation()
    env["thresholds"] = {"http.latency_p95_ms": {"warn": 0.001, "crit": 0.002}}
    api = env["targets"]["api"]
    api["thresholds"] = {"http.latency_p95_ms": {"warn": 0.001, "crit": 100000}}
    env["targets"]["api-env"] = {"type": "http", "url": api["url"],
                                 "latency": {"path": "/health", "samples": 3}}
    path = project.write_env(env)
    target_line = line_of(path, r"http.latency_p95_ms", after=r"^  api:")
    env_line = line_of(path, r"http.latency_p95_ms")
    assert target_line != env_line
    result = project.run("checks/health/test_http.py", "checks/capacity", "-k",
                         "latency or stale", "--target", "api", "--target", "api-env",
                         "--target", "db")
    assert result.returncode == 1, result.output
    checks = by_id(project)

    def judged(nodeid: str, name: str) -> dict[str, Any]:
        found = [m for m in checks[nodeid]["evidence"] if m["name"] == name]
        assert found, (checks[nodeid], result.output)
        return found[0]

    own = judged(LATENCY.format("api"), "http.latency_p95_ms")
    assert (own["verdict"], own["expected"]) == ("WARN", "≤ 0.001 ms")
    assert own["source"] == f"warn from environments/sandbox.yaml:{target_line}"
    inherited = judged(LATENCY.format("api-env"), "http.latency_p95_ms")
    assert (inherited["verdict"], inherited["expected"]) == ("FAIL", "≤ 0.002 ms")
    assert inherited["source"] == f"crit from environments/sandbox.yaml:{env_line}"
    default = judged(STALE, "postgres.stale_idle_sessions")
    assert (default["verdict"], default["expected"]) == ("PASS", "≤ 20 sessions")
    assert default["source"] == "crit from check default"
    # The terminal names the source of what failed.
    assert ("api-env: http.latency_p95_ms = " in result.stdout)
    assert (f"expected ≤ 0.002 ms (crit from environments/sandbox.yaml:{env_line}) → FAIL"
            in result.stdout)


# -- FAIL without evidence, SKIP without target ---------------------------------------------------
SILENT = '''
import pytest


@pytest.mark.daily
def test_silent(redis):
    redis.ping()  # talks to the server, but records nothing
'''


def test_a_check_that_records_no_evidence_fails(project: Any) -> None:
    project.use_foundation()
    project.write("checks/health/test_silent.py", SILENT)
    result = project.run("checks/health/test_silent.py", "--target", "cache")
    assert result.returncode == 1, result.output
    nodeid = "checks/health/test_silent.py::test_silent[cache]"
    check = by_id(project)[nodeid]
    assert check["outcome"] == "FAIL", check
    assert check["message"] == ("test_silent[cache] recorded no evidence: a check must measure "
                                "something (use the evidence fixture)")


def test_a_check_module_that_does_not_import_is_one_collection_error(project: Any) -> None:
    """-rA lists every report, the collection error's too: it has no user properties."""
    project.write("environments/plain.yaml", ONLY_HTTP)
    project.write("checks/health/test_broken.py", "import no_such_module_here\n")
    result = project.run("--env", "plain", "-rA", "checks/health/test_broken.py")
    assert result.returncode == 2, result.output
    assert "No module named 'no_such_module_here'" in result.output
    assert "INTERNALERROR" not in result.output
    assert "AttributeError" not in result.output


ONLY_HTTP = """
description: no Redis here
targets:
  api:
    type: http
    url: http://127.0.0.1:9
"""


def test_a_check_without_a_target_of_its_type_is_a_visible_skip(project: Any) -> None:
    project.use_foundation()
    project.write("environments/web.yaml", ONLY_HTTP)
    result = project.run("--env", "web", "checks/health/test_redis.py", "-k", "test_ping",
                         "-rs")
    assert result.returncode == 0, result.output
    reason = ("no redis target in environment 'web': this check has nothing to run against")
    assert re.search(r"SKIPPED \[1\] .*" + re.escape(reason), result.stdout), result.stdout
    assert "1 skipped" in result.stdout
    check = by_id(project, "web")["checks/health/test_redis.py::test_ping[no-redis-target]"]
    assert (check["outcome"], check["message"]) == ("SKIP", reason)


def test_an_unreachable_target_is_reported_without_rendering_a_traceback(
        project: Any) -> None:
    """Each ERROR of an unreachable target is its one line, and pytest's traceback renderer
    (which parses the source of every frame: 50 ms an ERROR) is never called for it."""
    project.use_foundation()
    project.write("environments/web.yaml", ONLY_HTTP.replace(
        "    url: http://127.0.0.1:9\n",
        "    url: http://127.0.0.1:9\n    health: [{path: /health}, {path: /ready}]\n"))
    project.write("checks/conftest.py", """
import _pytest.nodes

RENDERED = []
original = _pytest.nodes.Node._repr_failure_py

def counting(self, *args, **kwargs):
    RENDERED.append(self.nodeid)
    return original(self, *args, **kwargs)

_pytest.nodes.Node._repr_failure_py = counting

def pytest_sessionfinish(session):
    print(f"tracebacks rendered: {len(RENDERED)}")
""")
    result = project.run("--env", "web", "checks/health/test_http.py", "-k", "test_health",
                         "-s")
    assert result.returncode == 1, result.output
    errors = [c for c in by_id(project, "web").values() if c["outcome"] == "ERROR"]
    assert len(errors) == 2, result.output
    assert {c["message"] for c in errors} == {
        "api (http://127.0.0.1:9): cannot connect: connection refused"}
    assert "tracebacks rendered: 0" in result.stdout
    assert "Traceback" not in result.output


# -- --target ------------------------------------------------------------------------------
def test_target_narrows_the_run_to_that_targets_checks(project: Any) -> None:
    project.use_foundation()
    result = project.run("-m", "daily", "--target", "cache")
    assert result.returncode == 0, result.output
    ran = by_id(project)
    assert ran, result.output
    assert all(nodeid.endswith("[cache]") or "[cache:" in nodeid for nodeid in ran), list(ran)
    assert PING in ran
    # Checks of other types are deselected, not skipped: nothing to run is not a result.
    assert summary(project)["counts"]["SKIP"] == 0


def test_an_unknown_target_is_a_usage_error_listing_the_targets(project: Any) -> None:
    project.write("environments/web.yaml", ONLY_HTTP)
    result = project.run("--env", "web", "--target", "db")
    assert result.returncode == 4, result.output
    assert result.stderr.strip() == ("ERROR: --target db: no such target in environment "
                                     "'web'; targets: api")


# -- markers -------------------------------------------------------------------------------
DECLARED = """
description: sql_checks that declare their cadence and category
targets:
  db:
    type: postgres
    dsn: postgresql://opsverify:not-used-here@127.0.0.1:9/app
    sql_checks:
      - {name: nightly_backup_row, query: SELECT 1, expect: {min: 1},
         cadence: weekly, category: backup}
      - {name: no_stuck_runs, query: SELECT 0, expect: {max: 0},
         cadence: [daily, deploy_gate]}
      - {name: active_runs, query: SELECT 0, expect: {max: 100}, category: capacity}
"""


def collected(project: Any, *args: str) -> list[str]:
    result = project.run("--env", "declared", "--collect-only", "-q", *args)
    assert result.returncode in (0, 5), result.output
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_categories_come_from_folders_and_sql_checks_declare_theirs(project: Any) -> None:
    project.use_foundation()
    project.write("environments/declared.yaml", DECLARED)
    sql = "checks/health/test_postgres.py::test_sql_check[db:{}]"
    capacity = collected(project, "-m", "capacity")
    assert capacity, "nothing selected by -m capacity"
    assert set(capacity) - {sql.format("active_runs")} == {
        n for n in capacity if n.startswith("checks/capacity/")}
    assert sql.format("active_runs") in capacity
    health = collected(project, "-m", "health")
    assert health
    assert all(n.startswith("checks/health/") for n in health)
    assert sql.format("active_runs") not in health
    assert sql.format("no_stuck_runs") in health
    assert collected(project, "-m", "backup") == [sql.format("nightly_backup_row")]
    gate = collected(project, "-m", "deploy_gate")
    assert sql.format("no_stuck_runs") in gate
    assert sql.format("active_runs") not in gate  # daily only: the default cadence
    assert collected(project, "-m", "weekly and backup") == [sql.format("nightly_backup_row")]
    daily = collected(project, "-m", "daily")
    assert {sql.format("no_stuck_runs"), sql.format("active_runs")} <= set(daily)
    assert sql.format("nightly_backup_row") not in daily


TYPO = '''
import pytest


@pytest.mark.dayly
def test_typo(evidence):
    evidence.note("x", 1)
'''


def test_an_unknown_marker_in_a_check_file_is_an_error(project: Any) -> None:
    project.write("environments/web.yaml", ONLY_HTTP)
    project.write("checks/health/test_typo.py", TYPO)
    result = project.run("--env", "web")
    assert result.returncode not in (0, 5), result.output
    assert "'dayly' not found in `markers` configuration option" in result.stdout
    assert "1 error" in result.stdout


def test_an_unknown_marker_in_m_is_a_usage_error(project: Any) -> None:
    project.write("environments/web.yaml", ONLY_HTTP)
    project.use_foundation()
    result = project.run("--env", "web", "-m", "dayly")
    assert result.returncode == 4, result.output
    assert "ERROR: Unknown marker(s) in '-m' expression: dayly." in result.stderr


# -- waivers -------------------------------------------------------------------------------
def waiver(check: str, expires: date, owner: str = "alice") -> dict[str, Any]:
    return {"check": check, "reason": "pool leak, ticket OPS-7", "owner": owner,
            "expires": expires.isoformat()}


def test_a_failing_check_under_an_unexpired_waiver_is_waived(project: Any) -> None:
    env = project.use_foundation()
    until = date.today() + timedelta(days=30)
    env["waivers"] = [waiver("checks/capacity/test_postgres.py::test_stale_idle_sessions[*]",
                             until)]
    project.write_env(env)
    result = project.run("checks/capacity", "--target", "db", "--sandbox-fault",
                         "idle-connections")
    assert result.returncode == 0, result.output
    text = f"WAIVED until {until}: pool leak, ticket OPS-7 (owner alice)"
    assert "1 waived" in result.stdout
    assert f"WAIVED {STALE}: {text}" in result.stdout
    assert f"WAIVED {STALE}: db: postgres.stale_idle_sessions = 4 sessions" in result.stdout
    check = by_id(project)[STALE]
    assert check["outcome"] == "WAIVED"
    assert check["message"].startswith(text)
    assert any(m["verdict"] == "FAIL" for m in check["evidence"])  # the failure stays on record
    junit = ET.parse(project.latest() / "junit.xml")
    skipped = next(c for c in junit.iter("testcase")
                   if c.get("name") == "test_stale_idle_sessions[db]").find("skipped")
    assert skipped is not None
    assert skipped.get("type") == "pytest.xfail"
    assert skipped.get("message") == text


def test_an_expired_waiver_fails_the_run(project: Any) -> None:
    env = project.use_foundation()
    expired = date.today() - timedelta(days=1)
    env["waivers"] = [waiver(PING, expired, owner="bob")]
    project.write_env(env)
    result = project.run("checks/health/test_redis.py", "-k", "test_ping", "--target", "cache")
    assert result.returncode == 1, result.output
    assert "1 passed" in result.stdout  # the check itself holds; the accepted risk expired
    assert (f"opsverify: waiver for {PING} (owner bob) expired on {expired}: renew it or fix "
            "the check") in result.stdout
    assert summary(project)["exit_status"] == 1


def test_an_expired_waiver_does_not_waive(project: Any) -> None:
    env = project.use_foundation()
    env["waivers"] = [waiver(STALE, date.today() - timedelta(days=1))]
    project.write_env(env)
    result = project.run("checks/capacity", "--target", "db", "--sandbox-fault",
                         "idle-connections")
    assert result.returncode == 1, result.output
    assert by_id(project)[STALE]["outcome"] == "FAIL"
    assert "1 failed" in result.stdout


# -- nothing selected ----------------------------------------------------------------------
def test_an_empty_selection_exits_non_zero_with_a_clear_message(project: Any) -> None:
    project.use_foundation()
    project.write("environments/web.yaml", ONLY_HTTP)
    result = project.run("--env", "web", "-k", "no_check_is_called_this")
    assert result.returncode == 5, result.output
    assert "opsverify: no check was selected — a gate must not pass on nothing; check -m, " \
        "--target and --env" in result.stdout
    assert summary(project, "web")["checks"] == []
