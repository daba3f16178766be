"""What changed since the last run: a fault marks exactly its checks ``new``; the next run
with it ``still`` (failing since the run it began); the one after the fix ``fixed``; and the
terminal and the HTML report list them in that order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from opsverify.report.changes import PreviousRun, compare, previous_run
from opsverify.report.summary import CheckResult
from tests.conftest import Project

STUCK = "checks/health/test_postgres.py::test_sql_check[db:no_stuck_runs]"


def result(nodeid: str, outcome: str) -> CheckResult:
    return CheckResult(nodeid, outcome, "db", 0.0, [], "")


def test_compare_marks_each_check_against_the_previous_run() -> None:
    previous = PreviousRun("r1", "2026-11-30T09:00:00+00:00", "20261130-090000", {
        "a": ("FAIL", "2026-11-29T09:00:00+00:00"), "b": ("ERROR", None), "c": ("PASS", None),
        "d": ("WARN", None)})
    now = [result("a", "FAIL"), result("b", "PASS"), result("c", "ERROR"),
           result("d", "WARN"), result("e", "FAIL")]
    marked = {c.nodeid: (c.since_last, c.failing_since)
              for c in compare(now, previous, "2026-12-01T09:00:00+00:00")}
    assert marked == {
        "a": ("still", "2026-11-29T09:00:00+00:00"),  # the streak's first run, carried
        "b": ("fixed", None),
        "c": ("new", "2026-12-01T09:00:00+00:00"),
        "d": ("same", None),  # a warning is not a failure
        "e": ("new", "2026-12-01T09:00:00+00:00"),  # a check the last run did not have
    }
    assert {c.since_last for c in compare(now, None, "t")} == {"new", "same"}


def test_previous_run_skips_what_is_not_a_finished_run(tmp_path: Path) -> None:
    env = tmp_path / "sandbox"
    (env / "20261130-090000").mkdir(parents=True)
    (env / "20261130-090000" / "summary.json").write_text(json.dumps(
        {"run_id": "old", "started": "2026-11-30T09:00:00+00:00", "checks": []}))
    (env / "20261130-100000").mkdir()  # interrupted before it wrote a summary
    (env / "20261201-090000").mkdir()  # this run
    (env / "history.jsonl").write_text("")
    found = previous_run(env, env / "20261201-090000")
    assert found is not None
    assert found.run_id == "old"
    assert previous_run(env, env / "20261130-090000") is None


def summary(project: Project) -> dict[str, Any]:
    return json.loads((project.latest() / "summary.json").read_text())  # type: ignore[no-any-return]


def test_a_fault_is_new_then_still_then_fixed(project: Project) -> None:
    project.use_foundation()
    runs = [(), ("--sandbox-fault", "stuck-run"), ("--sandbox-fault", "stuck-run"), ()]
    seen = []
    for args in runs:
        out = project.run("-m", "daily", "-p", "no:xdist", *args)
        data = summary(project)
        data["html"] = (project.latest() / "report.html").read_text()
        seen.append((out, data))
    (first, d1), (second, d2), (third, d3), (fourth, d4) = seen
    assert d1["previous_run"] is None
    assert "opsverify: no earlier run of this environment to compare with" in first.stdout

    assert d2["previous_run"]["run_id"] == d1["run_id"]
    marked = {c["nodeid"]: c["since_last"] for c in d2["checks"]}
    assert {n for n, s in marked.items() if s != "same"} == {STUCK}, marked
    stuck = next(c for c in d2["checks"] if c["nodeid"] == STUCK)
    assert (stuck["since_last"], stuck["failing_since"]) == ("new", d2["started"])
    assert f"NEW    {STUCK} (FAIL)" in second.stdout
    assert "since the last run (" in second.stdout
    assert "1 new failure, 0 still failing, 0 fixed" in second.stdout

    stuck = next(c for c in d3["checks"] if c["nodeid"] == STUCK)
    assert (stuck["since_last"], stuck["failing_since"]) == ("still", d2["started"])
    assert f"STILL  {STUCK} (FAIL, failing since {d2['started']})" in third.stdout
    assert "<li data-since='still'><code>" + STUCK in d3["html"]
    assert "<li data-since='new'><code>" + STUCK in d2["html"]

    stuck = next(c for c in d4["checks"] if c["nodeid"] == STUCK)
    assert (stuck["since_last"], stuck["failing_since"]) == ("fixed", None)
    assert f"FIXED  {STUCK}" in fourth.stdout
    assert "0 new failures, 0 still failing, 1 fixed" in fourth.stdout
