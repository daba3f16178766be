"""What changed since the last run of the same environment: each check is ``new`` (failing
now, not then), ``still`` (failing both times, with the run its streak began), ``fixed``
(failing then, not now) or ``same``. A failure is FAIL or ERROR; a WARN is not one."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from opsverify.report.summary import CheckResult

FAILING = ("FAIL", "ERROR")


@dataclass(frozen=True)
class PreviousRun:
    run_id: str
    started: str
    directory: str
    # nodeid -> (outcome, failing_since)
    checks: dict[str, tuple[str, str | None]]

    def to_dict(self) -> dict[str, str]:
        return {"run_id": self.run_id, "started": self.started, "directory": self.directory}


def previous_run(env_dir: Path, current: Path) -> PreviousRun | None:
    """The newest earlier run directory of ``env_dir`` with a readable summary.json."""
    if not env_dir.is_dir():
        return None
    runs = sorted((p for p in env_dir.iterdir()
                   if p.is_dir() and not p.is_symlink() and p.name != current.name
                   and p.name < current.name), reverse=True)
    for run in runs:
        try:
            data: dict[str, Any] = json.loads((run / "summary.json").read_text(encoding="utf-8"))
            checks = {str(c["nodeid"]): (str(c["outcome"]), c.get("failing_since"))
                      for c in data.get("checks", [])}
            return PreviousRun(str(data.get("run_id", "")), str(data.get("started", "")),
                               run.name, checks)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an interrupted or foreign directory: look further back
    return None


def compare(checks: list[CheckResult], previous: PreviousRun | None,
            started: str) -> list[CheckResult]:
    """``checks`` with ``since_last`` and ``failing_since`` set against ``previous``."""
    out = []
    for check in checks:
        failing = check.outcome in FAILING
        before = previous.checks.get(check.nodeid) if previous else None
        was_failing = before is not None and before[0] in FAILING
        if failing and was_failing:
            assert before is not None
            assert previous is not None
            since = before[1] or previous.started
            out.append(replace(check, since_last="still", failing_since=since))
        elif failing:
            out.append(replace(check, since_last="new", failing_since=started))
        elif was_failing:
            out.append(replace(check, since_last="fixed", failing_since=None))
        else:
            out.append(replace(check, since_last="same", failing_since=None))
    return out


def lines(checks: list[CheckResult], previous: PreviousRun | None) -> list[str]:
    """New failures first, then still failing (since when), then fixed."""
    if previous is None:
        return []
    out = [f"NEW    {c.nodeid} ({c.outcome})" for c in checks if c.since_last == "new"]
    out += [f"STILL  {c.nodeid} ({c.outcome}, failing since {c.failing_since})"
            for c in checks if c.since_last == "still"]
    out += [f"FIXED  {c.nodeid}" for c in checks if c.since_last == "fixed"]
    return out


def headline(checks: list[CheckResult], previous: PreviousRun | None) -> str:
    """``since the last run (2026-12-01T09:00:02+00:00): 3 new failures, 2 still failing,
    1 fixed``; or that there is no earlier run to compare with."""
    if previous is None:
        return "no earlier run of this environment to compare with"
    count = {kind: sum(1 for c in checks if c.since_last == kind)
             for kind in ("new", "still", "fixed")}
    return (f"since the last run ({previous.started}): {count['new']} new "
            f"failure{'s' if count['new'] != 1 else ''}, {count['still']} still failing, "
            f"{count['fixed']} fixed")
