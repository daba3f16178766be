"""PostgreSQL remediation: the runbook's "terminate idle connections older than 1 hour"."""

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation import Action
from opsverify.targets.postgres import PostgresClient
from opsverify.thresholds import Threshold


@pytest.mark.destructive
def test_terminate_stale_idle_sessions(
    postgres_admin: PostgresClient, remediation: Gate, evidence: EvidenceLog
) -> None:
    """Terminate client sessions idle longer than ``idle_session_max_age_s``, then re-check."""
    max_age = postgres_admin.spec.idle_session_max_age_s
    stale = {
        Action(postgres_admin.name, "pg_terminate_backend", f"pid {s.pid}",
               f"{s.user} {s.application!r} from {s.client}, idle {s.idle_s:.0f} s"): s
        for s in postgres_admin.stale_idle_sessions(max_age)
    }
    for action in remediation.propose(list(stale)):
        terminated = postgres_admin.terminate(stale[action].pid)
        remediation.done(action, after="terminated" if terminated else "already gone")
    remaining = postgres_admin.stale_idle_sessions(max_age)
    evidence.within("postgres.stale_idle_sessions", len(remaining), unit="sessions",
                    default=Threshold(warn=5, crit=20))
