"""Host capacity checks (``df -P``, ``/proc/meminfo``, ``/proc/loadavg``, ``du -s``) and their
trends: strict parsing, and each check PASS and FAIL for the right reason against real file
systems (tmpfs mounted here and filled), this machine's real load and memory, real files, and
history files seeded around what this machine reads now."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.targets.host import HostClient, HostTarget
from opsverify.targets.host_capacity import (
    DiskUsage,
    bytes_text,
    parse_df,
    parse_du,
    parse_loadavg,
    parse_meminfo,
    path_size,
    read_load,
    size_text,
)
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
            _mount(point, "size=1m,nr_inodes=8" if name == "no-inodes" else
                   "size=1m,nr_inodes=64")
            mounted.append(point)
        _fill_space(points["full"] / "blob")
        _fill_inodes(points["no-inodes"])
        yield points
    finally:
        for point in mounted:
            subprocess.run(["umount", str(point)], capture_output=True, check=False, timeout=10)


def _mount(point: Path, options: str) -> None:
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                          capture_output=True, text=True, check=False, timeout=10)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


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
    result = project.run("--env", "caps", "-p", "no:xdist", "-k",
                         "test_disk_usage or test_memory_usage", timeout=60)
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
    assert space["host.disk_used_pct"]["capacity"] == 100  # kept in the history
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
    assert {m["name"]: m["capacity"] for m in checks["test_memory_usage[good]"]["evidence"]
            }["host.memory_used_pct"] == 100


def test_no_target_declaring_memory_is_a_skip_that_says_so(project: Project) -> None:
    project.copy_check("checks/capacity/test_host.py")
    project.write("environments/caps.yaml",
                  "targets:\n  laptop: {type: host, url: local, filesystems: [/]}\n")
    result = project.run("--env", "caps", "-p", "no:xdist", "-rs", timeout=60)
    assert "no host target declares memory in environment 'caps'" in result.output, \
        result.output
    assert result.returncode == 0, result.output  # disk checked, memory skipped: no failure


# -- load per core and sizes of declared paths: parsers and the local client -----------------
def test_parse_loadavg_and_du() -> None:
    load = parse_loadavg("0.52 1.58 3.10 2/345 12345\n2\n")
    assert (load.one, load.five, load.fifteen, load.cpus) == (0.52, 1.58, 3.10, 2)
    assert load.per_core(load.fifteen) == 1.55
    found = parse_du("/var/log/*.log", "bytes\n300\t/var/log/b.log\n5000\t/var/log/a b.log\n")
    assert found.entries == (("/var/log/a b.log", 5000), ("/var/log/b.log", 300))
    assert found.total_bytes == 5300
    assert found.apparent
    busybox = parse_du("/x", "kib\n4\t/x\n")
    assert busybox.total_bytes == 4096
    assert not busybox.apparent
    assert bytes_text(812) == "812 B"
    assert bytes_text(3 * 1024 * 1024) == "3.0 MiB"


@pytest.mark.parametrize(("text", "error"), [
    ("", "0 lines"),
    ("0.52 0.58 0.59 2/345 12345\n", "1 lines"),
    ("0.52 0.58 2/345 12345\n2\n", "unexpected /proc/loadavg line"),
    ("0.52 0.58 0.59 2/345 12345\n0\n", "unexpected CPU count '0'"),
    ("0.52 0.58 0.59 2/345 12345\ntwo\n", "unexpected CPU count 'two'"),
])
def test_parse_loadavg_is_strict(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_loadavg(text)


@pytest.mark.parametrize(("text", "error"), [
    ("", "first line ''"),
    ("300\t/a\n", "first line '300\\\\t/a'"),
    ("bytes\n", "no size"),
    ("bytes\nmany\t/a\n", "unexpected du line"),
    ("bytes\n300 /a\n", "unexpected du line"),
])
def test_parse_du_is_strict(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_du("/a", text)


@pytest.mark.parametrize(("paths", "error"), [
    ([{"path": "logs/*.log"}], "expected an absolute path or glob"),
    ([{"path": "/a", "warn_bytes": 10, "max_bytes": 5}], "warn_bytes 10 is above max_bytes 5"),
    ([{"path": "/a", "max_bytes": 0}], "greater than 0"),
    ([{"path": "/a/*.log"}, {"path": "/a/*.log"}], "/a/\\*.log: declared twice"),
    ([{"path": "/a", "name": "logs"}, {"path": "/b", "name": "logs"}], "logs: declared twice"),
    ([{"path": "/a", "size": 5}], "Extra inputs"),
])
def test_path_schema_errors(paths: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        HostTarget(type="host", url="local", paths=paths)


def test_local_client_reads_load_and_sizes(tmp_path: Path) -> None:
    client = HostClient("laptop", HostTarget(type="host", url="local"), 3)
    load = read_load(client)
    assert load.cpus == os.sysconf("SC_NPROCESSORS_ONLN")
    assert abs(load.fifteen - os.getloadavg()[2]) < 0.5
    (tmp_path / "a dir").mkdir()
    (tmp_path / "a dir" / "x.log").write_bytes(b"x" * 5000)
    (tmp_path / "y.log").write_bytes(b"y" * 300)
    assert path_size(client, f"{tmp_path}/*/*.log").entries == (
        (f"{tmp_path}/a dir/x.log", 5000),)
    assert path_size(client, f"{tmp_path}/*.log").total_bytes == 300
    assert path_size(client, f"{tmp_path}/*.gz").entries == ()
    # The glob is only expanded: nothing in it runs.
    marker = tmp_path / "ran"
    assert path_size(client, f"{tmp_path}/$(touch {marker})*").entries == ()
    assert path_size(client, f"{tmp_path}/`touch {marker}`;*").entries == ()
    assert not marker.exists()


# -- the checks against this machine's real load and real files ------------------------------
def test_load_per_core_fails_above_its_threshold_and_passes_below(project: Project) -> None:
    project.copy_check("checks/capacity/test_host.py")
    per_core = round(os.getloadavg()[2] / os.sysconf("SC_NPROCESSORS_ONLN"), 2)
    # Half of what this machine has carried for 15 minutes: it cannot drop that far in a
    # few seconds. (An idle machine at 0.00 is still above -1.)
    tight = per_core / 2 if per_core >= 0.02 else -1.0
    project.write("environments/load.yaml", f"""
