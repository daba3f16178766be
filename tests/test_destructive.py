"""Destructive checks against the real sandbox: gated, planned, bounded, applied, audited.

The runs use the real ``checks/remediation/test_postgres.py`` and ``--sandbox-fault
idle-connections`` (four application sessions left idle). What changed is verified against
PostgreSQL itself, by a probe that reads ``pg_stat_activity`` with its own connection before
and after the remediation, outside opsverify's clients.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = '''
"""Reads pg_stat_activity on its own connection, to see what the remediation changed."""
import json
import os

import psycopg
import pytest


@pytest.mark.daily
def test_probe(env):
    with psycopg.connect(env.model.targets["db"].dsn, connect_timeout=5,
                         application_name="probe") as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'ts-forecast-worker' "
            "ORDER BY pid").fetchall()
    with open(os.environ["PROBE_OUT"], "a") as out:
        out.write(json.dumps({"when": os.path.basename(os.path.dirname(__file__)),
                              "pids": [row[0] for row in rows]}) + "\\n")
'''
REMEDIATION = "checks/remediation/test_postgres.py::test_terminate_idle_sessions[db]"
IDLE_SESSIONS = 4




@pytest.fixture
def sandbox_project(project: Any) -> Any:
    project.use_foundation()
    project.write("checks/probe_before/test_probe.py", PROBE)
    project.write("checks/probe_zafter/test_probe.py", PROBE)
    return project


def run_remediation(project: Any, *flags: str) -> tuple[Any, dict[str, list[int]]]:
    """The remediation between two probes; returns the result and the pids each probe saw."""
    out = project.path / "probe.jsonl"
    result = project.run(
        "checks/probe_before", REMEDIATION.removesuffix("[db]"), "checks/probe_zafter",
        "-m", "daily or destructive", "--target", "db", "--sandbox-fault", "idle-connections",
        *flags, env={"PROBE_OUT": str(out), "GITHUB_ACTOR": "octocat"})
    seen = {}
    if out.exists():
        for line in out.read_text().splitlines():
            record = json.loads(line)
            seen[record["when"]] = record["pids"]
    return result, seen


def summary(project: Any, env: str = "sandbox") -> dict[str, Any]:
    return json.loads((project.latest(env) / "summary.json").read_text())  # type: ignore[no-any-return]


def check(project: Any, nodeid: str = REMEDIATION, env: str = "sandbox") -> dict[str, Any]:
    checks = summary(project, env)["checks"]
    found = [c for c in checks if c["nodeid"] == nodeid]
    assert len(found) == 1, checks
    return found[0]  # type: ignore[no-any-return]


def test_deselected_without_the_flag_and_told_how_to_enable(sandbox_project: Any) -> None:
    result = sandbox_project.run("-m", "destructive", "--target", "db")
    assert result.returncode == 5, result.output
    assert re.search(r"opsverify: \d+ destructive check\(s\) deselected: they change "
                     r"systems; add --allow-destructive=sandbox \(with --plan to only see "
                     r"what they would do\)", result.stdout), result.stdout
    assert "no check was selected — a gate must not pass on nothing" in result.stdout


def test_deselected_unless_selected_by_marker(sandbox_project: Any) -> None:
    """The second opt-in: allowed for the environment, but not asked for by -m."""
    result = sandbox_project.run("checks/remediation", "--target", "db",
                                 "--allow-destructive=sandbox")
    assert result.returncode == 5, result.output
    assert re.search(r"destructive check\(s\) deselected: a destructive check runs only when "
                     r"selected by name: add -m destructive", result.stdout), result.stdout
    result = sandbox_project.run("checks/remediation", "--target", "db", "-m", "not daily",
                                 "--allow-destructive=sandbox", "--collect-only", "-q")
    assert REMEDIATION not in result.stdout, result.output


def test_collected_only_for_targets_that_enable_the_action(sandbox_project: Any) -> None:
    """The third opt-in: db lists terminate_idle_sessions under remediation:; db-cluster,
    the same server, does not."""
    result = sandbox_project.run("-m", "destructive", "--allow-destructive=sandbox",
                                 "--collect-only", "-q", "-k", "terminate_idle_sessions")
    assert result.returncode == 0, result.output
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert collected == [REMEDIATION], result.stdout


def test_deselected_among_others_the_rest_still_runs(sandbox_project: Any) -> None:
    result = sandbox_project.run("checks/remediation", "checks/health/test_redis.py",
                                 "--target", "db", "--target", "cache")
    assert result.returncode == 0, result.output
    assert re.search(r"\b\d+ passed, \d+ deselected\b", result.stdout), result.stdout
    assert "--allow-destructive=sandbox" in result.stdout


def test_refused_when_the_flag_names_another_environment(sandbox_project: Any) -> None:
    result = sandbox_project.run("-m", "destructive", "--allow-destructive=prod")
    assert result.returncode == 4, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [
        "ERROR: --allow-destructive=prod does not name the selected environment 'sandbox'; "
        "to change sandbox, pass --allow-destructive=sandbox"], result.output
    assert not sandbox_project.reports.exists()


PROTECTED = """
description: Production (protected)
protected: true
targets:
  db:
    type: postgres
    dsn: postgresql://opsverify:never-used-pw@127.0.0.1:9/prod
    remediation: {terminate_idle_sessions: {older_than_s: 3600}}
