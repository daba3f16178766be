"""PostgreSQL capacity: connections held idle by leaking pools exhaust max_connections."""

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.targets.postgres import PostgresClient, Session
from opsverify.thresholds import Threshold


@probe
def postgres_stale_idle_sessions(postgres: PostgresClient) -> tuple[Session, ...]:
    """Client sessions idle longer than the target's ``idle_session_max_age_s``."""
    return tuple(postgres.stale_idle_sessions(postgres.spec.idle_session_max_age_s))


@pytest.mark.daily
def test_stale_idle_sessions(postgres: PostgresClient,
                             postgres_stale_idle_sessions: tuple[Session, ...],
                             evidence: EvidenceLog) -> None:
    """Few client sessions sit idle longer than ``idle_session_max_age_s`` (runbook: 1 h)."""
    max_age = postgres.spec.idle_session_max_age_s
    stale = postgres_stale_idle_sessions
    evidence.note("idle longer than", max_age, unit="s")
    if stale:
        evidence.note("oldest", ", ".join(
            f"pid {s.pid} {s.user} {s.application!r} {s.idle_s:.0f} s" for s in stale[:5]))
    evidence.within("postgres.stale_idle_sessions", len(stale), unit="sessions",
                    default=Threshold(warn=5, crit=20))
