"""``--keep-reports N``: after the run the oldest run directories of ``reports/<env>/`` go,
so that at most N remain (this run included); ``latest``, the run it points at and every
entry that is not a run directory stay."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opsverify.report import retention
from tests.conftest import Project

CHECK = '''
import pytest

from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold


@pytest.mark.daily
def test_latency(evidence: EvidenceLog) -> None:
    evidence.within("demo.latency_ms", 12, unit="ms", default=Threshold(warn=100, crit=200),
                    capacity=1000)
'''


def small(project: Project) -> Path:
    """One passing check against an environment without servers; its reports directory."""
    project.write("checks/health/test_demo.py", CHECK)
    project.write("environments/demo.yaml", "description: keep-reports demo\ntargets: {}\n")
    return project.reports / "demo"


def run_names(env_dir: Path) -> list[str]:
    return [p.name for p in retention.runs(env_dir)]


def test_four_runs_keeping_two_leave_the_two_newest(project: Project) -> None:
    env_dir = small(project)
    # What a user or another tool keeps beside the runs, and names that only look like one.
    env_dir.mkdir(parents=True)
    (env_dir / "notes.txt").write_text("keep me\n")
    (env_dir / "archive").mkdir()
    (env_dir / "archive" / "summary.json").write_text("{}\n")
    (env_dir / "20200101-000000-old").mkdir()  # not a run's name: never a candidate
    seeded = json.dumps({"time": datetime.now(UTC).isoformat(timespec="seconds"),
                         "target": "db", "metric": "host.disk_used_pct", "item": "/",
                         "value": 40, "unit": "%", "capacity": 100}) + "\n"
    (env_dir / "history.jsonl").write_text(seeded)
    audit = project.reports / "audit.jsonl"
    audit.write_text('{"run_id": "earlier"}\n')

    newest = []
    for n in range(4):
        result = project.run("--env=demo", "-p", "no:xdist", "--keep-reports", "2")
        assert result.returncode == 0, result.output
        newest.append(project.latest("demo").name)
        removed = "0 old runs" if n < 2 else "1 old run"
        assert (f"opsverify: --keep-reports 2: removed {removed} from reports/demo/\n"
                in result.stdout), result.stdout
        assert run_names(env_dir) == newest[-2:]

    assert len(set(newest)) == 4
    assert os.readlink(env_dir / "latest") == newest[-1]
    assert project.latest("demo") == env_dir / newest[-1]
    assert (project.latest("demo") / "summary.json").is_file()
    assert (env_dir / "notes.txt").read_text() == "keep me\n"
    assert (env_dir / "archive" / "summary.json").is_file()
    assert (env_dir / "20200101-000000-old").is_dir()
    assert audit.read_text() == '{"run_id": "earlier"}\n'
    assert (env_dir / "history.jsonl").read_text().startswith(seeded)

    # Without the option nothing is removed.
    result = project.run("--env=demo", "-p", "no:xdist")
    assert result.returncode == 0, result.output
    assert "--keep-reports" not in result.stdout
    assert len(run_names(env_dir)) == 3


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_keep_reports_below_one_is_a_usage_error(project: Project, value: str) -> None:
    env_dir = small(project)
    result = project.run("--env=demo", "-p", "no:xdist", f"--keep-reports={value}")
    assert result.returncode == 4, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == [f"ERROR: --keep-reports {value}: give a whole number of runs to keep, "
                     f"1 or more (the current run is one of them)"], result.output
    assert run_names(env_dir) == []


def test_a_run_that_never_started_removes_nothing(project: Project) -> None:
    env_dir = small(project)
    assert project.run("--env=demo", "-p", "no:xdist").returncode == 0
    kept = run_names(env_dir)
    # Another option's usage error, after the run directory was made: nothing ran.
    result = project.run("--env=demo", "-p", "no:xdist", "--keep-reports=1",
                         "--pushgateway=ftp://nowhere")
    assert result.returncode == 4, result.output
    assert set(kept) <= set(run_names(env_dir))
    assert (env_dir / kept[0] / "summary.json").is_file()


# -- the engine, on directories laid out by hand ------------------------------------------------
def lay_out(env_dir: Path, names: list[str]) -> None:
    env_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (env_dir / name).mkdir()


def test_suffixed_runs_of_one_second_sort_by_number(tmp_path: Path) -> None:
    names = ["20261201-090000-10", "20261201-090000", "20261201-090000-9",
             "20261130-235959-3", "20261201-090000-2"]
    lay_out(tmp_path, names)
    assert run_names(tmp_path) == ["20261130-235959-3", "20261201-090000",
                                   "20261201-090000-2", "20261201-090000-9",
                                   "20261201-090000-10"]
    assert [p.name for p in retention.to_remove(tmp_path, 2)] == [
        "20261130-235959-3", "20261201-090000", "20261201-090000-2"]


def test_latest_and_protected_runs_stay_and_count(tmp_path: Path) -> None:
    lay_out(tmp_path, ["20261101-090000", "20261102-090000", "20261103-090000",
                       "20261104-090000"])
    (tmp_path / "latest").symlink_to("20261101-090000", target_is_directory=True)
    (tmp_path / "20261105-090000").symlink_to("20261104-090000", target_is_directory=True)
    (tmp_path / "history.jsonl").write_text("{}\n")

    pruned = retention.prune(tmp_path, 2, frozenset({"20261102-090000"}))
    assert pruned.removed == ["20261103-090000", "20261104-090000"]
    assert pruned.errors == []
    # latest's run and the protected one are the two kept; symlinks and files stay.
    assert run_names(tmp_path) == ["20261101-090000", "20261102-090000"]
    assert (tmp_path / "latest").is_symlink()
    assert (tmp_path / "20261105-090000").is_symlink()
    assert (tmp_path / "history.jsonl").is_file()


def test_keeping_more_than_there_are_removes_nothing(tmp_path: Path) -> None:
    lay_out(tmp_path, ["20261101-090000", "20261102-090000"])
    assert retention.prune(tmp_path, 5).removed == []
    assert retention.prune(tmp_path / "missing", 1).removed == []
    with pytest.raises(ValueError, match="keep at least 1"):
        retention.to_remove(tmp_path, 0)
