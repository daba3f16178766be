"""PostgreSQL lock waits: sessions of the target's database waiting on a lock, how long, and
who holds them up (``pg_blocking_pids()``), for checks/health/test_postgres_locks.py and
the ``unblock`` remediation.

Read only (pg_locks and pg_stat_activity); a role that may not see other roles' sessions
gets :class:`~opsverify.errors.MissingPrivilege` naming the grant: a SKIP, not a FAIL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opsverify.errors import MissingPrivilege

if TYPE_CHECKING:  # a runtime import would cycle: targets.postgres imports remediation
    from opsverify.targets.postgres import PostgresClient

READ_ALL_STATS = "GRANT pg_read_all_stats TO {role} (pg_monitor includes it)"

# pg_locks.waitstart exists from PostgreSQL 14 (to_jsonb: one statement for every version);
# before, or in the instant before it is set, the statement's start bounds the wait.
WAITED_S = ("extract(epoch FROM now() - coalesce((to_jsonb(l) ->> 'waitstart')::timestamptz,"
            " a.query_start, a.state_change))::float8")

# One row per waiting backend: a backend waits for one lock at a time.
_LOCK_WAITS = f"""
    SELECT a.pid, a.backend_start, a.backend_type, coalesce(a.usename, ''),
           coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'),
           {WAITED_S}, l.locktype, l.mode,
           CASE WHEN l.relation IS NULL THEN '' ELSE l.relation::regclass::text END,
           pg_catalog.pg_blocking_pids(a.pid)
    FROM pg_catalog.pg_locks AS l
    JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
    WHERE NOT l.granted AND a.datname = current_database() AND a.pid <> pg_backend_pid()
    ORDER BY 7 DESC, 1
"""


@dataclass(frozen=True)
class LockWait:
    """A session waiting on a lock, and the sessions it waits for."""

    pid: int
    backend_start: datetime
    user: str
    application: str
    client: str
    waited_s: float
    lock: str  # "transactionid ShareLock", "relation AccessExclusiveLock on public.runs"
    blocked_by: tuple[int, ...]

    def describe(self) -> str:
        by = ", ".join(f"pid {p}" for p in self.blocked_by) or "nobody any more"
        return (f"{self.user} {self.application!r} from {self.client} waits "
                f"{self.waited_s:.1f} s for {self.lock}, blocked by {by}")


def lock_waits(client: PostgresClient) -> tuple[LockWait, ...]:
    """Sessions of the target's database waiting on a lock, the longest wait first."""
    rows = client.query(_LOCK_WAITS)
    if any(row[2] is None for row in rows):  # another role's session, details hidden
        role = client.scalar("SELECT quote_ident(current_user)")
        raise MissingPrivilege(client.name, "the sessions of other roles in pg_stat_activity",
                               READ_ALL_STATS.format(role=role))
    return tuple(_wait(row) for row in rows)


def _wait(row: tuple[Any, ...]) -> LockWait:
    pid, started, _, user, application, where, waited, locktype, mode, relation, by = row
    lock = f"{locktype} {mode}" + (f" on {relation}" if relation else "")
    return LockWait(int(pid), started, str(user), str(application), str(where),
                    max(0.0, float(waited)), lock, tuple(int(p) for p in by or ()))
