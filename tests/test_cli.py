"""``opsverify -m daily --env /abs/path.yaml`` works as typed; plain pytest with the same
words exits 4 with one line saying what to type instead (pytest reads a path after a space
as its rootdir before plugins load: pytest-dev/pytest#6904)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project

ENV = """
settings: {timeout_s: 5}
targets:
  box:
    type: host
    url: local
    files: [{name: passwd, path: /etc/passwd, kind: file}]
"""
OPSVERIFY = Path(sys.executable).parent / "opsverify"


def run(project: Project, command: list[str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPSVERIFY_", "PYTEST_"))}
    return subprocess.run(command, cwd=project.path, env=environ, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def outside(project: Project, tmp_path: Path) -> Path:
    project.copy_check("checks/health/test_host.py")
    path = tmp_path / "etc" / "opsverify" / "prod.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(ENV)
    return path


def test_the_console_script_takes_a_path_after_a_space(project: Project, outside: Path) -> None:
    if not OPSVERIFY.exists():
        pytest.skip("the opsverify console script is not installed (pip install -e .)")
    result = run(project, [str(OPSVERIFY), "-m", "daily", "--env", str(outside), "-p",
                           "no:randomly"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"opsverify: environment 'prod' from {outside} (chosen by --env)" in result.stdout
    assert "test_file_present[box:passwd] PASSED" in result.stdout or " passed" in result.stdout
    assert (project.reports / "prod" / "latest" / "summary.json").is_file()
    assert "Warning" not in result.stdout + result.stderr


def test_plain_pytest_says_what_to_type_instead(project: Project, outside: Path) -> None:
    result = run(project, [sys.executable, "-m", "pytest", "-m", "daily", "--env",
                           str(outside)])
    assert result.returncode == 4, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        f"ERROR: --env {outside}: pytest read {str(outside)!r} as its rootdir before "
        f"opsverify's plugins loaded; write --env={outside} or run: opsverify -m daily "
        f"--env {outside}"], lines
    # Written with '=', plain pytest is fine.
    result = run(project, [sys.executable, "-m", "pytest", "-m", "daily", f"--env={outside}",
                           "-p", "no:randomly"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_console_script_outside_a_project_is_one_line(tmp_path: Path) -> None:
    if not OPSVERIFY.exists():
        pytest.skip("the opsverify console script is not installed (pip install -e .)")
    result = subprocess.run([str(OPSVERIFY), "-m", "daily"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 4
    assert result.stderr.strip() == (
        f"opsverify: run from an opsverify project (a directory with conftest.py and "
        f"checks/); {tmp_path} is not one")


def test_help_lists_every_option(project: Project) -> None:
    """pytest formats help with %: a fault's description ("90 % of max_connections") must
    not break it."""
    result = run(project, [sys.executable, "-m", "pytest", "--help"])
    assert result.returncode == 0, result.stderr
    for option in ("--env", "--sandbox-fault", "--allow-destructive", "--max-percent",
                   "--prometheus-textfile", "--nagios", "--reports-dir"):
        assert option in result.stdout, option
    assert "90 % of max_connections" in result.stdout.replace("\n", " ").replace("  ", " ") \
        or "pg-connections-exhausted" in result.stdout
