"""The run history and days-until-full: the Theil-Sen fit against reference values, resets,
the history file's format and retention, a real run appending to it (a file, and an S3
bucket on a real moto server), and a history that cannot be written being one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify import history, trend
from opsverify.history import FileStore, History, HistorySpec, S3Store, Sample
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.moto import MotoServer
from opsverify.sandbox.spec import MotoComponent
from tests.conftest import Project, running

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
X14 = list(range(14))
# 14 daily readings of a filling disk (%), and the slope and 90 % interval that
# scipy.stats.theilslopes(GROWING, X14, alpha=0.90) gives for them.
GROWING = [60.0, 62.9, 63.1, 66.4, 67.2, 70.5, 71.1, 74.8, 75.2, 78.9, 79.4, 82.0, 84.6, 85.9]
GROWING_FIT = (2.016666666666667, 1.9166666666666672, 2.1000000000000005)
FLAT = [50.0, 50.4, 49.8, 50.1, 50.3, 49.9, 50.2, 50.0, 50.1, 49.7, 50.2, 50.0, 50.3, 50.1]
FLAT_FIT = (0.0, -0.025000000000000355, 0.033333333333333805)


def series(values: list[float], capacity: float | list[float] = 100.0,
           step: timedelta = timedelta(days=1)) -> list[Sample]:
    caps = capacity if isinstance(capacity, list) else [capacity] * len(values)
    start = NOW - step * (len(values) - 1)
    return [Sample(start + step * i, "host", "host.disk_used_pct", "/", v, "%", c)
            for i, (v, c) in enumerate(zip(values, caps, strict=True))]


def test_theil_sen_matches_scipy() -> None:
    assert trend.theil_sen(X14, GROWING) == pytest.approx(GROWING_FIT)
    assert trend.theil_sen(X14, FLAT) == pytest.approx(FLAT_FIT, abs=1e-12)


def test_a_filling_disk_is_full_in_days_within_its_interval() -> None:
    fit = trend.fit(series(GROWING))
    assert isinstance(fit, trend.Fit)
    headroom = 100 - 85.9
    assert fit.days_left == pytest.approx(headroom / GROWING_FIT[0])  # 6.99 days
    assert fit.days_low == pytest.approx(headroom / GROWING_FIT[2])
    assert fit.days_high == pytest.approx(headroom / GROWING_FIT[1])
    assert fit.days_low < fit.days_left < fit.days_high
    assert fit.describe() == ("full in 7.0 days (90 % 6.7-7.4), +2.0 %/day, "
                              "14 samples over 13 days")


def test_flat_history_is_no_growth() -> None:
    fit = trend.fit(series(FLAT))
    assert isinstance(fit, trend.Fit)
    assert not fit.growing
    assert fit.days_left is None
    assert fit.describe().startswith("no growth (+0.0 %/day")


def test_one_spike_does_not_move_the_estimate() -> None:
    spiked = list(GROWING)
    spiked[5] = 99.0  # a burst of temporary files, cleaned up the next day
    fit = trend.fit(series(spiked))
    assert isinstance(fit, trend.Fit)
    assert fit.days_left is not None
    assert fit.days_left == pytest.approx(14.1 / GROWING_FIT[0], rel=0.1)


def test_too_little_history_is_insufficient() -> None:
    few = trend.fit(series(GROWING[:3]))
    assert isinstance(few, trend.Insufficient)
    assert few.describe() == "insufficient history: 3 samples over 48.0 hours"
    short = trend.fit(series(GROWING, step=timedelta(hours=1)))
    assert isinstance(short, trend.Insufficient)
    assert short.samples == 14
    assert trend.fit(series(GROWING, step=timedelta(hours=1)), min_span_hours=12) != short


def test_a_cleanup_or_a_resize_starts_the_fit_again() -> None:
    # 20 days of growth, then a cleanup from 90 % to 40 %: only what follows counts.
    cleaned = [50 + 2 * i for i in range(20)] + [40, 40.2, 40.1]
    used, reset_at = trend.since_reset(series(cleaned))
    assert [s.value for s in used] == [40, 40.2, 40.1]
    assert reset_at is not None
    assert isinstance(trend.fit(series(cleaned)), trend.Insufficient)
    # The volume grew from 100 to 200 GiB: a capacity change, even without a drop.
    resized = series([80.0] * 10 + [81.0] * 8, capacity=[100.0] * 10 + [200.0] * 8)
    used, _ = trend.since_reset(resized)
    assert len(used) == 8
    assert {s.capacity for s in used} == {200.0}


def test_already_full_has_no_days_left() -> None:
    fit = trend.fit(series([*GROWING[:-1], 100.0]))
    assert isinstance(fit, trend.Fit)
    assert fit.days_left == 0
    assert fit.describe().startswith("full now")


def test_a_sparkline_is_scaled_to_its_capacity() -> None:
    from opsverify.report.sparkline import HEIGHT, PAD, svg

    chart = svg([(NOW - timedelta(days=1), 0.0), (NOW, 100.0)], 100.0, "disk")
    assert f"points='{PAD}.0,{HEIGHT - PAD}.0 158.0,{PAD}.0'" in chart  # empty to full
    assert chart.startswith("<svg")
    assert "<title>disk</title>" in chart
    assert svg([], 100.0) == ""


def test_history_lines_round_trip_and_bad_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    path.write_text('{"time": "2026-11-30T09:00:00Z", "target": "db", "metric": '
                    '"postgres.txid_age", "item": "app", "value": 1200, "unit": "xids", '
                    '"capacity": 2147483648}\n'
                    "not json\n"
                    '{"time": "2026-11-30T09:00:00", "target": "db", "metric": "m.x", '
                    '"value": true}\n')
    past = history.load(FileStore(path))
    assert len(past) == 1
    assert past.skipped == 2
    sample = past.previous("db", "postgres.txid_age", "app")
    assert sample is not None
    assert sample.value == 1200
    assert sample.capacity == 2**31
    assert sample.time == datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert Sample.from_json(sample.to_json()) == sample


def test_append_keeps_what_it_cannot_read_and_drops_what_is_too_old(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "history.jsonl")
    old = Sample(NOW - timedelta(days=500), "h", "host.disk_used_pct", "/", 1.0, "%", 100)
    recent = Sample(NOW - timedelta(days=1), "h", "host.disk_used_pct", "/", 2.0, "%", 100)
    store.write(old.to_json() + "\n" + recent.to_json() + "\n" + "a user's comment\n")
    history.append(store, [Sample(NOW, "h", "host.disk_used_pct", "/", 3.0, "%", 100)],
                   keep_days=400, now=NOW)
    lines = store.read().splitlines()
    assert [json.loads(x)["value"] for x in lines if x.startswith("{")] == [2.0, 3.0]
    assert "a user's comment" in lines


def test_a_run_appends_its_readings(project: Project) -> None:
    project.write("checks/capacity/test_reading.py", READING_CHECK)
    env = ENV.format(history="")
    result, checks = project.run_checks("hist", env)
    assert result.returncode == 0, result.output
    assert "history: 2 readings added to" in result.output
    lines = (project.reports / "hist" / "history.jsonl").read_text().splitlines()
    rows = sorted((json.loads(line) for line in lines), key=lambda r: r["metric"])
    assert [(r["target"], r["metric"], r["item"], r["value"], r["capacity"]) for r in rows] == [
        ("box", "host.disk_used_pct", "/", 42.5, 100.0),
        ("box", "reading.count", "", 7, None),
    ]
    assert datetime.fromisoformat(rows[0]["time"].replace("Z", "+00:00")).tzinfo is not None
    # The next run sees this one's readings.
    result, checks = project.run_checks("hist", env)
    assert previous(checks) == 42.5
    # The report draws the metric's two readings, offline: inline SVG, no script.
    report = (project.latest("hist") / "report.html").read_text()
    assert "<title>box host.disk_used_pct /: 2 readings</title>" in report
    assert "opsverify-sparkline" in report
    assert "<script src=" not in report


def test_an_unreadable_history_is_one_line_and_other_checks_keep_their_verdict(
        project: Project) -> None:
    project.write("checks/capacity/test_reading.py", READING_CHECK + OTHER_CHECK)
    blocker = project.path / "blocker"
    blocker.write_text("a file where a directory should be")
    result, checks = project.run_checks("hist", ENV.format(
        history=f"history: {{path: {blocker}/sub/history.jsonl}}"))
    assert result.returncode == 1, result.output
    reading = checks["test_reading[box:/]"]
    assert reading["outcome"] == "ERROR"
    assert reading["message"].splitlines()[0].endswith(
        "blocker/sub/history.jsonl: cannot read: Not a directory")
    assert checks["test_other[box:/]"]["outcome"] == "PASS"
    assert "opsverify: history not written: history " in result.output
    assert "Traceback" not in result.output
    assert "During handling" not in result.output


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[MotoServer]:
    """A real moto server with an empty bucket for the history."""
    (tmp_path / "moto").mkdir()
    ctx = SandboxContext(tmp_path / "moto", "history-moto-secret-81c2", frozenset())
    yield from running(MotoServer(MotoComponent(region="eu-west-1", bucket="ops-history"), ctx))


def test_history_in_s3_survives_the_runner(project: Project, moto: MotoServer) -> None:
    variables = moto.variables()
    spec = HistorySpec(path="s3://ops-history/opsverify",
                       endpoint_url=variables["SANDBOX_AWS_ENDPOINT"], region="eu-west-1",
                       access_key_id=variables["SANDBOX_AWS_ACCESS_KEY_ID"],
                       secret_access_key=variables["SANDBOX_AWS_SECRET_ACCESS_KEY"])
    project.write("checks/capacity/test_reading.py", READING_CHECK)
    section = ("history: {path: 's3://ops-history/opsverify', endpoint_url: "
               f"'{spec.endpoint_url}', region: eu-west-1, access_key_id: "
               f"'{spec.access_key_id}', secret_access_key: '{spec.secret_access_key}'}}")
    for _ in range(2):
        result, checks = project.run_checks("hist", ENV.format(history=section))
        assert result.returncode == 0, result.output
        assert "added to s3://ops-history/opsverify/hist/history.jsonl" in result.output
    assert previous(checks) == 42.5
    assert str(spec.secret_access_key) not in result.output
    stored = History.parse(S3Store(spec, "hist").read())
    assert len(stored.series("box", "host.disk_used_pct", "/")) == 2
    assert not (project.reports / "hist" / "history.jsonl").exists()


def previous(checks: dict[str, dict[str, Any]]) -> object:
    evidence = checks["test_reading[box:/]"]["evidence"]
    return next(m["value"] for m in evidence if m["name"] == "previous")


ENV = """
settings: {{timeout_s: 5}}
{history}
targets:
  box: {{type: host, url: local, filesystems: [/]}}
