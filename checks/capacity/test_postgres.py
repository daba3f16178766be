"""PostgreSQL capacity: connection slots (and the idle sessions of leaking pools that take
them), transaction-id wraparound, replication slots that keep WAL, the weekly review of
dead tuples and unused indexes (the ts-forecast runbook), the database against its
declared ``capacity_bytes``, and the days left until txid age and database size run out.

Every read is a fixed query on catalogs and statistics views, prefetched in the probe pool
(opsverify/targets/postgres_capacity.py); what the account may not see is a SKIP naming
the grant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.history import judge_trend
from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.history import History
from opsverify.targets.postgres_capacity import (
    TXID_CAPACITY,
    connections,
    database_size,
    dead_tuples,
    duration_text,
    replication_slots,
    size_text,
    stale_idle_sessions,
    txid_ages,
    unused_indexes,
)
from opsverify.thresholds import Threshold, Verdict, judge

if TYPE_CHECKING:
    from opsverify.targets.postgres import PostgresClient, Session
    from opsverify.targets.postgres_capacity import (
        Connections,
        DatabaseAge,
        DatabaseSize,
        DeadTuples,
        Slots,
        UnusedIndexes,
    )

GIB = 1024**3
# Runbook (ts-forecast): connections < 100 / 150 / 180 of 200.
CONNECTIONS = Threshold(warn=75, crit=90)
# check_postgres's txn_wraparound defaults; the server stops at 2^31 minus a few million.
TXID_AGE = Threshold(warn=1.3e9, crit=1.4e9)
SLOT_RETAINED = Threshold(warn=1 * GIB, crit=10 * GIB)
# Autovacuum starts at 20 % dead (autovacuum_vacuum_scale_factor): past that it is behind;
# more dead rows than live ones is a table that is not being vacuumed at all.
DEAD_TUPLES = Threshold(warn=20, crit=50)
UNUSED_INDEXES = Threshold(warn=0, crit=10)
DATABASE_SIZE = Threshold(warn=80, crit=90)
SHOWN = 10  # tables or indexes listed by name in the evidence


@probe
def postgres_stale_idle_sessions(postgres: PostgresClient) -> tuple[Session, ...]:
    """Client sessions idle longer than the target's ``idle_session_max_age_s``."""
    return stale_idle_sessions(postgres, postgres.spec.idle_session_max_age_s)


@probe
def postgres_connections(postgres: PostgresClient) -> Connections:
    return connections(postgres)


@probe
def postgres_txid_ages(postgres: PostgresClient) -> tuple[DatabaseAge, ...]:
    return txid_ages(postgres)


@probe
def postgres_replication_slots(postgres: PostgresClient) -> Slots:
    return replication_slots(postgres)


@probe
def postgres_dead_tuples(postgres: PostgresClient) -> DeadTuples:
    return dead_tuples(postgres, postgres.spec.dead_tuple_min_rows)


@probe
def postgres_unused_indexes(postgres: PostgresClient) -> UnusedIndexes:
    return unused_indexes(postgres, postgres.spec.unused_index_min_bytes)


@probe
def postgres_database_size(postgres: PostgresClient, postgres_capacity_bytes: int
                           ) -> DatabaseSize:
    return database_size(postgres, postgres_capacity_bytes)


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


@pytest.mark.daily
def test_connections_used(postgres_connections: Connections, evidence: EvidenceLog) -> None:
    """Client sessions leave ``max_connections`` room to spare (runbook: 100/150/180 of
    200); opsverify's own session counts, as every other does."""
    found = postgres_connections
    evidence.within("postgres.connections_used_pct", found.used_pct, unit="%", capacity=100,
                    default=CONNECTIONS)
    evidence.note("used", found.used, unit="sessions")
    evidence.note("max_connections", found.max_connections)
    evidence.note("superuser_reserved_connections", found.superuser_reserved)
    evidence.note("left for other roles", found.left_for_others, unit="sessions")
    evidence.note("by state", found.states())


@pytest.mark.daily
def test_txid_age(postgres_txid_ages: tuple[DatabaseAge, ...], evidence: EvidenceLog) -> None:
    """No database nears transaction-id wraparound: ``age(datfrozenxid)`` of each, against
    2^31 (check_postgres: warn 1.3e9, crit 1.4e9)."""
    oldest = postgres_txid_ages[0]
    evidence.note("oldest database", f"{oldest.name}: {oldest.age} transactions since frozen, "
                  f"{100 * oldest.age / TXID_CAPACITY:.1f} % of 2^31")
    for database in postgres_txid_ages:
        evidence.within("postgres.txid_age", database.age, unit="xids", default=TXID_AGE,
                        capacity=TXID_CAPACITY, item=database.name)


