"""The incident-first report: a verdict line at the top, one entry per root cause with the
checks it explains folded under it, a targets-by-categories grid, failures and warnings with
evidence tables, the checks with no target of their type as one "not applicable here" line
(in the terminal too), and pytest-html's versions table at the bottom. The report is
rendered by a real headless Chromium and asserted on its DOM."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from opsverify.report import incident
from opsverify.report.summary import CheckResult, RunSummary
from tests.conftest import ROOT, Project

CHROMIUM = Path("/usr/bin/chromium")
DOWN = "db (postgres 127.0.0.1:5432/app): connection refused"
# Checks of types the foundation has no target of: each one a "not applicable here" SKIP.
ABSENT = ["checks/health/test_sqlite.py", "checks/health/test_clickhouse.py"]


def check(nodeid: str, outcome: str, target: str = "db", message: str = "",
          since_last: str = "same", **extra: Any) -> CheckResult:
    return CheckResult(nodeid, outcome, target, 0.0, [], message, since_last=since_last,
                       **extra)


def a_run(checks: list[CheckResult], previous: dict[str, str] | None = None) -> RunSummary:
    from datetime import UTC, datetime
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    return RunSummary({"name": "prod", "path": "p", "chosen_by": "default"}, "op", "h", now,
                      now, "abc", 1, checks, [], "run", previous)


# -- the model, pure -------------------------------------------------------------------------
def test_every_error_of_an_unreachable_target_is_one_root_cause() -> None:
    checks = [check(f"checks/health/test_postgres.py::test_{n}[db]", "ERROR", message=DOWN)
              for n in ("a", "b", "c")]
    checks += [check("checks/health/test_http.py::test_health[api]", "FAIL", "api",
                     "api: status = 503, expected = 200 → FAIL\napi: body → FAIL"),
               check("checks/health/test_redis.py::test_ping[cache]", "ERROR", "cache",
                     "Traceback\n  File x\nE   RuntimeError: fixture broke\nx.py:3: Error"),
               check("checks/health/test_redis.py::test_role[cache]", "PASS", "cache")]
    causes = incident.root_causes(checks)
    assert [(c.kind, c.target, c.line, len(c.checks)) for c in causes] == [
        ("down", "db", DOWN, 3),
        ("fail", "api", "api: status = 503, expected = 200 → FAIL", 1),
        ("error", "cache", "RuntimeError: fixture broke", 1)]


def test_the_verdict_counts_targets_down_and_new_failures_since_the_last_run() -> None:
    checks = [check("checks/health/test_postgres.py::test_a[db]", "ERROR", message=DOWN,
                    since_last="new"),
              check("checks/health/test_http.py::test_health[api]", "FAIL", "api", "x",
                    since_last="still", failing_since="2026-11-30T09:00:00+00:00"),
              check("checks/capacity/test_redis.py::test_mem[cache]", "WARN", "cache"),
              check("checks/health/test_redis.py::test_ping[cache]", "PASS", "cache",
                    since_last="fixed")]
    run = a_run(checks, {"run_id": "r0", "started": "2026-12-01T09:00:02+00:00",
                         "directory": "d"})
    v = incident.verdict(run, incident.root_causes(checks))
    assert v.text == ("1 target down (db), 1 other failure, 1 warning, 1 new failure since "
                      "2026-12-01 09:00, 1 still failing (since 2026-11-30 09:00), 1 fixed "
                      "since 2026-12-01 09:00")
    assert (v.outcome, v.down, v.new) == ("FAIL", ["db"], 1)
    calm = a_run([check("checks/health/test_redis.py::test_ping[cache]", "PASS", "cache")])
    assert incident.verdict(calm, []).text == "No failures or warnings: 1 check passed"


def test_the_grid_holds_the_worst_outcome_per_target_and_category() -> None:
    checks = [check("checks/health/test_postgres.py::test_a[db]", "ERROR", message=DOWN),
              check("checks/health/test_postgres.py::test_b[db]", "PASS"),
              check("checks/capacity/test_postgres.py::test_c[db]", "WARN"),
              check("checks/health/test_postgres.py::test_sql_check[db:big]", "PASS"),
              check("checks/health/test_sqlite.py::test_opens[no-sqlite-target]", "SKIP", "")]
    g = incident.grid(checks, {"checks/health/test_postgres.py::test_sql_check[db:big]":
                               "capacity"})
    assert g.targets == ["db"]  # a check with no target of its type is not a row
    assert g.categories == list(incident.CATEGORIES)
    assert g.cells[("db", "health")].outcome == "ERROR"
    assert g.cells[("db", "health")].counts == {"ERROR": 1, "PASS": 1}
    assert g.cells[("db", "capacity")].counts == {"WARN": 1, "PASS": 1}  # the marker's
    assert ("db", "backup") not in g.cells


def test_not_applicable_is_one_line_naming_the_missing_types() -> None:
    assert incident.not_applicable_type("m.py::test_ping[no-redis-target]") == "redis"
    assert incident.not_applicable_type("m.py::test_ping[cache]") is None
    assert incident.not_applicable_line(["sqlite", "clickhouse", "sqlite"]) == (
        "not applicable here: 3 checks (no clickhouse, sqlite target)")


# -- the sandbox with a fault, in the terminal and in a real browser --------------------------
class Dom(HTMLParser):
    """The rendered DOM as a flat list of (tag, attributes, text until the next tag), in
    document order, with each element's ancestors' tags."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self.stack: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": list(self.stack),
                   "index": len(self.elements)}
        self.elements.append(element)
        if tag not in ("br", "img", "input", "meta", "link", "hr", "col", "source"):
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element["text"] += data

    def find(self, **attrs: str) -> list[dict[str, Any]]:
        return [e for e in self.elements
                if all(e["attrs"].get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def one(self, **attrs: str) -> dict[str, Any]:
        (found,) = self.find(**attrs)
        return found

    def inside(self, outer: dict[str, Any], tag: str) -> list[dict[str, Any]]:
        return [e for e in self.elements if e["tag"] == tag and outer in e["parents"]]


def rendered(report: Path, tmp_path: Path) -> Dom:
    """report.html as headless Chromium leaves it once its scripts have run."""
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed: apt-get install chromium "
                    "(./ops installs it)")
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", report.as_uri()],
        capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "<html" in proc.stdout, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    return dom


@pytest.fixture
def db_down(project: Project) -> tuple[Project, Any]:
    """The foundation run twice: clean, then with the database down."""
    project.use_foundation()
    for path in ABSENT:
        project.copy_check(path)
    clean = project.run("-m", "daily")
    assert clean.returncode in (0, 1), clean.output
    result = project.run("-m", "daily", "-rs", "--sandbox-fault", "db-down")
    assert result.returncode == 1, result.output
    return project, result


def test_a_database_down_is_one_root_cause_per_target_in_the_browser(
        db_down: tuple[Project, Any], tmp_path: Path) -> None:
    project, _result = db_down
    summary = json.loads((project.latest() / "summary.json").read_text())
    errors = Counter(c["target"] for c in summary["checks"] if c["outcome"] == "ERROR")
    down = sorted(errors)
    assert "db" in down, errors
    assert errors["db"] > 1, errors
    new = sum(1 for c in summary["checks"] if c["since_last"] == "new")
    started = summary["previous_run"]["started"][:16].replace("T", " ")

    dom = rendered(project.latest() / "report.html", tmp_path)
    # The verdict line, first thing under the title.
    title = dom.one(id="title")
    verdict = dom.one(id="opsverify-verdict")
    assert verdict["index"] == title["index"] + 1, "the verdict is not right under the title"
    assert verdict["text"].startswith(
        f"{len(down)} targets down ({', '.join(down)})"), verdict["text"]
    assert f"{new} new failures since {started}" in verdict["text"], verdict["text"]
    assert verdict["attrs"]["data-new"] == str(new)

    # One root cause per target down, its ERROR checks folded under it.
    causes = [e for e in dom.elements if e["tag"] == "details"
              and e["attrs"].get("class") == "opsverify-cause"]
    entries = [c for c in causes if c["attrs"]["data-kind"] == "down"]
    assert sorted(c["attrs"]["data-target"] for c in entries) == down
    for entry in entries:
        target = entry["attrs"]["data-target"]
        (summary_line,) = dom.inside(entry, "summary")
        assert re.search(rf"DOWN {re.escape(target)} \(postgres 127\.0\.0\.1:\d+/\w+\): "
                         r"connection refused", summary_line["text"]), summary_line["text"]
        folded = [li["attrs"]["data-nodeid"] for li in dom.inside(entry, "li")]
        assert sorted(folded) == sorted(c["nodeid"] for c in summary["checks"]
                                        if c["outcome"] == "ERROR" and c["target"] == target)
        assert entry["attrs"]["data-checks"] == str(errors[target])
    # The API's failure is its own entry, after the targets down.
    fails = [c for c in causes if c["attrs"]["data-kind"] == "fail"]
    assert [c["attrs"]["data-target"] for c in fails] == ["api"]
    assert causes.index(fails[0]) > causes.index(entries[-1])

    # The grid: db x health is an ERROR cell.
    cell = dom.one(data_target="db", data_category="health")
    assert cell["attrs"]["data-outcome"] == "ERROR"
    assert cell["text"].startswith("ERROR ")
    assert "#6a1b9a" in cell["attrs"]["style"]
    assert dom.one(data_target="cache", data_category="health")["attrs"]["data-outcome"] == \
        "PASS"

    # Failures and warnings: the targets down are one line each, the FAIL has its table.
    attention = dom.one(id="opsverify-attention")
    assert sorted(li["attrs"]["data-down"] for li in dom.inside(attention, "li")
                  if "data-down" in li["attrs"]) == down
    tables = [t for t in dom.inside(attention, "table")
              if t["attrs"].get("class") == "opsverify-evidence-table"]
    assert tables
    assert "GET /health/detailed status" in tables[0]["text"]
    assert any(r["attrs"].get("data-verdict") == "FAIL" for r in dom.inside(tables[0], "tr"))

    # Not applicable: one line, and none of those checks in pytest-html's table.
    skipped = [c for c in summary["checks"] if incident.not_applicable_type(c["nodeid"])]
    assert skipped
    assert all(c["outcome"] == "SKIP" for c in skipped)
    line = dom.one(id="opsverify-not-applicable")
    assert line["attrs"]["data-checks"] == str(len(skipped))
    assert f"Not applicable here: {len(skipped)} checks (no clickhouse, sqlite target)" in \
        line["text"]
    results = dom.one(id="results-table")
    ids = [td["text"] for td in dom.inside(results, "td")
           if td["attrs"].get("class") == "col-testId"]
    assert ids
    assert not [i for i in ids if "-target]" in i]

    # Python and plugin versions: at the bottom, after every result.
    versions = dom.one(id="environment")
    assert versions["index"] > max(e["index"] for e in dom.inside(results, "td"))
    assert "Python" in versions["text"]
    assert "pytest" in versions["text"]
    assert dom.one(id="environment-header")["text"].strip() == "Python and plugin versions"


def test_not_applicable_checks_are_one_line_in_the_terminal(
        db_down: tuple[Project, Any]) -> None:
    project, result = db_down
    summary = json.loads((project.latest() / "summary.json").read_text())
    skipped = [c for c in summary["checks"] if incident.not_applicable_type(c["nodeid"])]
    assert summary["counts"]["SKIP"] == len(skipped) > 2  # still SKIPs, counted as such
    assert f"{len(skipped)} skipped" in result.stdout
    lines = [line for line in result.stdout.splitlines() if "not applicable here" in line]
    assert f"opsverify: not applicable here: {len(skipped)} checks (no clickhouse, sqlite " \
           "target)" in lines
    # -rs: one fold per missing type, not one per check module.
    folds = [line for line in lines if line.startswith("SKIPPED")]
    assert len(folds) == len({c["message"] for c in skipped}), folds
    counts = [re.match(r"SKIPPED \[(\d+)\] \(not applicable here\): no ", f) for f in folds]
    assert sum(int(m.group(1)) for m in counts if m) == len(skipped), folds


def test_the_readme_shows_the_report_of_a_fault() -> None:
    png = ROOT / "docs" / "report-db-down.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "docs/report-db-down.png" in (ROOT / "README.md").read_text()
