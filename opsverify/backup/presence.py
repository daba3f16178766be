"""L1: the newest backup is recent, big enough, not much smaller than the one before, and
the number kept is within the retention policy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations: the check modules import this one in every run
    from opsverify.targets.backup import BackupFile


@dataclass(frozen=True)
class SizeChange:
    """The newest backup against the previous one: a sudden drop is how an empty dump or
    a dump of the wrong database shows up."""

    newest: int
    previous: int

    @property
    def drop_pct(self) -> float:
        """How much smaller the newest is, in percent of the previous (0 when it grew)."""
        if self.previous <= 0:
            return 0.0
        return max(0.0, (self.previous - self.newest) * 100 / self.previous)

    @property
    def change_pct(self) -> float:
        """Signed change, for the report: -97.5 % shrank, +3 % grew."""
        if self.previous <= 0:
            return 0.0
        return (self.newest - self.previous) * 100 / self.previous


def size_change(backups: Sequence[BackupFile]) -> SizeChange | None:
    """The newest against the previous backup, when there are two (``backups`` newest first)."""
    if len(backups) < 2:
        return None
    return SizeChange(backups[0].size, backups[1].size)


def human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop returns
