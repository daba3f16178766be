"""PostgreSQL fixes, each enabled per target under ``remediation:`` in its section:

    remediation:
      terminate_idle_sessions: {older_than_s: 3600}
      unblock: {waiting_longer_than_s: 300}
      vacuum: {dead_tuple_ratio: 0.2}

The actions take a write-capable :class:`~opsverify.targets.postgres.PostgresClient`, which
exists only inside an allowed destructive check (``postgres_admin``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from opsverify.remediation import Item
from opsverify.targets.base import Section
from opsverify.targets.postgres_locks import WAITED_S

if TYPE_CHECKING:
    from opsverify.targets.postgres import PostgresClient

IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")


class TerminateIdleSessionsSettings(Section):
    # Sessions idle (or idle in a transaction) longer than this; unset: the target's
    # idle_session_max_age_s, the limit its capacity check judges.
    older_than_s: float | None = Field(default=None, gt=0)


class UnblockSettings(Section):
    # Sessions waiting on a lock longer than this get their blocker cancelled (and
    # terminated if the cancel leaves it blocking). No default: say it.
    waiting_longer_than_s: float = Field(gt=0)


class VacuumSettings(Section):
    # Tables whose dead rows are more than this share of all their rows (0.2: 20 %, where
    # autovacuum's default scale factor starts) and at least the target's
    # dead_tuple_min_rows. No default: say it.
    dead_tuple_ratio: float = Field(gt=0, lt=1)


class PostgresRemediation(Section):
    """``remediation:`` of a postgres target: an action runs only where it is listed."""

    terminate_idle_sessions: TerminateIdleSessionsSettings | None = None
    unblock: UnblockSettings | None = None
    vacuum: VacuumSettings | None = None


@dataclass(frozen=True)
class Backend:
    """What identifies a session across plan and apply: a pid is reused, its start is not."""

    pid: int
    backend_start: datetime


_IDLE_SESSIONS = """
    SELECT pid, backend_start, coalesce(usename, ''), application_name,
           coalesce(host(client_addr), 'local'), state,
           extract(epoch FROM now() - state_change)::float8
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND state = ANY(%s)
      AND pid <> pg_backend_pid()
      AND application_name NOT LIKE 'opsverify%%'
      AND state_change < now() - make_interval(secs => %s)
    ORDER BY state_change