settings: {{timeout_s: 3}}
targets:
  busy:
    type: host
    url: local
    load: true
    thresholds: {{host.load_per_core: {{warn: {tight / 2}, crit: {tight}}}}}
  calm:
    type: host
    url: local
    load: true
    thresholds: {{host.load_per_core: {{warn: 1000, crit: 2000}}}}
  quiet:
    type: host
    url: local
""")
    result = project.run("--env", "load", "-p", "no:xdist", "-k", "test_load_per_core",
                         timeout=60)
    assert result.returncode == 1, result.output
    checks = project.checks("load")
    assert {k: c["outcome"] for k, c in checks.items()} == {
        "test_load_per_core[busy]": "FAIL", "test_load_per_core[calm]": "PASS"}, result.output
    busy = {m["name"]: m for m in checks["test_load_per_core[busy]"]["evidence"]}
    measured = busy["host.load_per_core"]
    assert measured["verdict"] == "FAIL", measured
    assert measured["value"] > tight, measured
    assert measured["source"].startswith("crit from environments/load.yaml:")
    assert measured["unit"] == "per core"
    assert busy["online CPUs"]["value"] == os.sysconf("SC_NPROCESSORS_ONLN")
    assert busy["load average"]["value"].endswith("(1, 5, 15 minutes)")
    assert "5-minute load per core" in busy
    calm = {m["name"]: m for m in checks["test_load_per_core[calm]"]["evidence"]}
    assert calm["host.load_per_core"]["expected"] == "≤ 2000 per core"


def test_path_size_fails_past_max_bytes_and_when_nothing_matches(
        project: Project, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"a" * 3000)
    (logs / "worker.log").write_bytes(b"w" * 2000)
    (logs / "old.log.1").write_bytes(b"o" * 9000)  # rotated: not *.log
    project.copy_check("checks/capacity/test_host.py")
    project.write("environments/sizes.yaml", f"""
