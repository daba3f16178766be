"""A seeded run history for the sandbox: its servers are new every run, so without one every
trend check would say "insufficient history". The readings are synthetic and say so: flat
for ``days`` at the value read when the sandbox starts. With ``disk-filling`` the sandbox's
logs are real and large (70 % of their declared limit, a file written for it) and their
history says they grew to that over a week at the rate that fills the limit in five days.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

from opsverify.history import Sample
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import FAULTS_OF
from opsverify.sandbox.spec import HistoryComponent, SeriesSeed

FILL_DAYS = 5.0  # disk-filling: full this many days from now, under the 7-day crit
FILL_SHARE = 0.7  # ...from this share of the limit, written as a real file
FILL_HISTORY_DAYS = 7  # a week of growth: 28 % of the limit then, 70 % now


class HistorySeeder:
    name: ClassVar[str] = "history"
    install_hint: ClassVar[str] = "nothing: a file"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["history"]

    def __init__(self, spec: HistoryComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.workdir = ctx.workdir
        self.path = ctx.workdir / "history.jsonl"
        self.filling = "disk-filling" in ctx.faults
        self.port = 0  # a file: nothing listens

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_HISTORY": str(self.path)}

    def prepare(self) -> None:
        now = datetime.now(UTC)
        lines = []
        for seed in self.spec.series:
            if self.filling and seed.fills:
                lines += [s.to_json() for s in self._fill(seed, now)]
            else:
                lines += [s.to_json() for s in seed_samples(seed, now, self.spec.days,
                                                            self.workdir)]
        self.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        # Its own log, as every sandbox server keeps one: what was seeded, for a reader
        # wondering where a trend's readings came from.
        (self.workdir / "history-seed.log").write_text(
            f"{now:%Y-%m-%dT%H:%M:%SZ} seeded {len(lines)} synthetic readings of "
            f"{len(self.spec.series)} metrics into {self.path.name}"
            f"{' (disk-filling)' if self.filling else ''}\n", encoding="utf-8")

    def _fill(self, seed: SeriesSeed, now: datetime) -> list[Sample]:
        """Write the file that makes the logs 70 % of their limit; a week of history that
        grew to it at the rate that reaches the limit in five days."""
        target = FILL_SHARE * seed.capacity
        filler = self.workdir / "filling.log"
        with filler.open("wb") as f:
            chunk = b"opsverify sandbox disk-filling: a log nobody rotates\n" * 1024
            remaining = int(target - current(seed, self.workdir))
            while remaining > 0:
                f.write(chunk[:remaining])
                remaining -= len(chunk)
        per_day = (seed.capacity - target) / FILL_DAYS
        return [Sample(now - timedelta(days=ago), seed.target, seed.metric, seed.item,
                       round(target - per_day * ago), seed.unit, seed.capacity)
                for ago in range(FILL_HISTORY_DAYS, 0, -1)]

    def launch(self) -> None:
        pass

    def ready(self) -> None:
        pass

    def inject(self, faults: frozenset[str]) -> None:
        pass  # written that way in prepare()

    def stop(self) -> None:
        pass


def seed_samples(seed: SeriesSeed, now: datetime, days: int, workdir: Path) -> list[Sample]:
    """One reading a day for ``days`` days, flat, the last a day before ``now``."""
    value = round(current(seed, workdir), 3)
    return [Sample(now - timedelta(days=ago), seed.target, seed.metric, seed.item, value,
                   seed.unit, seed.capacity) for ago in range(days, 0, -1)]


def current(seed: SeriesSeed, workdir: Path) -> float:
    """The value the flat history sits at: given, or read from this machine now."""
    if seed.read == "disk":
        st = os.statvfs(seed.path)
        used = st.f_blocks - st.f_bfree
        usable = used + st.f_bavail
        return round(100.0 * used / usable, 1) if usable else 0.0
    if seed.read == "inodes":
        st = os.statvfs(seed.path)
        return round(100.0 * (st.f_files - st.f_ffree) / st.f_files, 1) if st.f_files else 0.0
    if seed.read == "memory":
        fields = {}
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields[key] = int(rest.split()[0])
        total = fields["MemTotal"]
        return round(100.0 * (total - fields["MemAvailable"]) / total, 1)
    if seed.read == "files":
        return float(sum(p.stat().st_size for p in workdir.glob(seed.path) if p.is_file()))
    assert seed.value is not None
    return seed.value
