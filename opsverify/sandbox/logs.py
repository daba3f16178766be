"""The application's daily logs in the sandbox's ``logs/`` directory, as gogooku3 keeps them
(``logs/<name>-YYYYmmdd.log``, one a day), for ``du -sh logs/*.log`` to measure and the
runbook's ``find logs/ -mtime +7 -delete`` to clean.

Normally three days of them, small, and a ``nightly/`` subdirectory with the batch job's.
With ``logs-piling`` nobody has cleaned up for weeks: four old daily logs of 17 MiB each
(sparse files: their size is what ``du -b`` reads, without writing 68 MiB to this disk)
push ``logs/*.log`` over the 64 MiB its ``paths:`` entry allows, and an old batch log sits
in ``nightly/`` (``find`` recurses; so does the cleanup). Their modification times are
those weeks, so that a cleanup by age selects the five of them and nothing else.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import FAULTS_OF, PILED, PILED_FROM_DAYS
from opsverify.sandbox.spec import LogsComponent

RECENT_DAYS = 3  # daily logs kept normally, younger than any cleanup's age
PILED_BYTES = 17 * 1024 * 1024  # each: four of them are 68 MiB, over the 64 MiB limit


class AppLogs:
    name: ClassVar[str] = "logs"
    install_hint: ClassVar[str] = "nothing: files"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["logs"]

    def __init__(self, spec: LogsComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.dir = ctx.workdir / "logs"
        self.port = 0  # files only: nothing listens
        self.now = datetime.now(UTC)

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_LOG_DIR": str(self.dir)}

    def prepare(self) -> None:
        self.now = datetime.now(UTC)
        (self.dir / "nightly").mkdir(parents=True)
        for day in range(RECENT_DAYS):
            when = self.now - timedelta(days=day, hours=1)
            _log(self.dir / f"{self.spec.name}-{when:%Y%m%d}.log", when,
                 f"{when:%Y-%m-%d %H:%M:%S} INFO forecast run finished\n" * 200)
            _log(self.dir / "nightly" / f"batch-{when:%Y%m%d}.log", when,
                 f"{when:%Y-%m-%d} 02:00:00 INFO nightly batch done\n" * 50)

    def launch(self) -> None:
        pass

    def ready(self) -> None:
        pass

    def inject(self, faults: frozenset[str]) -> None:
        if "logs-piling" not in faults:
            return
        for day in range(PILED_FROM_DAYS, PILED_FROM_DAYS + PILED):
            when = self.now - timedelta(days=day, hours=1)
            path = self.dir / f"{self.spec.name}-{when:%Y%m%d}.log"
            _log(path, when, f"{when:%Y-%m-%d %H:%M:%S} INFO forecast run started\n",
                 size=PILED_BYTES)
        when = self.now - timedelta(days=PILED_FROM_DAYS + PILED, hours=1)
        _log(self.dir / "nightly" / f"batch-{when:%Y%m%d}.log", when,
             f"{when:%Y-%m-%d} 02:00:00 INFO nightly batch done\n" * 50)

    def stop(self) -> None:
        pass  # files live in the work directory, which the sandbox removes


def _log(path: Path, when: datetime, text: str, size: int | None = None) -> None:
    with path.open("wb") as out:
        out.write(text.encode())
        if size is not None:
            out.truncate(size)
    stamp = when.timestamp()
    os.utime(path, (stamp, stamp))
