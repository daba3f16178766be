"""``summary.json``: the outcome and evidence of every check of one run."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from opsverify.backup import levels

INTERRUPTED = 2  # pytest.ExitCode.INTERRUPTED, without importing pytest here
OUTCOMES = ("FAIL", "ERROR", "WARN", "WAIVED", "PLAN", "SKIP", "PASS")


class ReportLike(Protocol):
    """The parts of a pytest TestReport the summary reads."""

    when: str
    outcome: str
    duration: float
    user_properties: list[tuple[str, object]]
    longreprtext: str


@dataclass(frozen=True)
class CheckResult:
    nodeid: str
    outcome: str
    target: str
    duration_s: float
    evidence: list[dict[str, Any]]
    message: str
    plan: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    # The prefetched reads it judged: their own time, and how long they queued for it.
    probes: list[str] = field(default_factory=list)
    # Against the previous run of the environment (opsverify/report/changes.py): new,
    # still, fixed or same; and for a failing check, when its streak began.
    since_last: str = "same"
    failing_since: str | None = None
    # The most attempts a probe it depended on took (settings.retries): 1 unless retried.
    attempts: int = 1

    def retry_note(self) -> str:
        """``passed after 2 attempts`` (``WARN after 2 attempts``…); empty if not retried."""
        if self.attempts <= 1:
            return ""
        done = "passed" if self.outcome == "PASS" else self.outcome
        return f"{done} after {self.attempts} attempts"

    @classmethod
    def from_reports(cls, nodeid: str, reports: list[Any]) -> CheckResult:
        # A property recorded in one phase is carried by the later reports of the same
        # test (the teardown report brings them to JUnit): count each once.
        props: list[tuple[str, object]] = []
        for r in reports:
            for k, v in r.user_properties:
                if (str(k), v) not in props:
                    props.append((str(k), v))
        labels = {str(v) for k, v in props if k == "outcome"}
        by_when = {r.when: r for r in reports}
        outcome = _classify(by_when, labels)
        evidence: list[dict[str, Any]] = []
        for key, value in props:
            if key == "evidence.json":
                evidence = json.loads(str(value))
        message = ""
        for r in reports:
            if r.outcome in ("failed", "skipped") and r.longreprtext:
                message = _message(r)
                break
        waiver = next((str(v) for k, v in props if k == "waiver"), "")
        if waiver:
            message = f"{waiver}\n{message}".strip()
        return cls(
            nodeid=nodeid,
            outcome=outcome,
            target=next((str(v) for k, v in props if k == "target"), ""),
            duration_s=round(sum(r.duration for r in reports), 4),
            evidence=evidence,
            message=message,
            plan=[str(v) for k, v in props if k == "plan"],
            applied=[str(v) for k, v in props if k == "applied"],
            probes=[str(v) for k, v in props if k == "probe"],
            attempts=max((int(str(v)) for k, v in props if k == "attempts"), default=1),
        )


def _classify(by_when: dict[str, Any], labels: set[str]) -> str:
    if "ERROR" in labels:
        return "ERROR"
    if any(by_when.get(w) is not None and by_when[w].outcome == "failed"
           for w in ("setup", "teardown")):
        return "ERROR"
    call = by_when.get("call")
    if call is not None and call.outcome == "failed":
        return "FAIL"
    for label in ("WAIVED", "PLAN"):
        if label in labels:
            return label
    if any(r.outcome == "skipped" for r in by_when.values()):
        return "SKIP"
    if "WARN" in labels:
        return "WARN"
    return "PASS"


def _message(report: Any) -> str:
    if report.outcome == "skipped" and isinstance(getattr(report, "longrepr", None), tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text: str = report.longreprtext
    return text.strip()[-4000:]


@dataclass(frozen=True)
class RunSummary:
    environment: dict[str, Any]
    operator: str
    host: str
    started: datetime
    finished: datetime
    revision: str
    exitstatus: int
    checks: list[CheckResult]
    audit: list[dict[str, str]]
    run_id: str
    previous_run: dict[str, str] | None = None

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(c.outcome for c in self.checks)
        return {o: found.get(o, 0) for o in OUTCOMES}

    def flaky(self) -> list[CheckResult]:
        """Checks that passed (PASS or WARN) only on a later attempt."""
        return [c for c in self.ordered() if c.attempts > 1 and c.outcome in ("PASS", "WARN")]

    def flaky_line(self) -> str:
        """``1: checks/…::test_health[api:/health] passed after 2 attempts`` (or ``0``)."""
        found = self.flaky()
        shown = "; ".join(f"{c.nodeid} {c.retry_note()}" for c in found[:10])
        more = f"; and {len(found) - 10} more" if len(found) > 10 else ""
        return f"{len(found)}: {shown}{more}" if found else "0"

    def ordered(self) -> list[CheckResult]:
        """Failures and warnings first: what the reader came for."""
        rank = {o: i for i, o in enumerate(OUTCOMES)}
        return sorted(self.checks, key=lambda c: (rank[c.outcome], c.nodeid))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "run_id": self.run_id,
            "environment": self.environment,
            "operator": self.operator,
            "host": self.host,
            "started": self.started.isoformat(timespec="seconds"),
            "finished": self.finished.isoformat(timespec="seconds"),
            "duration_s": round((self.finished - self.started).total_seconds(), 3),
            "revision": self.revision,
            "exit_status": self.exitstatus,
            # Stopped early (Ctrl-C, SIGTERM): the checks listed are those that ran.
            "interrupted": self.exitstatus == INTERRUPTED,
            "counts": self.counts,
            "previous_run": self.previous_run,
            # vars(), not asdict(): asdict deep-copies every evidence value (1 ms a check).
            "checks": [dict(vars(c)) for c in self.ordered()],
            "audit": self.audit,
        } | self.backups()

    def backups(self) -> dict[str, Any]:
        """Per backup target, the highest level proven and its evidence; only in runs that
        checked backups (``checks/backup/``)."""
        found = levels.summarize(self.checks)
        return {"backups": {t: b.to_dict() for t, b in found.items()}} if found else {}


def git_revision(root: Path) -> str:
    """``abc1234`` or ``abc1234+dirty``; ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
