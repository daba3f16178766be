"""Host capacity checks (``df -P``, ``/proc/meminfo``): strict parsing, and each check PASS
and FAIL for the right reason against real file systems (tmpfs mounted here and filled)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.targets.host import HostClient, HostTarget
from opsverify.targets.host_capacity import DiskUsage, parse_df, parse_meminfo, size_text
from tests.conftest import Project

DF = """Filesystem     1024-blocks  Used Available Capacity Mounted on
/dev/vda         264212084 25861556  80529356      25% /
Filesystem       Inodes  IUsed    IFree IUse% Mounted on
/dev/vda       16777216 553307 16223909    4% /
"""


def test_parse_df_and_meminfo() -> None:
    usage = parse_df("/", DF)
    assert (usage.filesystem, usage.mounted_on, usage.size_kib) == ("/dev/vda", "/", 264212084)
    assert usage.used_pct == 24.3  # used / (used + available), as df's Capacity
    assert usage.inodes_used_pct == 3.3
    spaced = DF.replace("/dev/vda ", "my disk ").replace("% /\n", "% /mnt/a b\n")
    assert parse_df("/mnt/a b", spaced).mounted_on == "/mnt/a b"
    btrfs = DiskUsage("/", "x", "/", 10, 5, 5, 0, 0, 0)
    assert btrfs.inodes_used_pct is None
    memory = parse_meminfo("MemTotal:  1000 kB\nMemFree: 10 kB\nMemAvailable:  250 kB\n"
                           "Active(anon): 5 kB\nHugePages_Total: 0\n")
    assert memory.used_pct == 75.0
    assert size_text(512) == "512 KiB"
    assert size_text(3 * 1024 * 1024 + 512 * 1024) == "3.5 GiB"


@pytest.mark.parametrize("text", ["", DF.splitlines()[0], DF.replace("25861556", "many"),
                                  DF + DF])
def test_parse_df_is_strict(text: str) -> None:
    with pytest.raises(ValueError, match="unexpected df"):
        parse_df("/", text)


def test_parse_meminfo_is_strict() -> None:
    with pytest.raises(ValueError, match=r"no MemAvailable line .*3\.14"):
        parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\n")
    with pytest.raises(ValueError, match="make no sense"):
        parse_meminfo("MemTotal: 1000 kB\nMemAvailable: 2000 kB\n")


@pytest.mark.parametrize(("keys", "error"), [
    ({"filesystems": ["data"]}, "expected an absolute path"),
    ({"filesystems": ["/", "/"]}, "listed twice"),
    ({"memory": "sometimes"}, "valid boolean"),
])
def test_schema_errors(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        HostTarget(type="host", url="local", **keys)


def test_local_client_reads_df_and_meminfo() -> None:
    client = HostClient("laptop", HostTarget(type="host", url="local"), 3)
    usage = client.disk_usage("/")
    assert usage is not None
    assert usage.mounted_on == "/"
    statvfs = os.statvfs("/")
    assert abs(usage.size_kib - statvfs.f_blocks * statvfs.f_frsize // 1024) <= 1
    assert client.disk_usage("/nonexistent/path") is None
    assert 0 < client.memory().used_pct < 100


# -- the checks, as a user runs them, against tmpfs mounts in a good and a bad state -------------
@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Three small tmpfs mounts: empty, full of data, out of inodes."""
    points = {name: tmp_path / name for name in ("empty", "full", "no-inodes")}
    mounted: list[Path] = []
    try:
        for name, point in points.items():
            point.mkdir()
            options = "size=1m,nr_inodes=8" if name == "no-inodes" else "size=1m,nr_inodes=64"
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                                  capture_output=True, text=True, check=False, timeout=10)
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
            mounted.append(point)
        _fill_space(points["full"] / "blob")
        _fill_inodes(points["no-inodes"])
        yield points
    finally:
        for point in mounted:
            subprocess.run(["umount", str(point)], capture_output=True, check=False, timeout=10)