"""


class TerminateIdleSessions:
    """The runbook's "terminate idle connections older than 1 hour": client sessions idle
    or idle in a transaction past ``older_than_s`` (never opsverify's own, never
    replication), each terminated by pid and start time."""

    name: ClassVar[str] = "terminate_idle_sessions"

    def __init__(self, client: PostgresClient, settings: TerminateIdleSessionsSettings) -> None:
        self.client = client
        self.target = client.name
        self.older_than_s = (settings.older_than_s if settings.older_than_s is not None
                             else client.spec.idle_session_max_age_s)

    def select(self) -> list[Item]:
        rows = self.client.query(_IDLE_SESSIONS, (list(IDLE_STATES), self.older_than_s))
        return [_session_item(row) for row in rows]

    def drift(self, item: Item) -> str | None:
        backend: Backend = item.ref
        rows = self.client.query(
            "SELECT backend_start, state, extract(epoch FROM now() - state_change)::float8 "
            "FROM pg_stat_activity WHERE pid = %s", (backend.pid,))
        if not rows:
            return "the session ended"
        started, state, idle_s = rows[0]
        if started != backend.backend_start:
            return f"pid {backend.pid} is another session now (started {started:%H:%M:%S})"
        if state not in IDLE_STATES or idle_s < self.older_than_s:
            return f"no longer idle past {self.older_than_s:g} s ({state}, {idle_s:.0f} s)"
        return None

    def apply(self, item: Item) -> str:
        backend: Backend = item.ref
        self.client.terminate(backend.pid)
        # pg_terminate_backend answers true once the signal is sent: success is the
        # session gone, read back from the server.
        left = self.client.query(
            "SELECT state FROM pg_stat_activity WHERE pid = %s AND backend_start = %s",
            (backend.pid, backend.backend_start))
        if left:
            raise RuntimeError(f"pid {backend.pid} still there after pg_terminate_backend "
                               f"({left[0][0]})")
        return "terminated"


def _session_item(row: tuple[Any, ...]) -> Item:
    pid, started, user, application, client, state, idle_s = row
    return Item(identity=f"pid {pid} started {started:%Y-%m-%dT%H:%M:%S%z}",
                before=f"{user} {application!r} from {client}, {state} {idle_s:.0f} s",
                ref=Backend(int(pid), started))


# -- unblock ------------------------------------------------------------------------------
# How long a cancelled blocker has to let go before it is terminated. A cancelled statement
# aborts its transaction, which releases its locks; a blocker that still blocks once it is
# no longer active will not let go: idle in its transaction (nothing to cancel), or inside
# a savepoint (the cancel aborts the savepoint; the locks taken before it stay).
CANCEL_GRACE_S = 2.0
POLL_S = 0.05


@dataclass(frozen=True)
class Blocker:
    """A session that holds a lock others wait for, and the waiters it held up when
    planned: the reason to act on it, re-read before acting."""

    backend: Backend
    waiters: tuple[Backend, ...]


_BLOCKERS = f"""
    WITH waiting AS (
        SELECT a.pid, a.backend_start, {WAITED_S} AS waited_s,
               pg_catalog.pg_blocking_pids(a.pid) AS blockers
        FROM pg_catalog.pg_locks AS l
        JOIN pg_catalog.pg_stat_activity AS a ON a.pid = l.pid
        WHERE NOT l.granted AND a.datname = current_database()
          AND a.pid <> pg_backend_pid()
    )
    SELECT b.pid, b.backend_start, coalesce(b.usename, ''), coalesce(b.application_name, ''),
           coalesce(host(b.client_addr), 'local'), coalesce(b.state, ''),
           coalesce(extract(epoch FROM now() - b.xact_start), 0)::float8,
           array_agg(w.pid ORDER BY w.waited_s DESC, w.pid),
           array_agg(w.backend_start ORDER BY w.waited_s DESC, w.pid),
           array_agg(w.waited_s ORDER BY w.waited_s DESC, w.pid)
    FROM waiting AS w
    JOIN pg_catalog.pg_stat_activity AS b ON b.pid = ANY(w.blockers)
    WHERE w.waited_s > %s
      AND b.backend_type = 'client backend'
      AND b.wait_event_type IS DISTINCT FROM 'Lock'
      AND b.pid <> pg_backend_pid() AND b.application_name NOT LIKE 'opsverify%%'
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ORDER BY max(w.waited_s) DESC, 1
"""

_STILL_WAITING = """
    SELECT a.pid
    FROM unnest(%s::int[], %s::timestamptz[]) AS w(pid, started)
    JOIN pg_catalog.pg_stat_activity AS a ON a.pid = w.pid AND a.backend_start = w.started
    WHERE %s = ANY(pg_catalog.pg_blocking_pids(a.pid))
    ORDER BY 1
