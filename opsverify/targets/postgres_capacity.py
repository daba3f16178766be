"""PostgreSQL capacity reads: connections against ``max_connections``, transaction-id age
against wraparound, replication slots and the WAL they keep, dead tuples, unused indexes,
and the database's size (checks/capacity/test_postgres.py).

Each function takes a read-only :class:`~opsverify.targets.postgres.PostgresClient` (its
read-only transaction and deadline apply to every statement) and returns frozen data. Only
catalogs and statistics views are read. Where the account may not read what is needed, the
function raises :class:`~opsverify.errors.MissingPrivilege` naming the grant: a SKIP, not
a FAIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opsverify.errors import MissingPrivilege

# The check modules import this one in every run: psycopg and the postgres type are
# imported by the reads, which only a run with postgres targets makes.
if TYPE_CHECKING:
    from opsverify.targets.postgres import PostgresClient, Session

# age(datfrozenxid) may not pass 2^31: the server stops assigning transaction ids (a few
# million before it) rather than let old rows look like they are in the future.
TXID_CAPACITY = 2**31
READ_ALL_STATS = "GRANT pg_read_all_stats TO {role} (pg_monitor includes it)"


# -- connections --------------------------------------------------------------------------
@dataclass(frozen=True)
class Connections:
    """Client sessions (``backend_type = 'client backend'``) against ``max_connections``."""

    used: int
    max_connections: int
    superuser_reserved: int
    by_state: tuple[tuple[str, int], ...]  # ('idle in transaction', 45), most first

    @property
    def used_pct(self) -> float:
        return round(100.0 * self.used / self.max_connections, 1)

    @property
    def left_for_others(self) -> int:
        """Sessions a role that is not a superuser can still open."""
        return max(0, self.max_connections - self.superuser_reserved - self.used)

    def states(self) -> str:
        return ", ".join(f"{state} {count}" for state, count in self.by_state) or "none"


def connections(client: PostgresClient) -> Connections:
    """Who holds the server's connection slots. Without ``pg_read_all_stats`` the type of
    other roles' sessions is hidden (a background worker and a client look the same), so
    they cannot be counted: :class:`MissingPrivilege`."""
    rows = _rows(client, "pg_stat_activity", """
        SELECT coalesce(state, 'starting'),
               count(*) FILTER (WHERE backend_type = 'client backend'),
               count(*) FILTER (WHERE backend_type IS NULL),
               current_setting('max_connections')::int,
               current_setting('superuser_reserved_connections')::int
        FROM pg_catalog.pg_stat_activity
        GROUP BY 1 ORDER BY 2 DESC, 1
        """)
    if any(int(row[2]) for row in rows):
        raise MissingPrivilege(client.name, "the sessions of other roles in pg_stat_activity",
                               READ_ALL_STATS.format(role=_role(client)))
    states = tuple((str(row[0]), int(row[1])) for row in rows if int(row[1]))
    return Connections(sum(count for _, count in states), int(rows[0][3]), int(rows[0][4]),
                       states)


def stale_idle_sessions(client: PostgresClient, max_age_s: float) -> tuple[Session, ...]:
    """:meth:`PostgresClient.stale_idle_sessions`, where this role can tell: without
    ``pg_read_all_stats`` every other role's session has no state, and none would count."""
    connections(client)  # MissingPrivilege where other roles' sessions are hidden
    return tuple(client.stale_idle_sessions(max_age_s))


# -- transaction-id wraparound ------------------------------------------------------------
@dataclass(frozen=True)
class DatabaseAge:
    """``age(datfrozenxid)`` of one database: transactions since it was last frozen."""

    name: str
    age: int
    allows_connections: bool  # template0 does not; autovacuum still freezes it


def txid_ages(client: PostgresClient) -> tuple[DatabaseAge, ...]:
    """Every database of the server, oldest first (pg_database is readable by every role)."""
    rows = _rows(client, "pg_database", """
        SELECT datname, age(datfrozenxid)::bigint, datallowconn
        FROM pg_catalog.pg_database ORDER BY 2 DESC, 1
        """)
    return tuple(DatabaseAge(str(r[0]), int(r[1]), bool(r[2])) for r in rows)


