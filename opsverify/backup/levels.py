"""Which level each backup reached in a run, from the evidence of its checks.

Every backup check records the level it proves as a note, ``backup.level = 'L2'``. A level
is PASS when its checks that ran passed (WARN counts), FAIL when one failed or could not be
evaluated, "n/a" when its checks were skipped as not applicable (no checksum declared), and
"not run" when no check of it ran (deselected by cadence, or none declared). The highest
level proven is the last PASS before the first level that failed or did not run, "n/a"
levels aside: a backup whose checksum matches but whose archive is cut short has proven L2,
whatever L4 says; a run without the daily checks has not proven L1, so proves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

LEVEL_NOTE = "backup.level"
LEVELS = ("L1", "L2", "L3", "L4")
MEANING = {"L1": "present", "L2": "checksum", "L3": "structure", "L4": "restored"}
# Measurements worth a line in the per-backup summary, in this order.
HEADLINE = ("newest backup", "age", "size", "sha256", "archive", "tables restored",
            "rows restored", "drill duration")
PROVEN = frozenset({"PASS", "WARN"})
BROKEN = frozenset({"FAIL", "ERROR", "WAIVED"})


class CheckLike(Protocol):
    """The parts of a summary check result this reads."""

    @property
    def outcome(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def evidence(self) -> list[dict[str, Any]]: ...


@dataclass
class BackupLevels:
    target: str
    levels: dict[str, str] = field(default_factory=lambda: dict.fromkeys(LEVELS, "not run"))
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def proven(self) -> str:
        """``L3``, or ``none``."""
        best = "none"
        for level in LEVELS:
            status = self.levels[level]
            if status in ("FAIL", "not run"):
                break
            if status == "PASS":
                best = level
        return best

    def to_dict(self) -> dict[str, Any]:
        return {"level_proven": self.proven, "levels": dict(self.levels),
                "evidence": dict(self.facts)}

    def line(self) -> str:
        states = ", ".join(f"{lvl} {state}" for lvl, state in self.levels.items())
        return f"{self.target}: {self.proven} proven ({states})"


def summarize(checks: Iterable[CheckLike]) -> dict[str, BackupLevels]:
    """Per backup target (in first-seen order): each level's status and the headline facts."""
    found: dict[str, BackupLevels] = {}
    for check in checks:
        level = next((str(m.get("value")) for m in check.evidence
                      if m.get("name") == LEVEL_NOTE), None)
        if level not in LEVELS or not check.target:
            continue
        entry = found.setdefault(check.target, BackupLevels(check.target))
        current = entry.levels[level]
        if check.outcome in BROKEN:
            entry.levels[level] = "FAIL"
        elif check.outcome in PROVEN and current != "FAIL":
            entry.levels[level] = "PASS"
        elif check.outcome == "SKIP" and current == "not run":
            entry.levels[level] = "n/a"
        for m in check.evidence:
            name = str(m.get("name"))
            if name in HEADLINE and name not in entry.facts:
                unit = f" {m['unit']}" if m.get("unit") else ""
                entry.facts[name] = f"{_shown(m.get('value'))}{unit}"
    for entry in found.values():
        entry.facts = {k: entry.facts[k] for k in HEADLINE if k in entry.facts}
    return found


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
