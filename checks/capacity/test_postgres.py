"""PostgreSQL capacity: connections held idle by leaking pools exhaust max_connections."""

import pytest

from opsverify.evidence import EvidenceLog
from opsverify.targets.postgres import PostgresClient
from opsverify.thresholds import Threshold


@pytest.mark.daily
def test_stale_idle_sessions(postgres: PostgresClient, evidence: EvidenceLog) -> None:
    """Few client sessions sit idle longer than ``idle_session_max_age_s`` (runbook: 1 h)."""
    max_age = postgres.spec.idle_session_max_age_s
    stale = postgres.stale_idle_sessions(max_age)
    evidence.note("idle longer than", max_age, unit="s")
    if stale:
        evidence.note("oldest", ", ".join(
            f"pid {s.pid} {s.user} {s.application!r} {s.idle_s:.0f} s" for s in stale[:5]))
    evidence.within("postgres.stale_idle_sessions", len(stale), unit="sessions",
                    default=Threshold(warn=5, crit=20))
