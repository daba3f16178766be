"""PostgreSQL remediation: the runbooks' fixes, each enabled per target (``remediation:``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation.postgres import (
    TerminateIdleSessions,
    TerminateIdleSessionsSettings,
    Unblock,
    UnblockSettings,
    Vacuum,
    VacuumSettings,
)
from opsverify.targets.postgres_capacity import dead_tuples
from opsverify.targets.postgres_locks import lock_waits
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.postgres import PostgresClient


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


@pytest.mark.destructive
def test_unblock(postgres_admin: PostgresClient, postgres_unblock: UnblockSettings,
                 remediation: Gate, evidence: EvidenceLog) -> None:
    """Cancel (then terminate, if it still blocks) the session behind every session waiting
    on a lock past ``waiting_longer_than_s``, then re-check what test_blocked_sessions
    judges."""
    remediation.run(Unblock(postgres_admin, postgres_unblock))
    waits = lock_waits(postgres_admin)
    evidence.within("postgres.lock_wait_s", round(waits[0].waited_s, 1) if waits else 0.0,
                    unit="s", default=Threshold(warn=30, crit=300))


@pytest.mark.destructive
def test_vacuum(postgres_admin: PostgresClient, postgres_vacuum: VacuumSettings,
                remediation: Gate, evidence: EvidenceLog) -> None:
    """``VACUUM (ANALYZE)`` each table whose dead share is above ``dead_tuple_ratio``, then
    re-check what test_dead_tuples judges: the dead share of each table with at least
    ``dead_tuple_min_rows`` dead rows."""
    remediation.run(Vacuum(postgres_admin, postgres_vacuum))
    found = dead_tuples(postgres_admin, postgres_admin.spec.dead_tuple_min_rows)
    for table in found.tables[:10]:
        evidence.within("postgres.dead_tuple_pct", table.dead_pct, unit="%",
                        default=Threshold(warn=20, crit=50), item=table.name)
    if not found.tables:
        evidence.within("postgres.dead_tuple_pct", 0.0, unit="%",
                        default=Threshold(warn=20, crit=50))
