"""Outputs monitoring systems read, each against the real program: the textfile through
``promtool check metrics`` and prometheus_client's parser, pushes to a real
``prometheus-pushgateway``, alerts to a real ``prometheus-alertmanager``, and ``--nagios``
through real runs' stdout and exit codes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from opsverify.outputs import alertmanager, nagios, prometheus
from opsverify.report.summary import CheckResult, RunSummary
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.secrets import SECRETS

STUCK = "test_sql_check[db:no_stuck_runs]"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PROMTOOL = shutil.which("promtool")
PUSHGATEWAY = shutil.which("prometheus-pushgateway")
ALERTMANAGER = shutil.which("prometheus-alertmanager")

# A project without servers: one check per value (WARN above 100 ms, FAIL above 200 ms),
# and one that cannot be evaluated (an ERROR from its fixture, as an unreachable target).
DEMO_CHECK = '''
import pytest

from opsverify.errors import TargetUnavailable
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

VALUES = {values}


@pytest.fixture
def unreachable() -> None:
    raise TargetUnavailable("cache", "127.0.0.1:1", "connection refused")


@pytest.mark.daily
@pytest.mark.parametrize("value", VALUES)
def test_latency(value: float, evidence: EvidenceLog) -> None:
    evidence.within("demo.latency_ms", value, unit="ms",
                    default=Threshold(warn=100, crit=200), capacity=1000)


@pytest.mark.daily
@pytest.mark.skipif(not {error}, reason="no unreachable target here")
def test_reachable(unreachable: None, evidence: EvidenceLog) -> None:
    evidence.note("never", 1)
'''


def demo(project: Any, values: list[float], *, error: bool = False) -> None:
    project.write("checks/health/test_demo.py", DEMO_CHECK.format(values=values, error=error))
    project.write("environments/demo.yaml", "description: outputs demo\ntargets: {}\n")


# -- real servers ------------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]


def _start(argv: list[str], port: int, home: Path, what: str) -> Iterator[Server]:
    log = home / f"{what}.log"
    process = spawn(argv, log=log)
    try:
        wait_until(lambda: port_open(port), timeout_s=20, what=what, process=process, log=log)
        yield Server(f"http://127.0.0.1:{port}", process)
    finally:
        stop(process)


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Server]:
    """A real Pushgateway on a free port, persisting into the test's directory."""
    if PUSHGATEWAY is None:
        pytest.skip("prometheus-pushgateway is not installed: ./ops setup installs it")
    port = free_port()
    yield from _start([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}",
                       f"--persistence.file={tmp_path / 'pushgateway.data'}"],
                      port, tmp_path, "pushgateway")