settings: {{timeout_s: 3}}
targets:
  app:
    type: host
    url: local
    paths:
      - {{name: logs, path: "{logs}/*.log", max_bytes: 4096}}
      - {{name: worker, path: "{logs}/worker.log", max_bytes: 4096}}
      - {{name: growing, path: "{logs}/app.log", warn_bytes: 2048, max_bytes: 8192}}
      - {{name: archives, path: "{logs}/*.gz", max_bytes: 4096}}
      - {{path: "{logs}"}}
  strict:
    type: host
    url: local
    paths: [{{name: logs, path: "{logs}/*.log", max_bytes: 1000000}}]
    thresholds: {{host.path_bytes: {{crit: 100}}}}
""")
    # (not trend: an unnamed path's id holds this test's directory, "test_path_size_...")
    result = project.run("--env", "sizes", "-p", "no:xdist", "-k", "test_path_size and not trend",
                         timeout=60)
    assert result.returncode == 1, result.output
    checks = project.checks("sizes")
    assert {k: c["outcome"] for k, c in checks.items()} == {
        "test_path_size[app:logs]": "FAIL",
        "test_path_size[app:worker]": "PASS",
        "test_path_size[app:growing]": "WARN",
        "test_path_size[app:archives]": "FAIL",
        f"test_path_size[app:{logs}]": "PASS",
        "test_path_size[strict:logs]": "FAIL",  # the target's threshold wins
    }, result.output

    def evidence(key: str) -> dict[str, Any]:
        return {m["name"]: m for m in checks[key]["evidence"]}

    size = evidence("test_path_size[app:logs]")["host.path_bytes"]
    assert (size["value"], size["verdict"], size["expected"]) == (5000, "FAIL", "≤ 4096 bytes")
    assert size["capacity"] == 4096
    assert size["item"] == "logs"
    assert size["source"].startswith("crit from environments/sizes.yaml:"), size
    assert evidence("test_path_size[app:logs]")["largest"]["value"] == (
        f"{logs}/app.log 2.9 KiB, {logs}/worker.log 2.0 KiB")
    growing = evidence("test_path_size[app:growing]")["host.path_bytes"]
    assert (growing["verdict"], growing["expected"]) == ("WARN", "≤ 2048 bytes")
    archives = evidence("test_path_size[app:archives]")
    assert archives[f"files matching {logs}/*.gz"]["verdict"] == "FAIL"
    assert archives["du"]["value"] == f"no file matches {logs}/*.gz"
    assert "host.path_bytes" not in archives
    whole = evidence(f"test_path_size[app:{logs}]")["host.path_bytes"]
    assert whole["value"] >= 14000
    assert whole["source"] == "crit from check default"
    assert whole["capacity"] is None
    strict = evidence("test_path_size[strict:logs]")["host.path_bytes"]
    assert strict["source"].startswith("crit from environments/sizes.yaml:")


def test_no_target_declaring_load_is_a_skip_that_says_so(project: Project) -> None:
    project.copy_check("checks/capacity/test_host.py")
    project.write("environments/caps.yaml", "targets:\n  laptop: {type: host, url: local}\n")
    result = project.run("--env", "caps", "-p", "no:xdist", "-rs", "-k", "load", timeout=60)
    assert "no host target declares load in environment 'caps'" in result.output, result.output
    assert result.returncode == 0, result.output


# -- trends, from history files seeded around what this machine reads now --------------------
def seed(project: Project, env: str, series: list[tuple[str, str, str, list[tuple[float, float]]]],
         ) -> None:
    """``reports/<env>/history.jsonl`` with (target, metric, item, [(hours ago, value)])."""
    now = datetime.now(UTC)
    lines = [json.dumps({"time": (now - timedelta(hours=ago)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                         "target": target, "metric": metric, "item": item, "value": value,
                         "unit": "%", "capacity": 100})
             for target, metric, item, points in series for ago, value in points]
    project.write(f"reports/{env}/history.jsonl", "\n".join(lines) + "\n")


def growing(now: float, per_day: float, samples: int = 14, every_h: float = 24,
            ) -> list[tuple[float, float]]:
    """``samples`` readings, ``every_h`` hours apart, rising ``per_day`` towards ``now``."""
    return [(i * every_h, round(now - per_day * i * every_h / 24, 3))
            for i in range(samples, 0, -1)]


@pytest.fixture
def nearly_full(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs about 90 % full."""
    point = tmp_path / "filling"
    _mount(point, "size=1m,nr_inodes=64")
    try:
        (point / "data").write_bytes(b"\0" * 920 * 1024)
        yield point
    finally:
        subprocess.run(["umount", str(point)], capture_output=True, check=False, timeout=10)