"""

# A check that records a capacity reading and a counter, and shows the previous run's.
READING_CHECK = '''
import pytest

from opsverify.thresholds import Threshold


@pytest.mark.daily
def test_reading(host, host_filesystem, evidence, capacity_history):
    before = capacity_history.previous(evidence.target, "host.disk_used_pct", "/")
    evidence.note("previous", before.value if before else "none")
    evidence.within("host.disk_used_pct", 42.5, unit="%", capacity=100,
                    default=Threshold(warn=80, crit=95))
    evidence.note("reading.count", 7, item="")
    evidence.note("free text", 3)
'''

OTHER_CHECK = '''

@pytest.mark.daily
def test_other(host, host_filesystem, evidence):
    evidence.expect("other.value", 1, equals=1)
'''


SANDBOX_HOST = """
settings: {timeout_s: 5}
sandbox:
  history:
    days: 14
    series:
      - {target: localhost, metric: host.disk_used_pct, item: /, read: disk, path: /}
      - {target: localhost, metric: host.inodes_used_pct, item: /, read: inodes, path: /}
      - {target: localhost, metric: host.memory_used_pct, read: memory}
      - {target: localhost, metric: host.path_bytes, item: logs, unit: bytes,
         capacity: 67108864, read: files, path: "*.log", fills: true}