@pytest.fixture
def alertmanager_server(tmp_path: Path) -> Iterator[Server]:
    """A real Alertmanager with a receiver that sends nothing, clustering off."""
    if ALERTMANAGER is None:
        pytest.skip("prometheus-alertmanager is not installed: ./ops setup installs it")
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    (tmp_path / "alertmanager").mkdir()
    yield from _start([ALERTMANAGER, f"--config.file={config}",
                       f"--storage.path={tmp_path / 'alertmanager'}",
                       f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                      port, tmp_path, "alertmanager")


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


# -- reading back ------------------------------------------------------------------------------
def promtool_check(path: Path) -> None:
    """``promtool check metrics`` reports no problem at all (not even a lint)."""
    assert PROMTOOL is not None, "promtool is not installed: ./ops setup installs it"
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=path.read_bytes(),
                             capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b"", checked.stdout + checked.stderr


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """metric name -> [(labels, value)], through prometheus_client's parser."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def by_check(found: dict[str, list[tuple[dict[str, str], float]]],
             metric: str) -> dict[str, tuple[dict[str, str], float]]:
    return {labels["check"]: (labels, value) for labels, value in found.get(metric, [])}


def pushed(server: Server) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    return {name: [s for s in series if s[0].get("job") == "opsverify"]
            for name, series in samples(text).items() if name.startswith("opsverify_")}


def active_alerts(server: Server) -> list[dict[str, Any]]:
    response = requests.get(f"{server.url}/api/v2/alerts", timeout=5)
    response.raise_for_status()
    return [a for a in response.json() if a["status"]["state"] == "active"
            and a["labels"].get("alertname") == alertmanager.ALERTNAME]


# -- a summary to render, without a run --------------------------------------------------------
def measurement(name: str, value: Any, verdict: str = "PASS", *, target: str = "db",
                unit: str = "", item: str = "", warn: float | None = None,
                crit: float | None = None, expected: str = "",
                capacity: float | None = None) -> dict[str, Any]:
    return {"name": name, "target": target, "value": value, "unit": unit, "verdict": verdict,
            "expected": expected, "source": "crit from check default" if expected else "",
            "item": item, "capacity": capacity, "warn": warn, "crit": crit}


def a_run(checks: list[CheckResult], exitstatus: int = 1) -> RunSummary:
    return RunSummary({"name": "prod"}, "alice", "host", NOW - timedelta(seconds=12), NOW,
                      "abc1234", exitstatus, checks, [], "run-1")


def check(nodeid: str, outcome: str, evidence: list[dict[str, Any]] | None = None,
          message: str = "", **changes: Any) -> CheckResult:
    target = nodeid.rsplit("[", 1)[-1].split(":")[0].rstrip("]") if "[" in nodeid else ""
    return CheckResult(nodeid, outcome, target, 0.1, evidence or [], message, **changes)


SAMPLE = [
    check("checks/health/test_postgres.py::test_sql_check[db:no_stuck_runs]", "FAIL",
          [measurement("sql.no_stuck_runs", 3.0, "FAIL", unit="runs", item="no_stuck_runs",
                       crit=0, expected="≤ 0 runs")],
          "db: sql.no_stuck_runs = 3 runs, expected ≤ 0 runs → FAIL",
          since_last="new", failing_since="2026-03-01T08:59:48+00:00"),
    check("checks/health/test_postgres.py::test_sql_check[db:active_runs]", "PASS",
          [measurement("sql.active_runs", 4.0, unit="runs", item="active_runs", warn=80,
                       crit=100, expected="≤ 100 runs")]),
    check("checks/capacity/test_postgres.py::test_connections[db]", "WARN",
          [measurement("postgres.connections_used_pct", 85.5, "WARN", unit="%", warn=80,
                       crit=95, expected="≤ 80 %", capacity=100),
           measurement("max_connections", 100)]),
    check("checks/security/test_tls.py::test_certificate_lifetime[api]", "PASS",
          [measurement("tls.days_left", 40, target="api", unit="days", warn=30, crit=14,
                       expected="≥ 14 days"),
           measurement("tls.handshake", 0.25, target="api", unit="h", warn=0.5,
                       expected="≤ 0.5 h")]),
    check("checks/health/test_redis.py::test_ping[cache]", "ERROR", [],
          "cache: connect to 127.0.0.1:6379: connection refused", since_last="still",
          failing_since="2026-02-28T09:00:00+00:00"),
    check("checks/health/test_http.py::test_health[api:/health]", "PASS",
          [measurement("http.status", 200, target="api", expected="= 200")],
          since_last="fixed"),
    check("checks/backup/test_backup.py::test_freshness[dumps]", "WAIVED",
          [measurement("backup.age_h", 30.0, "FAIL", target="dumps", unit="h")]),
    check("checks/capacity/test_s3.py::test_bucket_size[lake]", "SKIP", [],
          "no s3 target"),
    check("checks/remediation/test_postgres.py::test_terminate_idle[db]", "PLAN", []),
]
CATEGORIES = {"checks/health/test_postgres.py::test_sql_check[db:active_runs]": "capacity"}


# -- the textfile ------------------------------------------------------------------------------
def test_the_textfile_passes_promtool_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "opsverify.prom"
    prometheus.write_textfile(path, a_run(SAMPLE), CATEGORIES)
    promtool_check(path)
    found = samples(path.read_text())
    status = by_check(found, "opsverify_check_status")
    assert {name: value for name, (_, value) in status.items()} == {
        "test_sql_check[db:no_stuck_runs]": 2, "test_sql_check[db:active_runs]": 0,
        "test_connections[db]": 1, "test_certificate_lifetime[api]": 0,
        "test_ping[cache]": 3, "test_health[api:/health]": 0}  # no SKIP, PLAN or WAIVED
    assert status["test_sql_check[db:no_stuck_runs]"][0] == {
        "env": "prod", "target": "db", "check": "test_sql_check[db:no_stuck_runs]",
        "category": "health"}
    # The category its markers give a check, not its folder, when the glue knows it.
    assert status["test_sql_check[db:active_runs]"][0]["category"] == "capacity"
    waived = by_check(found, "opsverify_check_waived")
    assert {k: v for k, (_, v) in waived.items()} == {"test_freshness[dumps]": 1}
    values = {(labels["check"], labels["metric"]): (labels, value)
              for labels, value in found["opsverify_check_value"]}
    # Numeric readings named like metric ids only: not max_connections, not http.status's
    # neighbours without a dot.
    assert set(values) == {
        ("test_sql_check[db:no_stuck_runs]", "sql.no_stuck_runs"),
        ("test_sql_check[db:active_runs]", "sql.active_runs"),
        ("test_connections[db]", "postgres.connections_used_pct"),
        ("test_certificate_lifetime[api]", "tls.days_left"),
        ("test_certificate_lifetime[api]", "tls.handshake"),
        ("test_health[api:/health]", "http.status"),
        ("test_freshness[dumps]", "backup.age_h")}
    assert values[("test_sql_check[db:no_stuck_runs]", "sql.no_stuck_runs")] == (
        {"env": "prod", "target": "db", "check": "test_sql_check[db:no_stuck_runs]",
         "category": "health", "metric": "sql.no_stuck_runs", "unit": "runs",
         "item": "no_stuck_runs"}, 3.0)
    assert values[("test_connections[db]", "postgres.connections_used_pct")][1] == 85.5
    counts = {labels["outcome"]: value for labels, value in found["opsverify_checks"]}
    assert counts == {"FAIL": 1, "ERROR": 1, "WARN": 1, "WAIVED": 1, "PLAN": 1, "SKIP": 1,
                      "PASS": 3}
    assert found["opsverify_last_run_timestamp_seconds"] == [({"env": "prod"},
                                                               NOW.timestamp())]
    assert found["opsverify_last_run_duration_seconds"] == [({"env": "prod"}, 12.0)]
    assert found["opsverify_last_run_exit_status"] == [({"env": "prod"}, 1.0)]
    # Each metric says in its HELP what its values mean.
    text = path.read_text()
    assert ("# HELP opsverify_check_status Outcome of each check in the last run: 0 pass, "
            "1 warn, 2 fail, 3 error. SKIP and PLAN checks are not exported; WAIVED ones "
            "are in opsverify_check_waived.") in text


def test_the_textfile_is_replaced_whole_never_rewritten_in_place(tmp_path: Path) -> None:
    """A scrape that opened the old file reads the old file whole; no temporary file stays
    behind (the textfile collector would read a stray *.prom)."""
    path = tmp_path / "opsverify.prom"
    prometheus.write_textfile(path, a_run(SAMPLE), {})
    old_inode = path.stat().st_ino
    with path.open() as reader:
        before = path.read_text()
        prometheus.write_textfile(path, a_run(SAMPLE[:1]), {})
        assert reader.read() == before
    assert path.stat().st_ino != old_inode
    assert [p.name for p in tmp_path.iterdir()] == ["opsverify.prom"]
    assert len(samples(path.read_text())["opsverify_check_status"]) == 1


def test_label_values_are_scrubbed_of_secrets(tmp_path: Path) -> None:
    SECRETS.add("s3cr3t-value")
    leaky = [check("checks/health/test_http.py::test_health[api:/s3cr3t-value]", "FAIL",
                   [measurement("http.latency_ms", 3.0, "FAIL", target="api",
                                item="/s3cr3t-value", expected="≤ 1 ms")],
                   "api: token s3cr3t-value refused")]
    path = tmp_path / "x.prom"
    prometheus.write_textfile(path, a_run(leaky), {})
    batch = alertmanager.alerts(a_run(leaky), {}, now=NOW, ttl=timedelta(hours=1))
    plugin = nagios.result(a_run(leaky))
    for text in (path.read_text(), repr(batch), plugin.text):
        assert "s3cr3t-value" not in text
        assert "***" in text


# -- alerts ------------------------------------------------------------------------------------
def test_alerts_fire_for_failures_and_resolve_what_was_fixed() -> None:
    batch = alertmanager.alerts(a_run(SAMPLE), CATEGORIES, now=NOW, ttl=timedelta(hours=26),
                                report="/srv/reports/prod/20260301-090000/report.html")
    by_name = {a["labels"]["check"]: a for a in batch}
    # FAIL and ERROR fire; the check fixed since the last run is resolved; WARN, WAIVED,
    # SKIP, PLAN and checks that were fine before are not sent.
    assert set(by_name) == {"test_sql_check[db:no_stuck_runs]", "test_ping[cache]",
                            "test_health[api:/health]"}
    stuck = by_name["test_sql_check[db:no_stuck_runs]"]
    assert stuck["labels"] == {"alertname": "OpsverifyCheckFailed", "env": "prod",
                               "target": "db", "check": "test_sql_check[db:no_stuck_runs]",
                               "category": "health", "severity": "critical"}
    assert stuck["annotations"]["summary"] == "test_sql_check[db:no_stuck_runs] failed in prod"
    assert stuck["annotations"]["description"] == (
        "db: sql.no_stuck_runs = 3 runs, expected ≤ 0 runs (crit from check default) → FAIL")
    assert stuck["annotations"]["outcome"] == "FAIL"
    assert stuck["annotations"]["report"].endswith("report.html")
    # It started when the failure did, and ends unless the next run says it again.
    assert stuck["startsAt"] == "2026-03-01T08:59:48+00:00"
    assert stuck["endsAt"] == "2026-03-02T11:00:00+00:00"
    ping = by_name["test_ping[cache]"]
    assert ping["annotations"]["description"] == (
        "cache: connect to 127.0.0.1:6379: connection refused")
    assert ping["startsAt"] == "2026-02-28T09:00:00+00:00"
    fixed = by_name["test_health[api:/health]"]
    assert fixed["startsAt"] == fixed["endsAt"] == "2026-03-01T09:00:00+00:00"
    assert fixed["labels"]["severity"] == "critical"  # the labels of the alert it resolves


# -- the Nagios result -------------------------------------------------------------------------
def test_the_nagios_result_of_a_summary() -> None:
    plugin = nagios.result(a_run(SAMPLE), report="/r/report.html")
    first, *rest = plugin.text.splitlines()
    assert plugin.code == nagios.CRITICAL
    assert first == (
        "OPSVERIFY CRITICAL - 1 failed, 1 errors, 1 warnings of 9 checks in prod: "
        "test_sql_check[db:no_stuck_runs], test_ping[cache] | 'checks_failed'=1;;;0 "
        "'checks_errors'=1;;;0 'checks_warnings'=1;;;0 'checks_passed'=3;;;0 "
        "'checks_skipped'=1;;;0 'checks_waived'=1;;;0 'checks_total'=9;;;0 "
        "'duration'=12s;;;0")
    assert rest[:3] == [
        "FAIL  test_sql_check[db:no_stuck_runs]: db: sql.no_stuck_runs = 3 runs, expected "
        "≤ 0 runs (crit from check default) → FAIL",
        "ERROR test_ping[cache]: cache: connect to 127.0.0.1:6379: connection refused",
        "WARN  test_connections[db]: db: postgres.connections_used_pct = 85.5 %, expected "
        "≤ 80 % (crit from check default) → WARN"]
    report, perfdata = rest[-1].split(" | ")
    assert report == "report: /r/report.html"
    # Only within() readings (they have warn/crit); a minimum is "N:"; h becomes s; a unit
    # outside the plugin guidelines' set is left out; the capacity is the max.
    assert perfdata.split(" ") == [
        "'sql.no_stuck_runs[db:no_stuck_runs]'=3;;0",
        "'sql.active_runs[db:active_runs]'=4;80;100",
        "'postgres.connections_used_pct[db]'=85.5%;80;95;;100",
        "'tls.days_left[api]'=40;30:;14:",
        "'tls.handshake[api]'=900s;1800",
    ]


@pytest.mark.parametrize(("outcomes", "exitstatus", "code", "head"), [
    (["PASS", "SKIP"], 0, nagios.OK, "OPSVERIFY OK - 0 failed, 0 errors, 0 warnings of 2 "
                                     "checks in prod |"),
    (["PASS", "WARN"], 0, nagios.WARNING, "OPSVERIFY WARNING - 0 failed, 0 errors, "
                                          "1 warnings of 2 checks in prod: test_x[1] |"),
    (["ERROR", "WARN"], 1, nagios.CRITICAL, "OPSVERIFY CRITICAL - 0 failed, 1 errors, "
                                            "1 warnings of 2 checks in prod: test_x[0] |"),
    (["PASS"], 1, nagios.CRITICAL, "OPSVERIFY CRITICAL - 0 failed, 0 errors, 0 warnings of "
                                   "1 checks in prod: the run failed without a failing check"),
    ([], 5, nagios.UNKNOWN, "OPSVERIFY UNKNOWN - no check was selected: 0 failed"),
    (["FAIL", "PASS"], 2, nagios.UNKNOWN, "OPSVERIFY UNKNOWN - the run was interrupted: "
                                          "1 failed"),
])
def test_nagios_states(outcomes: list[str], exitstatus: int, code: int, head: str) -> None:
    run = a_run([check(f"checks/health/test_x.py::test_x[{i}]", o)
                 for i, o in enumerate(outcomes)], exitstatus)
    plugin = nagios.result(run)
    assert plugin.code == code
    assert plugin.text.startswith(head), plugin.text


def test_nagios_many_failures_are_counted_not_listed() -> None:
    run = a_run([check(f"checks/health/test_x.py::test_x[{i}]", "FAIL") for i in range(8)])
    first = nagios.result(run).text.splitlines()[0]
    assert ": test_x[0], test_x[1], test_x[2], test_x[3], test_x[4] and 3 more |" in first


# -- real runs: --nagios -----------------------------------------------------------------------
PERF = r"'checks_failed'=\d+;;;0 'checks_errors'=\d+;;;0 'checks_warnings'=\d+;;;0"


@pytest.mark.parametrize(("values", "error", "args", "code", "first"), [
    ([50], False, (), 0,
     rf"OPSVERIFY OK - 0 failed, 0 errors, 0 warnings of 2 checks in demo \| {PERF}"),
    ([50, 150], False, (), 1,
     r"OPSVERIFY WARNING - 0 failed, 0 errors, 1 warnings of 3 checks in demo: "
     rf"test_latency\[150\] \| {PERF}"),
    ([50, 250], True, (), 2,
     r"OPSVERIFY CRITICAL - 1 failed, 1 errors, 0 warnings of 3 checks in demo: "
     rf"test_latency\[250\], test_reachable \| {PERF}"),
    ([50, 250], True, ("-n", "2"), 2,
     r"OPSVERIFY CRITICAL - 1 failed, 1 errors, 0 warnings of 3 checks in demo: "),
    ([50], False, ("-m", "weekly"), 3, r"OPSVERIFY UNKNOWN - no check was selected: "),
    ([50], False, ("--env=nonexistent",), 3,
     r"OPSVERIFY UNKNOWN - .*nonexistent.*"),
], ids=["ok", "warning", "critical", "critical-xdist", "nothing-selected", "bad-env"])
def test_nagios_runs_exit_with_the_plugin_code(project: Any, values: list[float], error: bool,
                                               args: tuple[str, ...], code: int,
                                               first: str) -> None:
    demo(project, values, error=error)
    result = project.run("--env=demo", "--nagios", *args)
    assert result.returncode == code, result.output
    lines = result.stdout.splitlines()
    assert lines, result.output
    assert re.fullmatch(first + ".*", lines[0]), lines[0]
    # Nothing of pytest's own output, in any line.
    assert not re.search(r"^[=_]{3}|\[ *\d+%\]| in [\d.]+s\b|test session starts",
                         result.stdout, re.M), \
        result.stdout
    assert "Traceback" not in result.output


def test_nagios_long_output_and_perfdata(project: Any) -> None:
    demo(project, [50, 250], error=True)
    result = project.run("--env=demo", "--nagios", "-p", "no:xdist")
    assert result.returncode == 2, result.output
    first, *rest = result.stdout.splitlines()
    assert rest[0] == ("FAIL  test_latency[250]: demo.latency_ms = 250 ms, expected ≤ 200 ms "
                       "(crit from check default) → FAIL")
    assert rest[1] == "ERROR test_reachable: cache (127.0.0.1:1): connection refused"
    report, perfdata = rest[-1].split(" | ")
    assert report == f"report: {project.latest('demo') / 'report.html'}"
    assert (project.latest("demo") / "report.html").is_file()  # the report set is written
    # Two checks read demo.latency_ms with no target or item: one perfdata label, first kept.
    assert perfdata == "'demo.latency_ms'=50ms;100;200;;1000"
    assert first.endswith("'checks_total'=3;;;0 " + first.rsplit(" ", 1)[-1])
    assert re.fullmatch(r"'duration'=[\d.]+s;;;0", first.rsplit(" ", 1)[-1])


# -- real runs: unreachable outputs ------------------------------------------------------------
def test_an_unreachable_output_is_one_red_line_and_keeps_the_verdict(project: Any,
                                                                     tmp_path: Path) -> None:
    demo(project, [50, 250])
    textfile = tmp_path / "metrics" / "opsverify.prom"  # a directory that is not there...
    textfile.parent.mkdir()
    pushgateway_url, alertmanager_url = closed_port_url(), closed_port_url()
    result = project.run("--env=demo", "-p", "no:xdist", f"--prometheus-textfile={textfile}",
                         f"--pushgateway={pushgateway_url}",
                         f"--alertmanager={alertmanager_url}")
    assert result.returncode == 1, result.output  # as without the outputs: one FAIL
    assert "Traceback" not in result.output
    assert re.search(rf"^opsverify: metrics not pushed: pushgateway {pushgateway_url}: "
                     r"Connection refused \(the run's verdict is unchanged\)$",
                     result.stdout, re.M), result.stdout
    assert re.search(rf"^opsverify: alerts not posted: alertmanager {alertmanager_url}"
                     r"/api/v2/alerts: Connection refused \(the run's verdict is unchanged\)$",
                     result.stdout, re.M), result.stdout
    assert f"opsverify: prometheus textfile written to {textfile}" in result.stdout
    promtool_check(textfile)
    # The same with --nagios: still CRITICAL for the check, the problems in the long output.
    result = project.run("--env=demo", "-p", "no:xdist", "--nagios",
                         f"--pushgateway={pushgateway_url}")
    assert result.returncode == 2, result.output
    assert result.stdout.startswith("OPSVERIFY CRITICAL - 1 failed"), result.stdout
    assert (f"opsverify: metrics not pushed: pushgateway {pushgateway_url}: Connection "
            "refused") in result.stdout.splitlines()


def test_a_hung_output_costs_one_deadline(project: Any, hung_server: Any) -> None:
    """A server that accepts and never answers holds the end of the run for one deadline."""
    demo(project, [50])
    url = f"http://127.0.0.1:{hung_server.port}"
    result = project.run("--env=demo", "-p", "no:xdist", f"--pushgateway={url}")
    assert result.returncode == 0, result.output
    assert (f"opsverify: metrics not pushed: pushgateway {url}: no answer within 10 s "
            "(the run's verdict is unchanged)") in result.stdout, result.stdout
    assert 10 <= result.duration_s < 25


@pytest.mark.parametrize(("option", "says"), [
    ("--prometheus-textfile=/tmp/opsverify.txt", "reads only files ending in .prom"),
    ("--prometheus-textfile=/nonexistent-dir/opsverify.prom", "no directory /nonexistent-dir"),
    ("--pushgateway=127.0.0.1:9091", "give an http:// or https:// URL"),
    ("--alertmanager-ttl=forever", "give a duration such as 90m, 26h or 2d"),
])
def test_output_options_are_checked_before_the_run(project: Any, option: str,
                                                   says: str) -> None:
    demo(project, [50])
    result = project.run("--env=demo", option)
    assert result.returncode == 4, result.output
    assert says in result.stderr, result.output


# -- real runs against the real Pushgateway ----------------------------------------------------
def test_the_pushgateway_group_is_replaced_by_each_run(project: Any,
                                                       pushgateway: Server) -> None:
    demo(project, [50, 150])
    result = project.run("--env=demo", "-p", "no:xdist", f"--pushgateway={pushgateway.url}")
    assert result.returncode == 0, result.output
    assert (f"opsverify: metrics pushed to {pushgateway.url} (job=opsverify, env=demo)"
            in result.stdout), result.stdout
    status = by_check(pushed(pushgateway), "opsverify_check_status")
    assert {k: v for k, (_, v) in status.items()} == {"test_latency[50]": 0,
                                                      "test_latency[150]": 1}
    labels = status["test_latency[150]"][0]
    assert labels == {"job": "opsverify", "env": "demo", "instance": "", "target": "",
                      "check": "test_latency[150]", "category": "health"}
    # The next run no longer has test_latency[150]: PUT replaces the group whole.
    demo(project, [50])
    result = project.run("--env=demo", "-p", "no:xdist", f"--pushgateway={pushgateway.url}")
    assert result.returncode == 0, result.output
    status = by_check(pushed(pushgateway), "opsverify_check_status")
    assert {k: v for k, (_, v) in status.items()} == {"test_latency[50]": 0}
    values = pushed(pushgateway)["opsverify_check_value"]
    assert [(s[0]["metric"], s[0]["unit"], s[1]) for s in values] == [
        ("demo.latency_ms", "ms", 50.0)]


# -- the sandbox with a fault: every output, then the run after the fix ------------------------
def test_a_fault_and_its_fix_through_every_output(project: Any, tmp_path: Path,
                                                  pushgateway: Server,
                                                  alertmanager_server: Server) -> None:
    project.use_foundation()
    textfile = tmp_path / "opsverify.prom"
    outputs = (f"--prometheus-textfile={textfile}", f"--pushgateway={pushgateway.url}",
               f"--alertmanager={alertmanager_server.url}")
    result = project.run("-m", "daily", "--sandbox-fault", "stuck-run", "--nagios", *outputs,
                         timeout=300)
    assert result.returncode == nagios.CRITICAL, result.output
    first = result.stdout.splitlines()[0]
    assert re.fullmatch(r"OPSVERIFY CRITICAL - 1 failed, 0 errors, \d+ warnings of \d+ checks "
                        rf"in sandbox: {re.escape(STUCK)} \| 'checks_failed'=1;;;0 .*",
                        first), result.stdout
    checks = project.checks()
    failing = [name for name, c in checks.items() if c["outcome"] in ("FAIL", "ERROR")]
    assert failing == [STUCK]

    # The textfile: promtool finds nothing to say; the stuck check is 2, and the declared
    # SQL check whose declaration says capacity is in that category.
    promtool_check(textfile)
    status = by_check(samples(textfile.read_text()), "opsverify_check_status")
    assert status[STUCK] == ({"env": "sandbox", "target": "db", "check": STUCK,
                              "category": "health"}, 2)
    assert status["test_sql_check[db:active_runs]"][0]["category"] == "capacity"
    exported = {c for c, o in ((n, checks[n]["outcome"]) for n in checks)
                if o in prometheus.STATUS}
    assert set(status) == exported
    # The Pushgateway holds the same series.
    assert by_check(pushed(pushgateway), "opsverify_check_status")[STUCK][1] == 2

    # Alertmanager: exactly that check's alert, with its labels and evidence.
    (alert,) = active_alerts(alertmanager_server)
    assert alert["labels"] == {"alertname": "OpsverifyCheckFailed", "env": "sandbox",
                               "target": "db", "check": STUCK, "category": "health",
                               "severity": "critical"}
    assert alert["annotations"]["summary"] == f"{STUCK} failed in sandbox"
    assert "db: sql.no_stuck_runs = 1 runs, expected ≤ 0 runs" in \
        alert["annotations"]["description"]
    assert alert["annotations"]["report"] == str(project.latest() / "report.html")

    # The next run, without the fault: the alert is resolved, the series say 0.
    result = project.run("-m", "daily", "-n", "2", *outputs, timeout=300)
    assert result.returncode == 0, result.output
    assert project.checks()[STUCK]["since_last"] == "fixed"
    assert "opsverify: alertmanager: 0 firing, 1 resolved" in result.stdout, result.stdout
    assert active_alerts(alertmanager_server) == []
    status = by_check(samples(textfile.read_text()), "opsverify_check_status")
    assert status[STUCK][1] == 0
    # Under xdist too, the categories came from the workers' markers.
    assert status["test_sql_check[db:active_runs]"][0]["category"] == "capacity"
    assert by_check(pushed(pushgateway), "opsverify_check_status")[STUCK][1] == 0
    assert os.listdir(tmp_path).count("opsverify.prom") == 1
