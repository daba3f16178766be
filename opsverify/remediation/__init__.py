"""Remediation: the contract every fix shares — planned, bounded, applied, audited.

An action (one module per target type beside this one: ``postgres.py``, ``docker.py``…)
implements :class:`Action`: ``select`` lists the concrete items it would change with their
state before (plan and apply share it), ``drift`` re-reads one item just before acting and
says why it no longer matches its plan, ``apply`` changes it and says its state after.
This module turns that into a :class:`Plan` (with a plan id), refuses a plan over the limit
whole, applies only the planned items, stops at the first failure, and writes one audit
line per item. The glue (``fixtures/safety.py``) adds the opt-ins and the re-check.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

from opsverify.errors import BlastRadiusExceeded
from opsverify.secrets import SECRETS

# The CI systems' own "who started this" variables: the audit names the actor, not the
# runner's account (rundeck/rundeck#2885 named the wrong one).
CI_ACTOR_VARS = ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILDKITE_BUILD_CREATOR",
                 "CIRCLE_USERNAME", "BUILD_USER_ID", "BITBUCKET_STEP_TRIGGERER_UUID",
                 "DRONE_COMMIT_AUTHOR", "TRAVIS_COMMIT_AUTHOR")


@dataclass(frozen=True)
class Item:
    """One thing an action changes: what it is (unambiguous: ``pid 4242 started
    2026-12-01T08:00:01Z``), its state when planned, and what ``apply`` needs to find it."""

    identity: str
    before: str
    ref: Any = field(default=None, compare=False)

    def describe(self) -> str:
        return f"{self.identity} ({self.before})"


class Action(Protocol):
    """One remediation against one target; its ``name`` is its ``remediation:`` key."""

    name: ClassVar[str]
    target: str

    def select(self) -> list[Item]:
        """What would change now, with its before-state. Plan and apply both call this."""
        ...

    def drift(self, item: Item) -> str | None:
        """``None`` if ``item`` is still as planned; else why it is not (it ended, it
        changed): the item is skipped with that reason."""
        ...

    def apply(self, item: Item) -> str:
        """Change ``item``; return its state after. Raise to report a failure."""
        ...


@dataclass(frozen=True)
class Plan:
    target: str
    action: str
    items: tuple[Item, ...]
    # How many things the action chose from (all sessions, all containers), for a
    # percentage limit; None when the action has no such population.
    population: int | None = None

    @property
    def plan_id(self) -> str:
        """A hash of what the plan lists: the same selection has the same id."""
        listed = [self.target, self.action, [(i.identity, i.before) for i in self.items]]
        return hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:12]

    def lines(self) -> list[str]:
        return [f"{self.target}: {self.action} {item.describe()}" for item in self.items]


@dataclass
class Outcome:
    """What apply did, item by item."""

    plan: Plan
    applied: list[tuple[Item, str]] = field(default_factory=list)
    skipped: list[tuple[Item, str]] = field(default_factory=list)
    failed: tuple[Item, str] | None = None
    not_attempted: list[Item] = field(default_factory=list)

    def report(self) -> str:
        """``applied 2 of 3; failed: …; not attempted: …`` for a failure message."""
        parts = [f"applied {len(self.applied)} of {len(self.plan.items)} "
                 f"(plan {self.plan.plan_id})"]
        parts += [f"applied: {i.identity} -> {after}" for i, after in self.applied]
        parts += [f"skipped: {i.identity}: {why}" for i, why in self.skipped]
        if self.failed:
            parts.append(f"failed: {self.failed[0].identity}: {self.failed[1]}")
        parts += [f"not attempted: {i.identity}" for i in self.not_attempted]
        return "; ".join(parts)


@dataclass
class Remediation:
    """The engine of one destructive check: plan, bound, apply, audit."""

    env: str
    operator: str
    check: str
    run_id: str
    audit_path: Path
    max_actions: int
    plan_only: bool
    max_percent: float = 100.0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    plans: list[Plan] = field(default_factory=list)
    audited: list[dict[str, str]] = field(default_factory=list)

    def plan(self, action: Action, population: int | None = None) -> Plan:
        """Select, and refuse the whole plan when it is over a limit (nothing touched)."""
        plan = Plan(action.target, action.name, tuple(action.select()), population)
        self.plans.append(plan)
        over = self._over_limit(plan)
        if over:
            listed = "; ".join(i.describe() for i in plan.items[:10])
            raise BlastRadiusExceeded(f"refused whole, nothing changed: plan {plan.plan_id} "
                                      f"lists {len(plan.items)} items, {over}: {listed}")
        return plan

    def apply(self, action: Action, plan: Plan) -> Outcome:
        """Act on exactly the planned items: each re-validated first (skipped with its
        reason if it drifted), stopping at the first failure."""
        outcome = Outcome(plan)
        for index, item in enumerate(plan.items):
            why = action.drift(item)
            if why is not None:
                outcome.skipped.append((item, why))
                self._audit(plan, item, after="", result=f"skipped: {why}")
                continue
            try:
                after = action.apply(item)
            except Exception as exc:  # noqa: BLE001 - any failure stops the action, reported
                cause = SECRETS.scrub(str(exc).splitlines()[0] if str(exc) else
                                      type(exc).__name__)
                outcome.failed = (item, cause)
                self._audit(plan, item, after="", result=f"failed: {cause}")
                outcome.not_attempted = list(plan.items[index + 1:])
                for rest in outcome.not_attempted:
                    self._audit(plan, rest, after="",
                                result="not attempted: stopped after a failure")
                break
            outcome.applied.append((item, after))
            self._audit(plan, item, after=after, result="applied")
        return outcome

    def ci_actor(self) -> str:
        for var in CI_ACTOR_VARS:
            if self.environ.get(var):
                return f"{self.environ[var]} ({var})"
        return ""

    def _over_limit(self, plan: Plan) -> str:
        count = len(plan.items)
        if count > self.max_actions:
            return f"over --max-actions={self.max_actions}"
        if plan.population and 100.0 * count / plan.population > self.max_percent:
            return (f"{100.0 * count / plan.population:.0f} % of {plan.population}, over "
                    f"--max-percent={self.max_percent:g}")
        return ""

    def _audit(self, plan: Plan, item: Item, *, after: str, result: str) -> None:
        """One JSON line, appended with O_APPEND (concurrent runs interleave whole lines)."""
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "operator": self.operator, "ci_actor": self.ci_actor(), "env": self.env,
            "target": plan.target, "action": plan.action, "plan_id": plan.plan_id,
            "identity": item.identity, "before": item.before, "after": after,
            "result": result, "check": self.check, "run_id": self.run_id,
        }
        entry = {k: SECRETS.scrub(v) for k, v in entry.items()}
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        self.audited.append(entry)


def read_audit(path: Path, run_id: str) -> list[dict[str, str]]:
    """The audit entries one run appended."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("run_id") == run_id:
            entries.append(entry)
    return entries
