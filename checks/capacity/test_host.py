"""Host capacity: the runbooks' ``df -h /`` (space and inodes), ``free -h``, ``uptime`` (load
per core) and ``du -sh logs/*.log``, on the local machine, over verified ssh or in a
container (testinfra); and the days until disk, inodes and memory are full, from the run
history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.history import judge_trend
from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.history import History
from opsverify.targets.host_capacity import bytes_text, path_size, read_load, size_text
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.host import HostClient
    from opsverify.targets.host_capacity import (
        DeclaredPath,
        DiskUsage,
        LoadAverage,
        MemoryUsage,
        PathSize,
    )

# `df` of each declared path, /proc/meminfo, /proc/loadavg and `du` of each declared glob,
# prefetched in the probe pool.
GIB = 1024**3
# A declared path without max_bytes: a log past a gigabyte has escaped its rotation.
PATH_BYTES = Threshold(warn=1 * GIB, crit=5 * GIB)


@probe
def host_disk_usage(host: HostClient, host_filesystem: str) -> DiskUsage | None:
    return host.disk_usage(host_filesystem)


@probe
def host_memory_usage(host: HostClient) -> MemoryUsage:
    return host.memory()


@probe
def host_load_average(host: HostClient) -> LoadAverage:
    return read_load(host)


@probe
def host_path_size(host: HostClient, host_path: DeclaredPath) -> PathSize:
    return path_size(host, host_path.path)


@pytest.mark.daily
def test_disk_usage(host: HostClient, host_filesystem: str, host_disk_usage: DiskUsage | None,
                    evidence: EvidenceLog) -> None:
    """The file system holding a declared path has space and inodes left (``df -P``)."""
    where = evidence.source_of("targets", host.name, "filesystems",
                               host.spec.filesystems.index(host_filesystem))
    usage = host_disk_usage
    evidence.expect(f"{host_filesystem} exists", usage is not None, equals=True, source=where)
    if usage is None:
        return
    evidence.note("file system", f"{usage.filesystem} mounted on {usage.mounted_on}")
    evidence.within("host.disk_used_pct", usage.used_pct, unit="%",
                    default=Threshold(warn=80, crit=95), capacity=100)
    evidence.note("size", size_text(usage.size_kib))
    evidence.note("free", size_text(usage.free_kib))
    if usage.inodes_used_pct is None:
        evidence.note("inodes", "not counted by this file system")
        return
    evidence.within("host.inodes_used_pct", usage.inodes_used_pct, unit="%",
                    default=Threshold(warn=80, crit=95), capacity=100)
    evidence.note("inodes free", usage.inodes_free)


@pytest.mark.daily
def test_memory_usage(host_memory: HostClient, host_memory_usage: MemoryUsage,
                      evidence: EvidenceLog) -> None:
    """Memory in use stays below its limits (``/proc/meminfo``: MemTotal - MemAvailable)."""
    # host_memory selects the hosts that declare `memory: true`; the probe reads them.
    memory = host_memory_usage
    evidence.within("host.memory_used_pct", memory.used_pct, unit="%",
                    default=Threshold(warn=85, crit=95), capacity=100)
    evidence.note("total", size_text(memory.total_kib))
    evidence.note("available", size_text(memory.available_kib))


@pytest.mark.daily
def test_load_per_core(host_load: HostClient, host_load_average: LoadAverage,
                       evidence: EvidenceLog) -> None:
    """The 15-minute load average per online CPU stays below its limits (``/proc/loadavg``)."""
    # host_load selects the hosts that declare `load: true`. The 15-minute average is
    # judged: a daily check samples once, and a capacity verdict is about sustained
    # saturation, not the burst of a cron job (or of this run's own probes) that the 1- and
    # 5-minute averages still show. Those two are evidence beside it.
    load = host_load_average
    evidence.note("load average", f"{load.one:.2f} {load.five:.2f} {load.fifteen:.2f} "
                  "(1, 5, 15 minutes)")
    evidence.note("online CPUs", load.cpus)
    evidence.note("1-minute load per core", load.per_core(load.one))
    evidence.note("5-minute load per core", load.per_core(load.five))
    evidence.within("host.load_per_core", load.per_core(load.fifteen), unit="per core",
                    default=Threshold(warn=1.0, crit=2.0))


@pytest.mark.daily
def test_path_size(host: HostClient, host_path: DeclaredPath, host_path_size: PathSize,
                   evidence: EvidenceLog) -> None:
    """The files a declared glob matches stay under its size (``du -s -b``; the runbook's
    ``du -sh logs/*.log``); a glob matching nothing FAILs."""
    where = evidence.source_of("targets", host.name, "paths", host.spec.paths.index(host_path))
    found = host_path_size
    evidence.expect(f"files matching {host_path.path}", len(found.entries), at_least=1,
                    source=where)
    if not found.entries:
        evidence.note("du", f"no file matches {host_path.path}")
        return
    evidence.note("largest", ", ".join(f"{path} {bytes_text(size)}"
                                       for path, size in found.entries[:5]))
    if not found.apparent:
        evidence.note("measured as", "allocated size (busybox du -k has no -b)")
    declared = host_path.max_bytes is not None or host_path.warn_bytes is not None
    evidence.within("host.path_bytes", found.total_bytes, unit="bytes",
                    default=Threshold(warn=host_path.warn_bytes, crit=host_path.max_bytes)
                    if declared else PATH_BYTES,
                    default_source=where if declared else "check default",
                    capacity=host_path.max_bytes)
    evidence.note("total", bytes_text(found.total_bytes))


# -- trends: the days until full, from the history the checks above keep ------------------------
@pytest.mark.daily
def test_path_trend(host: HostClient, host_path: DeclaredPath, host_path_size: PathSize,
                    capacity_history: History, evidence: EvidenceLog) -> None:
    """Days until the files a declared glob matches reach its ``max_bytes``, from their
    history (Theil-Sen): the logs that nobody rotates."""
    if host_path.max_bytes is None:
        pytest.skip(f"{host_path.label}: no max_bytes, so nothing to count the days to")
    if not host_path_size.entries:
        pytest.skip(f"no file matches {host_path.path}: test_path_size fails for it")
    judge_trend(evidence, capacity_history, "host.path_bytes", host_path_size.total_bytes,
                host_path.max_bytes, days_left_id="host.path.days_left", unit="bytes")


@pytest.mark.daily
def test_disk_trend(host: HostClient, host_filesystem: str, host_disk_usage: DiskUsage | None,
                    capacity_history: History, evidence: EvidenceLog) -> None:
    """Days until the file system is full, from its history (Theil-Sen)."""
    usage = host_disk_usage
    if usage is None:
        pytest.skip(f"{host_filesystem} does not exist: test_disk_usage fails for it")
    judge_trend(evidence, capacity_history, "host.disk_used_pct", usage.used_pct, 100,
                days_left_id="host.disk.days_left", unit="%")


@pytest.mark.daily
def test_inodes_trend(host: HostClient, host_filesystem: str,
                      host_disk_usage: DiskUsage | None, capacity_history: History,
                      evidence: EvidenceLog) -> None:
    """Days until the file system has no inode left, from its history (Theil-Sen)."""
    usage = host_disk_usage
    if usage is None:
        pytest.skip(f"{host_filesystem} does not exist: test_disk_usage fails for it")
    if usage.inodes_used_pct is None:
        pytest.skip(f"{usage.filesystem} counts no inodes: nothing to fill")
    judge_trend(evidence, capacity_history, "host.inodes_used_pct", usage.inodes_used_pct,
                100, days_left_id="host.inodes.days_left", unit="%")


@pytest.mark.daily
def test_memory_trend(host_memory: HostClient, host_memory_usage: MemoryUsage,
                      capacity_history: History, evidence: EvidenceLog) -> None:
    """Days until memory in use reaches all of it, from its history (Theil-Sen)."""
    judge_trend(evidence, capacity_history, "host.memory_used_pct", host_memory_usage.used_pct,
                100, days_left_id="host.memory.days_left", unit="%")