# -- replication slots --------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    """A replication slot and the WAL it keeps on this server."""

    name: str
    type: str  # physical | logical
    active: bool
    database: str  # a logical slot's database, "" for a physical one
    reserves_wal: bool  # False: created without reserving (restart_lsn is null)
    retained_bytes: int  # WAL from restart_lsn to this server's position
    wal_status: str  # reserved | extended | unreserved | lost ("" before PostgreSQL 13)
    xmin_age: int | None  # how far it holds back vacuum (xmin or catalog_xmin), if at all

    def describe(self) -> str:
        state = "active" if self.active else "inactive"
        where = f" on {self.database}" if self.database else ""
        status = f", wal_status {self.wal_status}" if self.wal_status else ""
        kept = (f"keeps {size_text(self.retained_bytes)} of WAL" if self.reserves_wal
                else "reserves no WAL")
        held = (f", holds back vacuum by {self.xmin_age} transactions"
                if self.xmin_age is not None else "")
        return f"{self.type}{where}, {state}{status}: {kept}{held}"


@dataclass(frozen=True)
class Slots:
    standby: bool  # retained WAL measured from the received position, not the written one
    slots: tuple[Slot, ...]

    @property
    def inactive(self) -> tuple[Slot, ...]:
        return tuple(s for s in self.slots if not s.active)


def replication_slots(client: PostgresClient) -> Slots:
    """The server's slots. On a standby ``pg_current_wal_lsn()`` cannot be called: the WAL
    a slot keeps is measured from the last WAL received (or replayed, without a receiver)."""
    # to_jsonb: wal_status exists from PostgreSQL 13; one statement serves every version.
    rows = _rows(client, "pg_replication_slots", """
        SELECT h.standby, s.slot_name, s.slot_type, s.active, coalesce(s.database, ''),
               s.restart_lsn IS NOT NULL,
               coalesce(pg_wal_lsn_diff(h.lsn, s.restart_lsn), 0)::bigint,
               coalesce(to_jsonb(s) ->> 'wal_status', ''),
               greatest(age(s.xmin), age(s.catalog_xmin))
        FROM (SELECT pg_is_in_recovery() AS standby,
                     CASE WHEN pg_is_in_recovery()
                          THEN coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
                          ELSE pg_current_wal_lsn() END AS lsn) AS h
        LEFT JOIN pg_catalog.pg_replication_slots AS s ON true
        ORDER BY s.slot_name
        """)
    slots = tuple(
        Slot(str(r[1]), str(r[2]), bool(r[3]), str(r[4]), bool(r[5]), max(0, int(r[6])),
             str(r[7]), None if r[8] is None else int(r[8]))
        for r in rows if r[1] is not None)
    return Slots(bool(rows[0][0]), slots)


# -- dead tuples --------------------------------------------------------------------------
@dataclass(frozen=True)
class TableTuples:
    """A table's live and dead rows (pg_stat_user_tables) and its last vacuum."""

    name: str  # schema.table
    live: int
    dead: int
    vacuumed_s_ago: float | None  # by autovacuum or by hand; None: never

    @property
    def dead_pct(self) -> float:
        return round(100.0 * self.dead / max(1, self.live + self.dead), 1)

    def describe(self) -> str:
        when = ("never vacuumed" if self.vacuumed_s_ago is None
                else f"vacuumed {duration_text(self.vacuumed_s_ago)} ago")
        return f"{self.name}: {self.dead} dead of {self.live + self.dead} rows, {when}"


@dataclass(frozen=True)
class DeadTuples:
    database: str
    standby: bool  # a standby counts no dead rows: its primary's counts are the ones
    min_dead: int  # the noise floor: tables with fewer dead rows are not judged
    tables: tuple[TableTuples, ...]  # the judged tables, highest dead share first


def dead_tuples(client: PostgresClient, min_dead: int) -> DeadTuples:
    """Tables of the target's database with at least ``min_dead`` dead rows."""
    standby, database = _where(client)
    rows = _rows(client, "pg_stat_user_tables", """
        SELECT schemaname || '.' || relname, n_live_tup, n_dead_tup,
               extract(epoch FROM now() - greatest(last_vacuum, last_autovacuum))::float8
        FROM pg_catalog.pg_stat_user_tables
        WHERE n_dead_tup >= %s
        ORDER BY n_dead_tup::float8 / greatest(n_live_tup + n_dead_tup, 1) DESC, 1
        """, (min_dead,))
    tables = tuple(TableTuples(str(r[0]), int(r[1]), int(r[2]),
                               None if r[3] is None else float(r[3])) for r in rows)
    return DeadTuples(database, standby, min_dead, tables)