history: {path: "${SANDBOX_HISTORY}"}
targets:
  localhost:
    type: host
    url: local
    filesystems: [/]
    memory: true
    paths: [{name: logs, path: "${SANDBOX_DIR}/*.log", max_bytes: 67108864,
             warn_bytes: 58720256}]
"""
TRENDS = {"test_disk_trend[localhost:/]", "test_inodes_trend[localhost:/]",
          "test_memory_trend[localhost]", "test_path_trend[localhost:logs]"}


@pytest.mark.parametrize("fault", ["none", "disk-filling"])
def test_disk_filling_turns_exactly_the_logs_trend_red(project: Project, fault: str) -> None:
    project.copy_check("checks/capacity/test_host.py")
    args = ["--sandbox-fault", fault] if fault != "none" else []
    result, checks = project.run_checks("sandbox", SANDBOX_HOST, "-m", "daily", *args)
    red = {k: c for k, c in checks.items() if c["outcome"] in ("FAIL", "ERROR", "WARN")}
    assert set(checks) >= TRENDS, sorted(checks)
    if fault == "none":
        assert red == {}, result.output
        assert all(next(m["value"] for m in checks[k]["evidence"] if m["name"] == "trend")
                   .startswith("no growth") for k in TRENDS), result.output
        return
    assert set(red) == {"test_path_trend[localhost:logs]"}, result.output
    check = red["test_path_trend[localhost:logs]"]
    days = next(m for m in check["evidence"] if m["name"] == "host.path.days_left")
    # A week of growth that fills the 64 MiB in 5 days from 70 %: the estimate says so
    # (the servers' own logs add a little), and the crit (7 days) is what failed.
    assert 4.0 < days["value"] < 5.5, check["evidence"]
    assert days["verdict"] == "FAIL"
    trend_line = next(m["value"] for m in check["evidence"] if m["name"] == "trend")
    assert trend_line.startswith("full in ")
    assert "8 samples over 7 days" in trend_line
    assert "FAIL  checks/capacity/test_host.py::test_path_trend[localhost:logs]: " in (
        result.stdout)
    # The logs are really that large: the size check measured them, under its warn.
    size = next(m for m in checks["test_path_size[localhost:logs]"]["evidence"]
                if m["name"] == "host.path_bytes")
    assert 0.69 * 2**26 < size["value"] < 0.8 * 2**26
    assert size["verdict"] == "PASS"