def test_trends_fail_when_growth_fills_soon_pass_flat_and_skip_short(
        project: Project, nearly_full: Path) -> None:
    client = HostClient("laptop", HostTarget(type="host", url="local"), 3)
    disk = client.disk_usage(str(nearly_full))
    assert disk is not None
    assert disk.inodes_used_pct is not None
    memory = client.memory().used_pct
    fs = str(nearly_full)
    # Memory in use is low on a test machine: its growth is seeded over the last hour or so
    # (min_span_hours: 0), fast enough that the rest of it is gone in 3 days.
    per_day = (100 - memory) / 3
    seed(project, "trends", [
        ("filling", "host.disk_used_pct", fs, growing(disk.used_pct, 2)),  # ~5 days left
        ("filling", "host.inodes_used_pct", fs, [(24 * i, disk.inodes_used_pct)
                                                 for i in range(14, 0, -1)]),  # flat
        ("filling", "host.memory_used_pct", "", [(48, memory), (24, memory)]),  # + now: 3
        ("leaking", "host.memory_used_pct", "",
         growing(memory, per_day, every_h=0.8 * memory / per_day * 24 / 14)),
    ])
    project.copy_check("checks/capacity/test_host.py")
    project.write("environments/trends.yaml", f"""
settings: {{timeout_s: 3, trend: {{min_samples: 7, min_span_hours: 0}}}}
targets:
  filling:
    type: host
    url: local
    filesystems: ["{fs}"]
    memory: true
  leaking:
    type: host
    url: local
    memory: true
""")
    result = project.run("--env", "trends", "-p", "no:xdist", "-rs", "-k",
                         "disk_trend or inodes_trend or memory_trend", timeout=60)
    assert result.returncode == 1, result.output
    checks = project.checks("trends")
    assert {k: c["outcome"] for k, c in checks.items()} == {
        f"test_disk_trend[filling:{fs}]": "FAIL",
        f"test_inodes_trend[filling:{fs}]": "PASS",
        "test_memory_trend[filling]": "SKIP",
        "test_memory_trend[leaking]": "FAIL",
    }, result.output

    def evidence(key: str) -> dict[str, Any]:
        return {m["name"]: m for m in checks[key]["evidence"]}

    disk_trend = evidence(f"test_disk_trend[filling:{fs}]")
    days = disk_trend["host.disk.days_left"]
    expected = (100 - disk.used_pct) / 2
    assert days["verdict"] == "FAIL", days
    assert abs(days["value"] - expected) < 0.5, days
    assert days["expected"] == "≥ 7 days"
    assert days["item"] == fs
    assert "+2.0 %/day, 15 samples over 14 days" in disk_trend["trend"]["value"]
    assert disk_trend["host.disk_used_pct"]["capacity"] == 100
    inodes = evidence(f"test_inodes_trend[filling:{fs}]")
    assert inodes["host.inodes.days_left"]["value"] == "no growth"
    assert inodes["trend"]["value"].startswith("no growth")
    assert "insufficient history: 3 samples over 48.0 hours" in result.output
    leak = evidence("test_memory_trend[leaking]")["host.memory.days_left"]
    assert leak["verdict"] == "FAIL", leak
    assert 2 < leak["value"] < 4, leak