def _fill_space(path: Path) -> None:
    with contextlib.suppress(OSError), path.open("wb") as out:  # ENOSPC: full
        for _ in range(2048):
            out.write(b"\0" * 1024)
            out.flush()


def _fill_inodes(directory: Path) -> None:
    with contextlib.suppress(OSError):  # ENOSPC: no inode left
        for i in range(100):
            (directory / f"f{i}").touch()


ENV = """
settings: {timeout_s: 3}
targets:
  good:
    type: host
    url: local
    filesystems: ["%(empty)s"]
    memory: true
    thresholds: {host.memory_used_pct: {warn: 99, crit: 100}}
  bad:
    type: host
    url: local
    filesystems: ["%(full)s", "%(no-inodes)s", /nonexistent/data]
  tight:
    type: host
    url: local
    memory: true
    thresholds: {host.memory_used_pct: {warn: 0, crit: 0.1}}
"""


def test_capacity_checks_pass_and_fail_for_the_right_reasons(
        project: Project, mounts: dict[str, Path]) -> None:
    project.copy_check("checks/capacity/test_host.py")
    project.write("environments/caps.yaml", ENV % {k: str(v) for k, v in mounts.items()})
    result = project.run("--env", "caps", "-p", "no:xdist", timeout=60)
    assert result.returncode == 1, result.output
    checks = project.checks("caps")
    outcomes = {k: c["outcome"] for k, c in checks.items()}
    full, inodes = f"bad:{mounts['full']}", f"bad:{mounts['no-inodes']}"
    assert outcomes == {
        f"test_disk_usage[good:{mounts['empty']}]": "PASS",
        f"test_disk_usage[{full}]": "FAIL",
        f"test_disk_usage[{inodes}]": "FAIL",
        "test_disk_usage[bad:/nonexistent/data]": "FAIL",
        "test_memory_usage[good]": "PASS",
        "test_memory_usage[tight]": "FAIL",  # a threshold no machine meets: memory is real
    }, result.output

    def failing(key: str) -> dict[str, Any]:
        return {m["name"]: m for m in checks[key]["evidence"] if m["verdict"] == "FAIL"}

    space = failing(f"test_disk_usage[{full}]")
    assert list(space) == ["host.disk_used_pct"]
    assert space["host.disk_used_pct"]["value"] == 100.0
    assert space["host.disk_used_pct"]["expected"] == "≤ 95 %"
    assert "check default" in space["host.disk_used_pct"]["source"]
    assert list(failing(f"test_disk_usage[{inodes}]")) == ["host.inodes_used_pct"]
    assert failing(f"test_disk_usage[{inodes}]")["host.inodes_used_pct"]["value"] == 100.0
    assert list(failing("test_disk_usage[bad:/nonexistent/data]")) == [
        "/nonexistent/data exists"]
    memory = failing("test_memory_usage[tight]")["host.memory_used_pct"]
    assert memory["source"].startswith("crit from environments/caps.yaml:")
    good = {m["name"]: m["value"] for m in checks[f"test_disk_usage[good:{mounts['empty']}]"]
            ["evidence"]}
    assert good["size"] == "1.0 MiB"
    assert good["file system"] == f"tmpfs mounted on {mounts['empty']}"
    assert "host.memory_used_pct" in {m["name"] for m in checks["test_memory_usage[good]"]
                                      ["evidence"]}


def test_no_target_declaring_memory_is_a_skip_that_says_so(project: Project) -> None:
    project.copy_check("checks/capacity/test_host.py")
    project.write("environments/caps.yaml",
                  "targets:\n  laptop: {type: host, url: local, filesystems: [/]}\n")
    result = project.run("--env", "caps", "-p", "no:xdist", "-rs", timeout=60)
    assert "no host target declares memory in environment 'caps'" in result.output, \
        result.output
    assert result.returncode == 0, result.output  # disk checked, memory skipped: no failure
