"""A run read as an incident: the verdict in one line, one entry per root cause with the
checks it explains, the worst outcome per target and category, and the checks that had
nothing to run against. Pure: built from a :class:`RunSummary`, no pytest here."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from opsverify.report.summary import INTERRUPTED, CheckResult, RunSummary

CATEGORIES = ("health", "backup", "security", "capacity", "remediation")
FAILING = ("FAIL", "ERROR")
# Worst first, for a cell of the grid: a cell is SKIP only when nothing in it ran.
WORST = ("FAIL", "ERROR", "WARN", "WAIVED", "PLAN", "PASS", "SKIP")
# fixtures/targets.py no_target(): the id of a check with no target of its type.
_NO_TARGET = re.compile(r"\[no-([\w-]+)-target\]$")


def not_applicable_type(nodeid: str) -> str | None:
    """``test_ping[no-redis-target]`` -> ``redis``; None for a check that had a target."""
    match = _NO_TARGET.search(nodeid)
    return match.group(1) if match else None


def not_applicable(checks: Iterable[CheckResult]) -> list[CheckResult]:
    """The SKIPs of checks with no target of their type in the environment."""
    return [c for c in checks if c.outcome == "SKIP" and not_applicable_type(c.nodeid)]


def not_applicable_line(types: Iterable[str]) -> str:
    """``not applicable here: 3 checks (no clickhouse, sqlite target)``: one entry of
    ``types`` per check."""
    found = list(types)
    if not found:
        return ""
    names = ", ".join(sorted(set(found)))
    return (f"not applicable here: {len(found)} check{'s' if len(found) != 1 else ''} "
            f"(no {names} target)")


def is_down(check: CheckResult) -> bool:
    """An ERROR that is its target's one line ``db (postgres 127.0.0.1:5432): connection
    refused`` (``TargetUnavailable``): the check was not evaluated, the target is down."""
    return (check.outcome == "ERROR" and bool(check.target) and "\n" not in check.message
            and check.message.startswith(f"{check.target} ("))


@dataclass(frozen=True)
class RootCause:
    """One reason the run failed and the checks it explains."""

    kind: str  # "down": a target that could not be reached; "fail", "error": anything else
    outcome: str
    target: str
    line: str
    checks: tuple[CheckResult, ...]

    @property
    def since(self) -> str:
        """``new``, ``still failing since 2026-12-01 09:00`` (the earliest streak start), or
        ``""`` when mixed or unknown."""
        kinds = {c.since_last for c in self.checks}
        if kinds == {"new"}:
            return "new"
        if kinds == {"still"}:
            return "still failing since " + _when(min(c.failing_since or ""
                                                      for c in self.checks))
        return ""


def root_causes(checks: Iterable[CheckResult]) -> list[RootCause]:
    """Every ERROR of an unreachable target is one entry for that target; other failures
    are one entry per distinct message (the same failure on several checks is one cause).
    Targets down first (most checks first), then failures, then other errors."""
    groups: dict[tuple[str, str, str], list[CheckResult]] = {}
    for check in sorted(checks, key=lambda c: c.nodeid):
        if check.outcome not in FAILING:
            continue
        if is_down(check):
            key = ("down", check.target, check.message)
        else:
            key = (check.outcome.lower(), "", check.message or check.nodeid)
        groups.setdefault(key, []).append(check)
    causes = [RootCause(kind, found[0].outcome, target or found[0].target,
                        found[0].message if kind == "down" else headline(found[0].message),
                        tuple(found))
              for (kind, target, _), found in groups.items()]
    rank = {"down": 0, "fail": 1, "error": 2}
    return sorted(causes, key=lambda c: (rank[c.kind], -len(c.checks), c.target, c.line))


def headline(message: str) -> str:
    """The line of a failure message that says what went wrong: the first, or the
    exception line (``E   ...``) of a traceback."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    raised = [line[1:].strip() for line in lines if line.startswith("E ")]
    if len(lines) > 1 and raised:
        return raised[-1]
    return lines[0] if lines else ""


