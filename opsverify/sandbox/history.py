"""A seeded run history for the sandbox: its servers are new every run, so without one every
trend check would say "insufficient history". The readings are synthetic and say so: flat
for ``days`` at the value read when the sandbox starts, or, with ``disk-filling``, a file
system growing at the rate that fills it in five days, ending at what ``df`` says now.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import ClassVar

from opsverify.history import Sample
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.spec import HistoryComponent, SeriesSeed

FILL_DAYS = 5.0  # disk-filling: full this many days from now, under the 7-day crit


class HistorySeeder:
    name: ClassVar[str] = "history"
    install_hint: ClassVar[str] = "nothing: a file"
    faults: ClassVar[dict[str, str]] = {
        "disk-filling": "the history of the local disk grows to full in 5 days (days-until-"
                        "full trend: crit under 7)",
    }

    def __init__(self, spec: HistoryComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.path = ctx.workdir / "history.jsonl"
        self.filling = "disk-filling" in ctx.faults
        self.port = 0  # a file: nothing listens

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_HISTORY": str(self.path)}

    def prepare(self) -> None:
        now = datetime.now(UTC)
        lines = [s.to_json() for seed in self.spec.series
                 for s in seed_samples(seed, now, self.spec.days,
                                       filling=self.filling and seed.read == "disk")]
        self.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def launch(self) -> None:
        pass

    def ready(self) -> None:
        pass

    def inject(self, faults: frozenset[str]) -> None:
        pass  # written that way in prepare()

    def stop(self) -> None:
        pass


def seed_samples(seed: SeriesSeed, now: datetime, days: int, *,
                 filling: bool = False) -> list[Sample]:
    """One reading a day for ``days`` days, the last a day before ``now``."""
    value = current(seed)
    capacity = seed.capacity
    per_day = (capacity - value) / FILL_DAYS if filling else 0.0
    out = []
    for ago in range(days, 0, -1):
        reading = max(0.0, value - per_day * ago)
        out.append(Sample(now - timedelta(days=ago), seed.target, seed.metric, seed.item,
                          round(reading, 3), seed.unit, capacity))
    return out


def current(seed: SeriesSeed) -> float:
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
    assert seed.value is not None
    return seed.value
