"""PostgreSQL remediation: the runbooks' fixes, each enabled per target (``remediation:``)."""

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation.postgres import TerminateIdleSessions, TerminateIdleSessionsSettings
from opsverify.targets.postgres import PostgresClient
from opsverify.thresholds import Threshold


@pytest.mark.destructive
def test_terminate_idle_sessions(
    postgres_admin: PostgresClient, postgres_terminate_idle_sessions: TerminateIdleSessionsSettings,
    remediation: Gate, evidence: EvidenceLog,
) -> None:
    """Terminate client sessions idle (or idle in a transaction) past ``older_than_s``, then
    re-check what test_stale_idle_sessions judges."""
    action = TerminateIdleSessions(postgres_admin, postgres_terminate_idle_sessions)
    remediation.run(action)
    remaining = postgres_admin.stale_idle_sessions(postgres_admin.spec.idle_session_max_age_s)
    evidence.within("postgres.stale_idle_sessions", len(remaining), unit="sessions",
                    default=Threshold(warn=5, crit=20))