def category(nodeid: str, categories: Mapping[str, str]) -> str:
    """What the check's markers say (``categories``), else its folder ``checks/<category>/``;
    ``other`` when neither says."""
    if categories.get(nodeid) in CATEGORIES:
        return categories[nodeid]
    parts = nodeid.split("::", 1)[0].split("/")
    for index, part in enumerate(parts[:-1]):
        if part == "checks" and parts[index + 1] in CATEGORIES:
            return parts[index + 1]
    return "other"


@dataclass(frozen=True)
class Cell:
    outcome: str
    counts: dict[str, int]

    def title(self) -> str:
        return ", ".join(f"{n} {o}" for o, n in self.counts.items())


@dataclass(frozen=True)
class Grid:
    targets: list[str]
    categories: list[str]
    cells: dict[tuple[str, str], Cell]


def grid(checks: Iterable[CheckResult], categories: Mapping[str, str]) -> Grid:
    """Targets by categories, each cell the worst outcome of its checks; the checks with no
    target of their type are not rows."""
    found: dict[tuple[str, str], Counter[str]] = {}
    for check in checks:
        if not_applicable_type(check.nodeid) and check.outcome == "SKIP":
            continue
        key = (check.target or "(no target)", category(check.nodeid, categories))
        found.setdefault(key, Counter())[check.outcome] += 1
    cells = {key: Cell(next(o for o in WORST if counts[o]),
                       {o: counts[o] for o in WORST if counts[o]})
             for key, counts in found.items()}
    columns = list(CATEGORIES) + (["other"] if any(c == "other" for _, c in cells) else [])
    return Grid(sorted({t for t, _ in cells}), columns, cells)


@dataclass(frozen=True)
class Verdict:
    text: str
    outcome: str  # the colour: FAIL, WARN or PASS
    down: list[str]
    new: int


def verdict(run: RunSummary, causes: list[RootCause]) -> Verdict:
    """``3 targets down (db, db-cluster, db-replica), 1 other failure, 33 new failures since
    2026-12-01 09:00``; ``no failures or warnings: 19 checks passed`` when nothing is off."""
    down = sorted({c.target for c in causes if c.kind == "down"})
    others = sum(len(c.checks) for c in causes if c.kind != "down")
    warnings = sum(1 for c in run.checks if c.outcome == "WARN")
    parts = []
    if down:
        parts.append(f"{_n(len(down), 'target')} down ({', '.join(down)})")
    if others:
        parts.append(_n(others, "other failure" if down else "failing check"))
    if warnings:
        parts.append(_n(warnings, "warning"))
    new = sum(1 for c in run.checks if c.since_last == "new")
    fixed = sum(1 for c in run.checks if c.since_last == "fixed")
    still = [c.failing_since or "" for c in run.checks if c.since_last == "still"]
    if run.previous_run is not None:
        since = _when(run.previous_run.get("started", ""))
        if new:
            parts.append(f"{_n(new, 'new failure')} since {since}")
        if still:
            parts.append(f"{len(still)} still failing (since {_when(min(still))})")
        if fixed:
            parts.append(f"{fixed} fixed since {since}")
    if not (down or others or warnings):
        counts = run.counts
        quiet = [_n(counts["PASS"], "check") + " passed"] if counts["PASS"] else []
        quiet += [f"{counts[o]} {word}" for o, word in (("WAIVED", "waived"),
                                                         ("PLAN", "planned")) if counts[o]]
        parts.insert(0, "no failures or warnings: " + ", ".join(quiet) if quiet
                     else "no check ran")
    text = ", ".join(parts)
    if run.exitstatus == INTERRUPTED:
        text = f"interrupted — {text} (among the checks that ran)"
    outcome = "FAIL" if (down or others) else "WARN" if warnings else "PASS"
    return Verdict(text[:1].upper() + text[1:], outcome, down, new)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def _when(iso: str) -> str:
    """``2026-12-01T09:00:02+00:00`` -> ``2026-12-01 09:00``."""
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso
