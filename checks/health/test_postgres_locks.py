"""PostgreSQL lock waits: no session of the target's database waits long on a lock that
another holds (the runbook's "find blocking queries", ``pg_blocking_pids()``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.targets.postgres_locks import lock_waits
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.postgres import PostgresClient
    from opsverify.targets.postgres_locks import LockWait

# deadlock_timeout is 1 s: a wait that outlives it is no deadlock, only a lock held long.
# 30 s is past any web request's timeout (the waiting request has already failed); 300 s is
# a transaction left open or a migration queued behind one, taking every later query with
# it. The same 30/300 as replication lag.
LOCK_WAIT = Threshold(warn=30, crit=300)
SHOWN = 10  # waiting sessions listed by pid in the evidence


@probe
def postgres_lock_waits(postgres: PostgresClient) -> tuple[LockWait, ...]:
    return lock_waits(postgres)


@pytest.mark.daily
def test_blocked_sessions(postgres_lock_waits: tuple[LockWait, ...],
                          evidence: EvidenceLog) -> None:
    """No session waits on a lock longer than ``postgres.lock_wait_s`` (warn 30 s, crit
    300 s): the longest wait in the target's database, with who blocks it."""
    waits = postgres_lock_waits
    longest = round(waits[0].waited_s, 1) if waits else 0.0
    evidence.within("postgres.lock_wait_s", longest, unit="s", default=LOCK_WAIT)
    evidence.note("sessions waiting on a lock", len(waits), unit="sessions")
    for wait in waits[:SHOWN]:
        evidence.note(f"pid {wait.pid}", wait.describe())
    if len(waits) > SHOWN:
        evidence.note("and more", f"{len(waits) - SHOWN} other waiting sessions")
