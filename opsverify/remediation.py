"""Remediation: plan, bound, apply and audit changes to a system.

A remediation proposes its actions; past ``max_actions`` it stops before changing anything;
in plan mode it changes nothing; every applied action is appended to the audit log.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from opsverify.errors import BlastRadiusExceeded
from opsverify.secrets import SECRETS


@dataclass(frozen=True)
class Action:
    """One change to one thing: ``terminate pid 4242 on db`` with its state before."""

    target: str
    action: str
    subject: str
    before: str

    def describe(self) -> str:
        return f"{self.target}: {self.action} {self.subject} ({self.before})"


@dataclass(frozen=True)
class AuditEntry:
    when: str
    who: str
    env: str
    target: str
    action: str
    subject: str
    before: str
    after: str
    check: str
    run_id: str


@dataclass
class Remediation:
    env: str
    operator: str
    check: str
    run_id: str
    audit_path: Path
    max_actions: int
    plan_only: bool
    proposed: list[Action] = field(default_factory=list)
    applied: list[AuditEntry] = field(default_factory=list)

    def propose(self, actions: list[Action]) -> list[Action]:
        """Record what would change; return what may be applied now (nothing in plan mode).

        Raises :class:`BlastRadiusExceeded` before any change when over the limit.
        """
        self.proposed = list(actions)
        if len(actions) > self.max_actions:
            listed = "; ".join(a.describe() for a in actions[:10])
            raise BlastRadiusExceeded(
                f"stopped before changing anything: {len(actions)} actions exceed "
                f"--max-actions={self.max_actions}: {listed}"
            )
        return [] if self.plan_only else list(actions)

    def done(self, action: Action, after: str) -> AuditEntry:
        """Append an applied action to the audit log (one JSON line, O_APPEND)."""
        entry = AuditEntry(
            when=datetime.now(UTC).isoformat(timespec="seconds"), who=self.operator,
            env=self.env, target=action.target, action=action.action, subject=action.subject,
            before=action.before, after=after, check=self.check, run_id=self.run_id,
        )
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)
        line = SECRETS.scrub(json.dumps(asdict(entry), ensure_ascii=False)) + "\n"
        fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        self.applied.append(entry)
        return entry


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
