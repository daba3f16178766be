"""The report set every run writes: reports/<env>/<YYYYmmdd-HHMMSS>/ with report.html,
junit.xml, allure-results/ and summary.json, and reports/<env>/latest; with xdist, once, by
the controller. Runs go against the real sandbox with faults, so there is something to report.
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^\d{8}-\d{6}(-\d+)?$")
STALE = "checks/capacity/test_postgres.py::test_stale_idle_sessions[db]"
STUCK = "checks/health/test_postgres.py::test_sql_check[db:no_stuck_runs]"
SUMMARY_KEYS = {"schema", "run_id", "environment", "operator", "host", "started", "finished",
                "duration_s", "revision", "exit_status", "counts", "checks", "audit",
                "previous_run", "interrupted"}
CHECK_KEYS = {"nodeid", "outcome", "target", "duration_s", "evidence", "message", "plan",
              "applied", "probes", "since_last", "failing_since", "attempts"}
EVIDENCE_KEYS = {"name", "target", "value", "unit", "verdict", "expected", "source", "item",
                 "capacity", "warn", "crit"}
OUTCOMES = ["FAIL", "ERROR", "WARN", "WAIVED", "PLAN", "SKIP", "PASS"]






def run_dirs(project: Any, env: str = "sandbox") -> list[Path]:
    # The environment's directory also holds history.jsonl (and latest): runs are dirs.
    return sorted(p for p in (project.reports / env).iterdir()
                  if p.name != "latest" and p.is_dir())


def git(project: Any, *args: str) -> str:
    """git in the throw-away project only (never in the repository under test)."""
    return subprocess.run(
        ["git", "-C", str(project.path), "-c", "user.name=t", "-c", "user.email=t@localhost",
         *args], capture_output=True, text=True, check=True).stdout.strip()


def test_a_run_writes_the_full_report_set(project: Any) -> None:
    env = project.use_foundation()
    env["thresholds"]["postgres.stale_idle_sessions"] = {"warn": 1, "crit": 10}
    project.write_env(env)
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "checks")
    revision = git(project, "rev-parse", "--short", "HEAD")
    result = project.run("-m", "daily", "--sandbox-fault", "idle-connections",
                         "--sandbox-fault", "stuck-run")
    assert result.returncode == 1, result.output

    (run,) = run_dirs(project)
    assert STAMP.match(run.name), run.name
    assert project.latest() == run
    assert {p.name for p in run.iterdir()} == {"report.html", "junit.xml", "summary.json",
                                               "allure-results"}
    assert f"opsverify: report in reports/sandbox/{run.name}/" in result.stdout

    # summary.json: a stable schema, the outcome and the evidence of every check.
    data = json.loads((run / "summary.json").read_text())
    assert set(data) == SUMMARY_KEYS
    assert data["schema"] == 1
    assert list(data["counts"]) == OUTCOMES
    assert data["environment"]["name"] == "sandbox"
    assert data["environment"]["chosen_by"] == "default"
    assert data["environment"]["sandbox_faults"] == ["idle-connections", "stuck-run"]
    assert data["revision"] == revision
    assert data["exit_status"] == 1
    checks = {c["nodeid"]: c for c in data["checks"]}
    for check in checks.values():
        assert set(check) == CHECK_KEYS
        assert check["outcome"] in OUTCOMES
        for measurement in check["evidence"]:
            assert set(measurement) == EVIDENCE_KEYS
        if check["outcome"] in ("PASS", "WARN", "FAIL"):
            assert check["evidence"], check
    assert sum(data["counts"].values()) == len(checks)
    assert checks[STUCK]["outcome"] == "FAIL"
    assert checks[STALE]["outcome"] == "WARN"
    # Failures first, then warnings: the order a reader needs.
    outcomes = [c["outcome"] for c in data["checks"]]
    assert outcomes == sorted(outcomes, key=OUTCOMES.index)
    stuck = [m for m in checks[STUCK]["evidence"] if m["verdict"] == "FAIL"]
    assert [(m["name"], m["value"], m["expected"]) for m in stuck] == [
        ("sql.no_stuck_runs", 1, "≤ 0 runs")]

    # junit.xml: every check, with its evidence as properties.
    junit = ET.parse(run / "junit.xml")
    cases = {f"{c.get('classname')}.{c.get('name')}": c for c in junit.iter("testcase")}
    assert len(cases) == len(checks)
    stuck_case = cases["checks.health.test_postgres.test_sql_check[db:no_stuck_runs]"]
    props = [(p.get("name"), p.get("value")) for p in stuck_case.iter("property")]
    assert ("target", "db") in props
    assert any(name == "evidence" and value and value.startswith(
        "db: sql.no_stuck_runs = 1 runs, expected ≤ 0 runs") and value.endswith("→ FAIL")
        for name, value in props), props
    assert stuck_case.find("failure") is not None
    stale_props = [(p.get("name"), p.get("value")) for p in cases[
        "checks.capacity.test_postgres.test_stale_idle_sessions[db]"].iter("property")]
    assert ("outcome", "WARN") in stale_props

    # allure-results: one result file per check, the evidence attached.
    results = [json.loads(p.read_text()) for p in (run / "allure-results").glob("*-result.json")]
    assert len(results) == len(checks)
    assert {r["status"] for r in results} >= {"passed", "failed"}
    stuck_result = next(r for r in results if r["name"] == "test_sql_check[db:no_stuck_runs]")
    (attachment,) = [a for a in stuck_result.get("attachments", []) if a["name"] == "evidence"]
    assert "db: sql.no_stuck_runs = 1 runs, expected ≤ 0 runs" in \
        (run / "allure-results" / attachment["source"]).read_text()

    # report.html: self-contained; the header, then failures and warnings with evidence.
    html = (run / "report.html").read_text()
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html, re.I)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", html, re.I)
    assert not re.search(r"<img[^>]+src=[\"']?https?:", html, re.I)
    head = html[html.index("<div id='opsverify-header'>"):]
    for label in ("Environment", "Environment file", "Run by", "When", "Suite revision",
                  "Injected faults"):
        assert f">{label}</th>" in head, label
    assert "<td>sandbox — " in head
    assert f"<td>{data['operator']} on {data['host']}</td>" in head
    assert f"<td>{revision}</td>" in head
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC → \d\d:\d\d:\d\d UTC</td>", head)
    for outcome, count in data["counts"].items():
        if count:
            assert f">{outcome} {count}</span>" in head, outcome
    attention = head[head.index("<h3>Failures and warnings</h3>"):]
    assert attention.index(STUCK) < attention.index(STALE)  # failures before warnings
    assert "db: sql.no_stuck_runs = 1 runs, expected ≤ 0 runs" in attention
    assert "db: postgres.stale_idle_sessions = 4 sessions, expected ≤ 1 sessions" in attention
    # ...and all of it comes before the table of every result.
    assert html.index("<h3>Failures and warnings</h3>") < html.index('id="results-table"')
    blob = re.search(r'data-jsonblob="([^"]*)"', html)
    assert blob is not None
    rows = json.loads(unescape(blob.group(1)))["tests"]
    assert [r["result"] for r in rows[STALE]] == ["Warn"]
    assert "sql.no_stuck_runs = 1 runs" in rows[STUCK][0]["log"]


def test_latest_points_at_the_newest_run(project: Any) -> None:
    project.use_foundation()
    first = project.run("checks/health/test_redis.py", "--target", "cache")
    assert first.returncode == 0, first.output
    second = project.run("checks/health/test_redis.py", "--target", "cache")
    assert second.returncode == 0, second.output
    older, newer = run_dirs(project)
    latest = project.reports / "sandbox" / "latest"
    assert latest.is_symlink()
    assert latest.resolve() == newer.resolve()
    assert str(latest.readlink()) == newer.name  # relative: the tree can be moved or archived
    assert json.loads((older / "summary.json").read_text())["run_id"] != \
        json.loads((newer / "summary.json").read_text())["run_id"]


def test_with_xdist_the_report_set_is_written_once_by_the_controller(project: Any) -> None:
    project.use_foundation()
    result = project.run("-m", "daily", "-n", "2", "--sandbox-fault", "stuck-run")
    assert result.returncode == 1, result.output
    assert "2 workers" in result.stdout
    (run,) = run_dirs(project)
    assert {p.name for p in run.iterdir()} == {"report.html", "junit.xml", "summary.json",
                                               "allure-results"}
    data = json.loads((run / "summary.json").read_text())
    checks = {c["nodeid"]: c for c in data["checks"]}
    assert len(checks) >= 8
    assert checks[STUCK]["outcome"] == "FAIL"
    # Every result reached the controller: its counts are those of the terminal's last line.
    assert data["counts"]["FAIL"] == 1
    assert f"1 failed, {data['counts']['PASS']} passed" in result.stdout
    assert all(c["evidence"] for c in checks.values() if c["outcome"] in ("PASS", "FAIL"))
    junit = ET.parse(run / "junit.xml")
    assert len(list(junit.iter("testcase"))) == len(checks)
    assert any(p.get("name") == "evidence" for p in junit.iter("property"))
    results = list((run / "allure-results").glob("*-result.json"))
    assert len(results) == len(checks)
    html = (run / "report.html").read_text()
    assert html.count("<div id='opsverify-header'>") == 1
    assert STUCK in html[html.index("<h3>Failures and warnings</h3>"):]


@pytest.mark.parametrize("asked", ["default", "setting", "alluredir"])
def test_allure_results_are_written_only_when_asked(project: Any, tmp_path: Any,
                                                    asked: str) -> None:
    from tests.test_probes import RecordingServer, http_environment

    server = RecordingServer(delay_s=0)
    try:
        project.copy_check("checks/health/test_http.py")
        settings = ", allure: true" if asked == "setting" else ""
        project.write("environments/probed.yaml", http_environment(server.port, 2, 1, settings))
        mine = tmp_path / "my-allure"
        extra = [f"--alluredir={mine}"] if asked == "alluredir" else []
        result = project.run("--env", "probed", "-m", "daily or not daily", *extra)
    finally:
        server.close()
    assert result.returncode == 0, result.output
    (run,) = run_dirs(project, "probed")
    names = {p.name for p in run.iterdir()}
    assert names >= {"report.html", "junit.xml", "summary.json"}
    assert ("allure-results" in names) == (asked == "setting"), names
    if asked == "setting":
        assert len(list((run / "allure-results").glob("*-result.json"))) == 7  # 4 checks, 3 SKIPs
        assert "allure-results/" in result.stdout
    if asked == "alluredir":
        assert len(list(mine.glob("*-result.json"))) == 7  # the user's path, as given


LEAKY_CHECK = '''
import pytest


@pytest.mark.daily
def test_leaky(env, evidence):
    # A careless check that shows a DSN: the report writer must scrub its password.
    evidence.note("dsn", env.model.targets["db"].dsn)
'''


def test_the_users_own_junit_and_html_paths_are_written_and_so_are_ours(project: Any) -> None:
    """What CI test-report features are set up with: --junitxml=results.xml, --html=...;
    the run directory keeps its own copies, and the user's files are scrubbed too."""
    project.use_foundation()
    project.write("checks/health/test_leaky.py", LEAKY_CHECK)
    canary = "users-paths-canary-8d2f1e"
    result = project.run("-m", "daily", "-p", "no:xdist", "--sandbox-fault", "stuck-run",
                         "--junitxml=out/results.xml", "--html=out/user.html",
                         env={"OPSVERIFY_SANDBOX_PASSWORD": canary})
    assert result.returncode == 1, result.output
    users_junit = project.path / "out" / "results.xml"
    users_html = project.path / "out" / "user.html"
    assert users_junit.is_file(), result.output
    assert users_html.is_file()
    (run,) = run_dirs(project)
    ours = (run / "junit.xml").read_text()
    theirs = users_junit.read_text()
    for text in (ours, theirs):
        assert 'name="test_sql_check[db:no_stuck_runs]"' in text
        assert "<failure" in text
        assert '<property name="evidence"' in text
        assert "dsn = " in text  # the leaky note is there, its password is not
    assert theirs.count("<testcase") == ours.count("<testcase") > 10
    html = (run / "report.html").read_text()
    assert "opsverify-header" in html
    assert "opsverify-header" in users_html.read_text()
    for path in (users_junit, users_html, run / "junit.xml", run / "report.html"):
        assert canary not in path.read_text(), path
