"""Host capacity: what ``df -P``, ``/proc/meminfo``, ``/proc/loadavg`` and ``du -s`` say,
parsed strictly (what cannot be read is an ERROR, never a guess), and sizes written as
``df -h`` writes them.

Split from :mod:`opsverify.targets.host`, whose client runs the commands (the load and
``du`` reads are functions here that take the client).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from opsverify.errors import MissingPrivilege
from opsverify.targets.base import Section
from opsverify.targets.ssh import last_line

if TYPE_CHECKING:
    from opsverify.targets.host import CommandOutcome, HostClient


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


# -- load per core: /proc/loadavg over the online CPUs --------------------------------------
@dataclass(frozen=True)
class LoadAverage:
    """``/proc/loadavg``'s 1-, 5- and 15-minute averages and the host's online CPUs."""

    one: float
    five: float
    fifteen: float
    cpus: int

    def per_core(self, load: float) -> float:
        return round(load / self.cpus, 2)


# The host's online CPUs, not nproc's: the load average counts runnable tasks on every CPU
# of the kernel (a container's included), whatever this process's affinity or quota.
LOAD_COMMAND = ("cat /proc/loadavg && { getconf _NPROCESSORS_ONLN 2>/dev/null || "
                "grep -c '^processor' /proc/cpuinfo; }")
_LOADAVG = re.compile(r"(\d+\.\d+) (\d+\.\d+) (\d+\.\d+) \d+/\d+ \d+")


def parse_loadavg(text: str) -> LoadAverage:
    """``/proc/loadavg`` then the number of online CPUs, one line each."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 2:
        raise ValueError(f"unexpected output ({len(lines)} lines, expected /proc/loadavg "
                         "and a CPU count)")
    load = _LOADAVG.fullmatch(lines[0])
    if load is None:
        raise ValueError(f"unexpected /proc/loadavg line {lines[0]!r}")
    if not lines[1].isdigit() or int(lines[1]) < 1:
        raise ValueError(f"unexpected CPU count {lines[1]!r}")
    return LoadAverage(float(load[1]), float(load[2]), float(load[3]), int(lines[1]))


def read_load(client: HostClient) -> LoadAverage:
    """The host's load averages and online CPUs, in one round trip."""
    result = client.run(LOAD_COMMAND)
    if result.exit_status != 0:
        raise client.unavailable(f"cannot read /proc/loadavg: {_why(result)}")
    try:
        return parse_loadavg(result.stdout)
    except ValueError as exc:
        raise client.unavailable(f"cannot read /proc/loadavg: {exc}") from None


# -- sizes of declared paths: the runbooks' ``du -sh logs/*.log`` ---------------------------
class DeclaredPath(Section):
    """A path (a shell glob, expanded on the host) whose total size is checked; ``name``
    labels it in reports. ``max_bytes`` is its crit limit and the capacity its history
    keeps, ``warn_bytes`` its warn limit; a target's ``thresholds: host.path_bytes`` wins."""

    path: str
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9@._:/-]+$")
    max_bytes: int | None = Field(default=None, gt=0)
    warn_bytes: int | None = Field(default=None, gt=0)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected an absolute path or glob (/var/log/app/*.log): a "
                             "relative one would depend on the login's directory")
        if "\n" in value or "\0" in value:
            raise ValueError("a path holds no newline")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> DeclaredPath:
        if self.warn_bytes is not None and self.max_bytes is not None and (
                self.warn_bytes > self.max_bytes):
            raise ValueError(f"warn_bytes {self.warn_bytes} is above max_bytes {self.max_bytes}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.path


def unique_labels(paths: list[DeclaredPath]) -> list[DeclaredPath]:
    """For the target's validator: each declared path is one report item."""
    labels = [p.label for p in paths]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f"{', '.join(twice)}: declared twice (give each path its own name)")
    return paths


@dataclass(frozen=True)
class PathSize:
    """What ``du -s`` says of each file a declared glob matched (none: nothing matched)."""

    pattern: str
    entries: tuple[tuple[str, int], ...]  # (path, bytes), largest first
    apparent: bool = True  # du -b (apparent size); False: busybox's du -k (allocated)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.entries)


# The glob is expanded by the host's shell, and only expanded: it reaches the shell quoted,
# as the value of a variable used unquoted with IFS empty (pathname expansion, no field
# splitting, no command substitution). A glob matching nothing stays itself: exit 99.
# busybox's du has no -b: there, allocated KiB.
_DU = ("IFS=; LC_ALL=C; export LC_ALL; p={pattern}; set -- $p; "
       "if [ \"$#\" -eq 1 ] && [ ! -e \"$1\" ] && [ ! -L \"$1\" ]; then exit 99; fi; "
       "if du -s -b /dev/null >/dev/null 2>&1; then echo bytes; exec du -s -b -- \"$@\"; "
       "else echo kib; exec du -s -k -- \"$@\"; fi")
_DU_ROW = re.compile(r"(\d+)\t(.+)")


def parse_du(pattern: str, text: str) -> PathSize:
    """The unit line our command prints, then du's ``size<TAB>path`` rows."""
    lines = [line for line in text.splitlines() if line]
    if not lines or lines[0] not in ("bytes", "kib"):
        raise ValueError(f"unexpected du output (first line {lines[0] if lines else ''!r})")
    apparent = lines[0] == "bytes"
    entries = []
    for line in lines[1:]:
        row = _DU_ROW.fullmatch(line)
        if row is None:
            raise ValueError(f"unexpected du line {line!r}")
        entries.append((row[2], int(row[1]) * (1 if apparent else 1024)))
    if not entries:
        raise ValueError("du printed no size")
    entries.sort(key=lambda entry: (-entry[1], entry[0]))
    return PathSize(pattern, tuple(entries), apparent)


def path_size(client: HostClient, pattern: str) -> PathSize:
    """``du -s -b`` of every file ``pattern`` matches on the host, in one round trip; a
    pattern matching nothing is a :class:`PathSize` without entries."""
    result = client.run(_DU.format(pattern=shlex.quote(pattern)))
    if result.exit_status == 99 and not result.stdout:
        return PathSize(pattern, ())
    denied = re.search(r"du: cannot (?:read directory|access) [‘'`]?(.+?)[’']?: Permission denied",
                       result.stderr)
    if denied:
        raise MissingPrivilege(client.name, f"the size of {pattern}",
                               f"read and search permission on {denied[1]} for the account "
                               "the checks log in as")
    if result.exit_status != 0:
        raise client.unavailable(f"cannot read du {pattern}: {_why(result)}")
    try:
        return parse_du(pattern, result.stdout)
    except ValueError as exc:
        raise client.unavailable(f"cannot read du {pattern}: {exc}") from None


def _why(result: CommandOutcome) -> str:
    return last_line(result.stderr) or f"exit status {result.exit_status}"


def bytes_text(size: int) -> str:
    """A size in bytes as ``du -h`` writes it: ``812 B``, ``2.9 KiB``, ``1.5 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