# -- unused indexes -----------------------------------------------------------------------
@dataclass(frozen=True)
class UnusedIndex:
    name: str  # schema.index
    table: str
    size_bytes: int
    valid: bool  # False: a CREATE INDEX CONCURRENTLY that failed, still maintained

    def describe(self) -> str:
        return (f"{self.name} on {self.table}, {size_text(self.size_bytes)}"
                + ("" if self.valid else ", invalid"))


@dataclass(frozen=True)
class UnusedIndexes:
    database: str
    standby: bool
    min_bytes: int
    stats_reset_s_ago: float | None  # idx_scan counts since then; None: never reset
    indexes: tuple[UnusedIndex, ...]  # largest first

    @property
    def total_bytes(self) -> int:
        return sum(i.size_bytes for i in self.indexes)


def unused_indexes(client: PostgresClient, min_bytes: int) -> UnusedIndexes:
    """Indexes never scanned (``idx_scan = 0``) larger than ``min_bytes``, other than those
    that enforce a constraint (unique, primary key, exclusion): the runbook's weekly
    query, over every schema."""
    standby, database = _where(client)
    reset = _rows(client, "pg_stat_database", """
        SELECT extract(epoch FROM now() - stats_reset)::float8
        FROM pg_catalog.pg_stat_database WHERE datname = current_database()
        """)
    rows = _rows(client, "pg_stat_user_indexes", """
        SELECT s.schemaname || '.' || s.indexrelname, s.schemaname || '.' || s.relname,
               pg_relation_size(s.indexrelid)::bigint, i.indisvalid
        FROM pg_catalog.pg_stat_user_indexes AS s
        JOIN pg_catalog.pg_index AS i ON i.indexrelid = s.indexrelid
        WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
          AND NOT i.indisexclusion AND pg_relation_size(s.indexrelid) > %s
        ORDER BY 3 DESC, 1
        """, (min_bytes,))
    since = reset[0][0] if reset else None
    return UnusedIndexes(database, standby, min_bytes, None if since is None else float(since),
                         tuple(UnusedIndex(str(r[0]), str(r[1]), int(r[2]), bool(r[3]))
                               for r in rows))


# -- database size ------------------------------------------------------------------------
@dataclass(frozen=True)
class DatabaseSize:
    database: str
    size_bytes: int
    capacity_bytes: int

    @property
    def used_pct(self) -> float:
        return round(100.0 * self.size_bytes / self.capacity_bytes, 2)


def database_size(client: PostgresClient, capacity_bytes: int) -> DatabaseSize:
    """``pg_database_size`` of the database the target's DSN names."""
    rows = _rows(client, "the size of this database", """
        SELECT current_database(), pg_database_size(current_database())::bigint
        """, grant="GRANT CONNECT ON DATABASE {database} TO {role}, or " + READ_ALL_STATS)
    return DatabaseSize(str(rows[0][0]), int(rows[0][1]), capacity_bytes)


# -- text ---------------------------------------------------------------------------------
def size_text(size: float) -> str:
    """``512 B``, ``12.0 MiB``, ``3.5 GiB``."""
    value, unit = float(size), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def duration_text(seconds: float) -> str:
    """``45 s``, ``12 min``, ``5.2 h``, ``3.0 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# -- internals ----------------------------------------------------------------------------
def _rows(client: PostgresClient, what: str, sql: str, params: Sequence[Any] | None = None,
          *, grant: str = "GRANT SELECT ON pg_catalog.{what} TO {role}",
          ) -> list[tuple[Any, ...]]:
    """``client.query``; a permission error is :class:`MissingPrivilege` naming ``grant``
    (a statistics view whose SELECT was revoked from PUBLIC, a database size)."""
    import psycopg

    try:
        return client.query(sql, params)
    except psycopg.errors.InsufficientPrivilege:
        database = client.scalar("SELECT quote_ident(current_database())")
        raise MissingPrivilege(client.name, what, grant.format(
            what=what, role=_role(client), database=database)) from None


def _role(client: PostgresClient) -> str:
    return str(client.scalar("SELECT quote_ident(current_user)"))


def _where(client: PostgresClient) -> tuple[bool, str]:
    row = client.query("SELECT pg_is_in_recovery(), current_database()")[0]
    return bool(row[0]), str(row[1])
