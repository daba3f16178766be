"""ClickHouse capacity: the space left on each disk of ``system.disks``, and the days until
each is full, from the run history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.history import judge_trend
from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.history import History
from opsverify.targets.host_capacity import bytes_text
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.clickhouse import ClickHouseClient, Disks, DiskSpace


@probe
def clickhouse_disks(clickhouse: ClickHouseClient) -> Disks:
    """``system.disks``, read in the probe pool (its disks are known only once read)."""
    return clickhouse.disks()


def sized_disks(found: Disks, evidence: EvidenceLog) -> list[DiskSpace]:
    """The disks that report a size; SKIP on a server without ``system.disks``."""
    if found.disks is None:
        pytest.skip(f"system.disks needs ClickHouse 19.15 or later; this server is "
                    f"{found.version} (declare system_disks: false to stop asking)")
    evidence.note("server", f"ClickHouse {found.version}")
    evidence.expect("disks in system.disks", len(found.disks), at_least=1)
    sized = []
    for disk in found.disks:
        if disk.used_pct is None:
            evidence.note(f"disk {disk.name}", "reports no size (broken, read-only or "
                          "object storage)")
        else:
            sized.append(disk)
    return sized


@pytest.mark.daily
def test_disk_usage(clickhouse: ClickHouseClient, clickhouse_system_disks: bool,
                    clickhouse_disks: Disks, evidence: EvidenceLog) -> None:
    """Each disk in ``system.disks`` has space left (free of total, less keep_free_space)."""
    for disk in sized_disks(clickhouse_disks, evidence):
        assert disk.used_pct is not None
        # One check per target: its disks are known only once read. Each is its own item.
        evidence.within("clickhouse.disk_used_pct", disk.used_pct, unit="%",
                        default=Threshold(warn=80, crit=90), capacity=100, item=disk.name)
        keep = f", keeps {bytes_text(disk.keep_free_bytes)} free" if disk.keep_free_bytes else ""
        evidence.note(f"disk {disk.name}", f"{bytes_text(disk.free_bytes)} free of "
                      f"{bytes_text(disk.total_bytes)} at {disk.path}{keep}")


@pytest.mark.daily
def test_disk_trend(clickhouse: ClickHouseClient, clickhouse_system_disks: bool,
                    clickhouse_disks: Disks, capacity_history: History,
                    evidence: EvidenceLog) -> None:
    """Days until each disk is full, from its history (Theil-Sen); SKIP while no disk has
    enough history."""
    disks = sized_disks(clickhouse_disks, evidence)
    short = []
    for disk in disks:
        assert disk.used_pct is not None
        try:
            judge_trend(evidence, capacity_history, "clickhouse.disk_used_pct", disk.used_pct,
                        100, days_left_id="clickhouse.disk.days_left", unit="%",
                        item=disk.name)
        except pytest.skip.Exception as exc:  # this disk's history is too short: the next
            short.append(f"disk {disk.name}: {exc.msg}")
    if short and len(short) == len(disks):
        pytest.skip("; ".join(short))
    for line in short:
        evidence.note("trend", line)
