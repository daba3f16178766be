"""Host capacity: what ``df -P`` and ``/proc/meminfo`` say, parsed strictly (what cannot be
read is an ERROR, never a guess), and sizes written as ``df -h`` writes them.

Split from :mod:`opsverify.targets.host`, whose client runs the commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class DiskUsage:
    """What ``df -P`` says of the file system holding ``path`` (sizes in KiB)."""

    path: str
    filesystem: str
    mounted_on: str
    size_kib: int
    used_kib: int
    free_kib: int  # available to unprivileged users, as df's "Available"
    inodes: int  # 0 where the file system keeps no inode count (btrfs, vfat)
    inodes_used: int
    inodes_free: int

    @property
    def used_pct(self) -> float:
        """Used of what users can have (used + available), as df's Capacity, unrounded."""
        usable = self.used_kib + self.free_kib
        return round(100.0 * self.used_kib / usable, 1) if usable else 0.0

    @property
    def inodes_used_pct(self) -> float | None:
        return round(100.0 * self.inodes_used / self.inodes, 1) if self.inodes else None


@dataclass(frozen=True)
class MemoryUsage:
    """``/proc/meminfo``: used is what is not available without swapping (KiB)."""

    total_kib: int
    available_kib: int

    @property
    def used_pct(self) -> float:
        return round(100.0 * (self.total_kib - self.available_kib) / self.total_kib, 1)


# -- parsers, strict: what we cannot read is an ERROR, never a guess --------------------------
_DF_ROW = re.compile(r"^(?P<fs>.+?)\s+(?P<total>\d+)\s+(?P<used>\d+)\s+(?P<free>\d+)\s+"
                     r"(?:\d+%|-)\s+(?P<mount>/.*)$")


def parse_df(path: str, text: str) -> DiskUsage:
    """``df -P -k`` then ``df -P -i`` of one path: a header and one row each."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 4 or not (lines[0].startswith("Filesystem")
                               and lines[2].startswith("Filesystem")):
        raise ValueError(f"unexpected df output ({len(lines)} lines, expected 2 headers "
                         "and 2 rows)")
    rows = [_DF_ROW.match(lines[1]), _DF_ROW.match(lines[3])]
    blocks, inodes = rows
    if blocks is None or inodes is None:
        raise ValueError(f"unexpected df row {lines[1 if blocks is None else 3]!r}")
    return DiskUsage(path, blocks["fs"], blocks["mount"], int(blocks["total"]),
                     int(blocks["used"]), int(blocks["free"]), int(inodes["total"]),
                     int(inodes["used"]), int(inodes["free"]))


def parse_meminfo(text: str) -> MemoryUsage:
    """MemTotal and MemAvailable (Linux 3.14 and later), in kB as the kernel writes them."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+(?:\(\w+\))?):\s+(\d+)(?: kB)?\s*", line)
        if match:
            fields[match[1]] = int(match[2])
    for key in ("MemTotal", "MemAvailable"):
        if key not in fields:
            raise ValueError(f"no {key} line" + (" (a kernel older than 3.14)"
                                                 if key == "MemAvailable" else ""))
    if fields["MemTotal"] <= 0 or fields["MemAvailable"] > fields["MemTotal"]:
        raise ValueError(f"MemTotal {fields['MemTotal']} kB, MemAvailable "
                         f"{fields['MemAvailable']} kB make no sense")
    return MemoryUsage(fields["MemTotal"], fields["MemAvailable"])


def size_text(kib: int) -> str:
    """``df -h``'s way of writing a size: ``1.5 GiB``."""
    value = float(kib)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "KiB" else f"{kib} KiB"
        value /= 1024
    raise AssertionError("unreachable")