@pytest.mark.daily
def test_replication_slots(postgres_replication_slots: Slots, evidence: EvidenceLog) -> None:
    """No replication slot keeps more WAL than its thresholds allow, nor has lost the WAL
    its consumer needs. An inactive slot is a WARN whatever it keeps now: nothing consumes
    it, so the WAL it keeps grows until the disk is full (``postgres.inactive_slots``)."""
    found = postgres_replication_slots
    if found.standby:
        evidence.note("measured from", "the WAL this standby has received")
    evidence.within("postgres.inactive_slots", len(found.inactive), unit="slots",
                    default=Threshold(warn=0))
    if not found.slots:
        evidence.note("slots", "none")
    for slot in found.slots:
        evidence.note(f"slot {slot.name}", slot.describe())
        evidence.within("postgres.slot_retained_bytes", slot.retained_bytes, unit="B",
                        default=SLOT_RETAINED, item=slot.name)
        if slot.wal_status == "lost":
            evidence.expect(f"slot {slot.name} WAL", "lost: removed before its consumer read "
                            "it (max_slot_wal_keep_size)", equals="kept")


@pytest.mark.weekly
def test_dead_tuples(postgres: PostgresClient, postgres_dead_tuples: DeadTuples,
                     evidence: EvidenceLog) -> None:
    """Autovacuum keeps up: the share of dead rows of each table with at least
    ``dead_tuple_min_rows`` of them (runbook: ``n_dead_tup > 1000``) stays low."""
    found = postgres_dead_tuples
    if found.standby:
        pytest.skip("a standby counts no dead rows (pg_stat_user_tables): its primary's "
                    "check judges these tables")
    evidence.note("database", found.database)
    evidence.note(f"tables with ≥ {found.min_dead} dead rows", len(found.tables),
                  unit="tables")
    applied = evidence.threshold("postgres.dead_tuple_pct", DEAD_TUPLES)
    beyond = [t for t in found.tables if judge(t.dead_pct, applied)[0] is not Verdict.PASS]
    # The tables past a threshold, each judged; if none is, the worst one, which passes.
    for table in (beyond or list(found.tables[:1]))[:SHOWN]:
        evidence.within("postgres.dead_tuple_pct", table.dead_pct, unit="%",
                        default=DEAD_TUPLES, item=table.name)
        evidence.note(table.name, table.describe())
    if len(beyond) > SHOWN:
        evidence.note("and more", f"{len(beyond) - SHOWN} other tables past a threshold")
    if not found.tables:
        evidence.within("postgres.dead_tuple_pct", 0.0, unit="%", default=DEAD_TUPLES)


@pytest.mark.weekly
def test_unused_indexes(postgres_unused_indexes: UnusedIndexes, evidence: EvidenceLog) -> None:
    """Few indexes larger than ``unused_index_min_bytes`` (runbook: 10 MB) are never
    scanned: each costs every write and its disk for nothing. Unique and primary-key
    indexes enforce constraints and are not counted."""
    found = postgres_unused_indexes
    evidence.note("database", found.database)
    evidence.within("postgres.unused_index_count", len(found.indexes), unit="indexes",
                    default=UNUSED_INDEXES)
    evidence.note("postgres.unused_index_bytes", found.total_bytes, unit="B")
    evidence.note("larger than", size_text(found.min_bytes))
    for index in found.indexes[:SHOWN]:
        evidence.note(f"unused {index.name}", index.describe())
    if len(found.indexes) > SHOWN:
        evidence.note("and more", f"{len(found.indexes) - SHOWN} other unused indexes")
    evidence.note("scans counted", "by this server only: an index read only on a "
                  + ("primary" if found.standby else "replica") + " looks unused here; "
                  + ("since its statistics began" if found.stats_reset_s_ago is None else
                     f"since the statistics reset {duration_text(found.stats_reset_s_ago)} ago"))


@pytest.mark.daily
def test_database_size(postgres: PostgresClient, postgres_database_size: DatabaseSize,
                       evidence: EvidenceLog) -> None:
    """The database stays within the ``capacity_bytes`` its target declares."""
    size = postgres_database_size
    evidence.within("postgres.database_size_pct", size.used_pct, unit="%", capacity=100,
                    default=DATABASE_SIZE, item=size.database)
    evidence.note("size", size_text(size.size_bytes))
    evidence.note("capacity_bytes", f"{size_text(size.capacity_bytes)} ("
                  f"{evidence.source_of('targets', postgres.name, 'capacity_bytes')})")


# -- days left, from the history of the readings above ------------------------------------
@pytest.mark.daily
def test_txid_age_trend(postgres_txid_ages: tuple[DatabaseAge, ...], capacity_history: History,
                        evidence: EvidenceLog) -> None:
    """Days until the oldest database reaches wraparound, from its txid-age history: every
    database's age grows with the server's transactions, so the oldest gets there first."""
    oldest = postgres_txid_ages[0]
    evidence.note("oldest database", oldest.name)
    # The server's oldest, whichever database that is today: item "" (the per-database
    # readings of test_txid_age keep their names).
    judge_trend(evidence, capacity_history, "postgres.txid_age", oldest.age, TXID_CAPACITY,
                days_left_id="postgres.txid.days_left", unit="xids", item="")


@pytest.mark.daily
def test_database_size_trend(postgres_database_size: DatabaseSize, capacity_history: History,
                             evidence: EvidenceLog) -> None:
    """Days until the database fills its ``capacity_bytes``, from its size history."""
    size = postgres_database_size
    judge_trend(evidence, capacity_history, "postgres.database_size_pct", size.used_pct, 100,
                days_left_id="postgres.database_size.days_left", unit="%", item=size.database)