"""


class Unblock:
    """The runbook's "find the blocking query and cancel it": for client sessions of the
    target's database waiting on a lock longer than ``waiting_longer_than_s``, the session
    at the head of the queue (``pg_blocking_pids()``, not itself waiting on a lock; never
    opsverify's own, never a background or replication process) is cancelled, and
    terminated only if it still blocks them (a session idle in its transaction has no
    statement to cancel)."""

    name: ClassVar[str] = "unblock"

    def __init__(self, client: PostgresClient, settings: UnblockSettings) -> None:
        self.client = client
        self.target = client.name
        self.waiting_longer_than_s = settings.waiting_longer_than_s
        self.grace_s = min(CANCEL_GRACE_S, client.timeout_s / 2)

    def select(self) -> list[Item]:
        rows = self.client.query(_BLOCKERS, (self.waiting_longer_than_s,))
        return [_blocker_item(row) for row in rows]

    def drift(self, item: Item) -> str | None:
        blocker: Blocker = item.ref
        started = self._started(blocker.backend.pid)
        if started is None:
            return "the session ended"
        if started != blocker.backend.backend_start:
            return (f"pid {blocker.backend.pid} is another session now "
                    f"(started {started:%H:%M:%S})")
        if not self.still_blocking(blocker):
            return "no longer blocks the sessions it held up (they got their lock or gave up)"
        return None

    def apply(self, item: Item) -> str:
        blocker: Blocker = item.ref
        pid = blocker.backend.pid
        self.client.cancel(pid)
        if self._let_go(blocker):
            return "cancelled: the sessions it held up have their lock"
        self.client.terminate(pid)
        # pg_terminate_backend answers true once the signal is sent: success is the session
        # gone and its waiters free, read back from the server.
        if self._started(pid) == blocker.backend.backend_start:
            raise RuntimeError(f"pid {pid} still there after pg_terminate_backend")
        held = self.still_blocking(blocker)
        if held:
            raise RuntimeError(f"pid {pid} is gone but pid {held[0]} still waits for it")
        return "terminated: still blocking after the cancel"

    def still_blocking(self, blocker: Blocker) -> list[int]:
        """The planned waiters (same pid, same start) that still wait for ``blocker``."""
        rows = self.client.query(_STILL_WAITING, (
            [w.pid for w in blocker.waiters], [w.backend_start for w in blocker.waiters],
            blocker.backend.pid))
        return [int(row[0]) for row in rows]

    def _let_go(self, blocker: Blocker) -> bool:
        """Whether the cancelled blocker stopped blocking within the grace; ``False`` at
        once when it is idle in its transaction, still blocking (the cancel had nothing to
        cancel). One the cancel aborted (``idle in transaction (aborted)``) has released
        its locks, but its waiters are granted them a moment later: it gets the grace."""
        deadline = time.monotonic() + self.grace_s
        while self.still_blocking(blocker):
            state = self.client.query(
                "SELECT coalesce(state, '') FROM pg_stat_activity "
                "WHERE pid = %s AND backend_start = %s",
                (blocker.backend.pid, blocker.backend.backend_start))
            rolling_back = state and state[0][0] in ("active", "idle in transaction (aborted)")
            if (state and not rolling_back) or time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    def _started(self, pid: int) -> datetime | None:
        rows = self.client.query("SELECT backend_start FROM pg_stat_activity WHERE pid = %s",
                                 (pid,))
        return rows[0][0] if rows else None


def _blocker_item(row: tuple[Any, ...]) -> Item:
    pid, started, user, application, client, state, xact_s, pids, starts, waited = row
    blocked = ", ".join(f"pid {p} ({w:.1f} s)" for p, w in zip(pids, waited, strict=True))
    return Item(identity=f"pid {pid} started {started:%Y-%m-%dT%H:%M:%S%z}",
                before=(f"{user} {application!r} from {client}, {state}, transaction open "
                        f"{xact_s:.0f} s; blocks {blocked}"),
                ref=Blocker(Backend(int(pid), started),
                            tuple(Backend(int(p), s) for p, s in zip(pids, starts, strict=True))))


# -- vacuum -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    """A table as planned: relid and name together identify it (a table dropped and made
    again under its name has another relid)."""

    relid: int
    schema: str
    name: str
    live: int
    dead: int

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def dead_text(live: int, dead: int) -> str:
    """``1589 dead, 411 live: 79.5 % dead`` (the share test_dead_tuples judges)."""
    return f"{dead} dead, {live} live: {100.0 * dead / max(1, live + dead):.1f} % dead"


_BLOATED = """
    SELECT relid, schemaname, relname, n_live_tup, n_dead_tup
    FROM pg_catalog.pg_stat_user_tables
    WHERE n_dead_tup >= %s AND schemaname !~ '^pg_temp_'
      AND n_dead_tup::float8 / greatest(n_live_tup + n_dead_tup, 1) > %s
    ORDER BY n_dead_tup::float8 / greatest(n_live_tup + n_dead_tup, 1) DESC, 2, 3
"""
_TABLE = """
    SELECT schemaname, relname, n_live_tup, n_dead_tup, vacuum_count + autovacuum_count
    FROM pg_catalog.pg_stat_user_tables WHERE relid = %s
"""


class Vacuum:
    """The runbook's ``VACUUM ANALYZE``: ``VACUUM (ANALYZE)`` of each table whose dead rows
    are more than ``dead_tuple_ratio`` of its rows (and at least the target's
    ``dead_tuple_min_rows``, the floor test_dead_tuples judges), one table at a time, giving
    up on a table whose lock it cannot get within a ``lock_timeout``."""

    name: ClassVar[str] = "vacuum"

    def __init__(self, client: PostgresClient, settings: VacuumSettings) -> None:
        self.client = client
        self.target = client.name
        self.ratio = settings.dead_tuple_ratio
        self.min_dead = client.spec.dead_tuple_min_rows
        # A third of the deadline: a VACUUM queued behind another lock says so, and leaves
        # the statement's deadline (statement_timeout = timeout_s) for the work itself.
        self.lock_timeout_s = client.timeout_s / 3

    def select(self) -> list[Item]:
        rows = self.client.query(_BLOATED, (self.min_dead, self.ratio))
        return [Item(identity=f"{schema}.{name} (relid {relid})",
                     before=dead_text(int(live), int(dead)),
                     ref=Table(int(relid), str(schema), str(name), int(live), int(dead)))
                for relid, schema, name, live, dead in rows]

    def drift(self, item: Item) -> str | None:
        table: Table = item.ref
        rows = self.client.query(_TABLE, (table.relid,))
        if not rows:
            now = self.client.scalar("SELECT to_regclass(format('%%I.%%I', %s::text, "
                                     "%s::text))::oid::int8", (table.schema, table.name))
            return (f"the table was dropped (relid {table.relid} is gone"
                    + (f"; {table.qualified} is relid {now} now)" if now else ")"))
        schema, name, live, dead, _ = rows[0]
        if (schema, name) != (table.schema, table.name):
            return f"relid {table.relid} is {schema}.{name} now (renamed)"
        if int(dead) < self.min_dead or int(dead) <= self.ratio * max(1, live + dead):
            return (f"no longer above {100 * self.ratio:g} % dead ({dead_text(live, dead)}): "
                    "vacuumed since the plan")
        return None

    def apply(self, item: Item) -> str:
        table: Table = item.ref
        _, _, _, dead_before, vacuums_before = self.client.query(_TABLE, (table.relid,))[0]
        warnings = self.client.vacuum(table.schema, table.name, self.lock_timeout_s)
        skipped = [w for w in warnings if "skipping" in w]
        if skipped:  # not an error to the server: a WARNING, and nothing done
            raise RuntimeError(f"VACUUM skipped {table.qualified}: {skipped[0]}")
        # The statistics are updated apart from the statement (by the vacuuming backend at
        # once from PostgreSQL 15, by the statistics collector before): read them back
        # until they show this vacuum, within the deadline.
        deadline = time.monotonic() + self.client.timeout_s
        while True:
            _, _, live, dead, vacuums = self.client.query(_TABLE, (table.relid,))[0]
            if vacuums > vacuums_before and dead < dead_before:
                return f"vacuumed: {dead_text(live, dead)} (was {dead_before} dead)"
            if time.monotonic() > deadline:
                break
            time.sleep(POLL_S)
        if vacuums <= vacuums_before:
            raise RuntimeError(f"VACUUM of {table.qualified} returned, but pg_stat_user_tables "
                               f"shows no vacuum of it within {self.client.timeout_s:g} s")
        raise RuntimeError(f"VACUUM of {table.qualified} removed none of its {dead} dead rows: "
                           "an older transaction still sees them (backend_xmin in "
                           "pg_stat_activity, a replication slot's xmin)")