"""


@pytest.mark.parametrize("flag", ["*", "staging"])
def test_a_protected_environment_accepts_only_its_own_name(project: Any, flag: str) -> None:
    project.use_foundation()
    project.write("environments/prod.yaml", PROTECTED)
    result = project.run("--env", "prod", "-m", "destructive", f"--allow-destructive={flag}")
    assert result.returncode == 4, result.output
    assert f"--allow-destructive={flag} does not name the selected environment 'prod' " \
        "(it is protected: name it exactly); to change prod, pass --allow-destructive=prod" \
        in result.stderr
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_a_protected_environment_named_exactly_is_allowed(project: Any) -> None:
    project.use_foundation()
    project.write("environments/prod.yaml", PROTECTED)
    result = project.run("--env", "prod", "-m", "destructive", "--allow-destructive=prod",
                         "--collect-only", "-q")
    assert result.returncode == 0, result.output
    assert REMEDIATION in result.stdout


def test_plan_changes_nothing_and_lists_the_sessions(sandbox_project: Any) -> None:
    result, seen = run_remediation(sandbox_project, "--allow-destructive=sandbox", "--plan")
    assert result.returncode == 0, result.output
    before, after = seen["probe_before"], seen["probe_zafter"]
    assert len(before) == IDLE_SESSIONS, seen
    assert after == before, "--plan terminated sessions"
    assert "1 planned" in result.stdout
    for pid in before:
        assert re.search(rf"^PLAN  {re.escape(REMEDIATION)}: db: terminate_idle_sessions "
                         rf"pid {pid} started \S+ \(ts_app 'ts-forecast-worker' from "
                         r"127.0.0.1, idle \d+ s\) \[plan [0-9a-f]{12}\]$", result.stdout, re.M)
    outcome = check(sandbox_project)
    assert outcome["outcome"] == "PLAN"
    assert [int(p.split("pid ")[1].split()[0]) for p in outcome["plan"]] == before
    assert outcome["applied"] == []
    assert summary(sandbox_project)["audit"] == []
    assert not (sandbox_project.reports / "audit.jsonl").exists()
    html = (sandbox_project.latest() / "report.html").read_text()
    assert "Planned changes (--plan, nothing applied)" in html
    assert f"terminate_idle_sessions pid {before[0]} started" in html


def test_applied_terminates_audits_reports_and_rechecks(sandbox_project: Any) -> None:
    result, seen = run_remediation(sandbox_project, "--allow-destructive=sandbox")
    assert result.returncode == 0, result.output
    before, after = seen["probe_before"], seen["probe_zafter"]
    assert len(before) == IDLE_SESSIONS, seen
    assert after == [], "the idle sessions are still in pg_stat_activity"

    audit = [json.loads(line) for line in
             (sandbox_project.reports / "audit.jsonl").read_text().splitlines()]
    assert sorted(int(e["identity"].split()[1]) for e in audit) == before
    assert len({e["plan_id"] for e in audit}) == 1
    for entry in audit:
        assert set(entry) == {"time", "operator", "ci_actor", "env", "target", "action",
                              "plan_id", "identity", "before", "after", "result", "check",
                              "run_id"}
        assert entry["env"] == "sandbox"
        assert entry["target"] == "db"
        assert entry["action"] == "terminate_idle_sessions"
        assert (entry["result"], entry["after"]) == ("applied", "terminated")
        assert entry["operator"]
        assert entry["ci_actor"] == "octocat (GITHUB_ACTOR)"
        assert entry["time"].startswith("20")
        assert "ts-forecast-worker" in entry["before"]
        assert entry["check"] == REMEDIATION

    outcome = check(sandbox_project)
    assert outcome["outcome"] == "PASS"
    assert len(outcome["applied"]) == IDLE_SESSIONS
    assert len(summary(sandbox_project)["audit"]) == IDLE_SESSIONS
    # The re-check: evidence recorded after the last action says the leak is gone.
    assert [(m["name"], m["value"], m["verdict"]) for m in outcome["evidence"]] == [
        ("postgres.stale_idle_sessions", 0, "PASS")]
    html = (sandbox_project.latest() / "report.html").read_text()
    assert "Changes applied (audit)" in html
    for pid in before:
        assert f"terminate_idle_sessions pid {pid} started" in html
    junit = (sandbox_project.latest() / "junit.xml").read_text()
    assert junit.count('<property name="applied"') == IDLE_SESSIONS
    assert re.search(r"^APPLIED .*: db: terminate_idle_sessions pid \d+ started \S+: applied "
                     r"-> terminated \[plan [0-9a-f]{12}\]$", result.stdout, re.M)

    # A second run appends to the same audit log.
    again, _ = run_remediation(sandbox_project, "--allow-destructive=sandbox")
    assert again.returncode == 0, again.output
    lines = (sandbox_project.reports / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2 * IDLE_SESSIONS
    assert len({json.loads(line)["run_id"] for line in lines}) == 2


def test_max_actions_stops_before_changing_anything(sandbox_project: Any) -> None:
    # '*' is accepted for an environment that is not protected.
    result, seen = run_remediation(sandbox_project, "--allow-destructive=*", "--max-actions=2")
    assert result.returncode == 1, result.output
    before, after = seen["probe_before"], seen["probe_zafter"]
    assert len(before) == IDLE_SESSIONS
    assert after == before, "sessions were terminated past --max-actions"
    outcome = check(sandbox_project)
    assert outcome["outcome"] == "FAIL"
    assert re.match(r"db: terminate_idle_sessions: refused whole, nothing changed: plan "
                    r"[0-9a-f]{12} lists 4 items, over --max-actions=2: pid \d+ started ",
                    outcome["message"]), outcome["message"]
    assert outcome["applied"] == []
    assert not (sandbox_project.reports / "audit.jsonl").exists()


ADMIN_IN_A_HEALTH_CHECK = '''
import pytest


@pytest.mark.daily
def test_sneaky(postgres_admin, evidence):
    evidence.note("pid", postgres_admin.scalar("SELECT pg_backend_pid()"))
'''


@pytest.mark.parametrize("flags", [(), ("--allow-destructive=admin",)],
                         ids=["without-flag", "with-flag"])
def test_write_capable_fixture_errors_in_a_non_destructive_check(
        project: Any, hung_server: Any, flags: tuple[str, ...]) -> None:
    """Refused before any connection: the target is a socket that would hang a client."""
    project.write("environments/admin.yaml", (
        "targets:\n  db:\n    type: postgres\n    timeout_s: 1\n"
        f"    dsn: postgresql://opsverify@127.0.0.1:{hung_server.port}/app\n"))
    project.write("checks/health/test_sneaky.py", ADMIN_IN_A_HEALTH_CHECK)
    result = project.run("--env", "admin", *flags)
    assert result.returncode == 1, result.output
    assert "1 error" in result.stdout
    assert "postgres_admin is write-capable and exists only inside a destructive check run " \
        "with --allow-destructive" in result.stdout
    outcome = check(project, "checks/health/test_sneaky.py::test_sneaky[db]", env="admin")
    assert outcome["outcome"] == "ERROR"
    assert hung_server.accepted == [], "the write-capable client connected"


NO_RECHECK = '''
import pytest

from opsverify.remediation.postgres import TerminateIdleSessions


@pytest.mark.destructive
def test_fix_without_recheck(postgres_admin, postgres_terminate_idle_sessions, remediation,
                             evidence):
    stale = postgres_admin.stale_idle_sessions(postgres_admin.spec.idle_session_max_age_s)
    evidence.note("stale sessions before", len(stale))  # measured before, never after
    remediation.run(TerminateIdleSessions(postgres_admin, postgres_terminate_idle_sessions))
'''


def test_a_remediation_that_never_rechecks_fails(project: Any) -> None:
    project.use_foundation()
    project.write("checks/remediation/test_careless.py", NO_RECHECK)
    result = project.run("checks/remediation/test_careless.py", "--target", "db",
                         "-m", "destructive", "--allow-destructive=sandbox",
                         "--sandbox-fault", "idle-connections")
    assert result.returncode == 1, result.output
    nodeid = "checks/remediation/test_careless.py::test_fix_without_recheck[db]"
    outcome = check(project, nodeid)
    assert outcome["outcome"] == "FAIL"
    assert outcome["message"] == (
        "applied 4 item(s) but did not re-check the expectation afterwards (record "
        "evidence after remediation.run)")
    # The actions were applied and audited all the same: the record must be complete.
    assert len((project.reports / "audit.jsonl").read_text().splitlines()) == IDLE_SESSIONS
