"""Host capacity: the runbooks' ``df -h /`` (space and inodes) and ``free -h``, on the local
machine, over verified ssh or in a container (testinfra)."""

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.targets.host import HostClient
from opsverify.targets.host_capacity import DiskUsage, MemoryUsage, size_text
from opsverify.thresholds import Threshold

# `df` of each declared path and /proc/meminfo, prefetched in the probe pool.


@probe
def host_disk_usage(host: HostClient, host_filesystem: str) -> DiskUsage | None:
    return host.disk_usage(host_filesystem)


@probe
def host_memory_usage(host: HostClient) -> MemoryUsage:
    return host.memory()


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
                    default=Threshold(warn=80, crit=95))
    evidence.note("size", size_text(usage.size_kib))
    evidence.note("free", size_text(usage.free_kib))
    if usage.inodes_used_pct is None:
        evidence.note("inodes", "not counted by this file system")
        return
    evidence.within("host.inodes_used_pct", usage.inodes_used_pct, unit="%",
                    default=Threshold(warn=80, crit=95))
    evidence.note("inodes free", usage.inodes_free)


@pytest.mark.daily
def test_memory_usage(host_memory: HostClient, host_memory_usage: MemoryUsage,
                      evidence: EvidenceLog) -> None:
    """Memory in use stays below its limits (``/proc/meminfo``: MemTotal - MemAvailable)."""
    # host_memory selects the hosts that declare `memory: true`; the probe reads them.
    memory = host_memory_usage
    evidence.within("host.memory_used_pct", memory.used_pct, unit="%",
                    default=Threshold(warn=85, crit=95))
    evidence.note("total", size_text(memory.total_kib))
    evidence.note("available", size_text(memory.available_kib))
