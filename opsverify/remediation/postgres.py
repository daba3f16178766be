"""PostgreSQL fixes, each enabled per target under ``remediation:`` in its section:

    remediation:
      terminate_idle_sessions: {older_than_s: 3600}

The actions take a write-capable :class:`~opsverify.targets.postgres.PostgresClient`, which
exists only inside an allowed destructive check (``postgres_admin``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from opsverify.remediation import Item
from opsverify.targets.base import Section

if TYPE_CHECKING:
    from opsverify.targets.postgres import PostgresClient

IDLE_STATES = ("idle", "idle in transaction", "idle in transaction (aborted)")


class TerminateIdleSessionsSettings(Section):
    # Sessions idle (or idle in a transaction) longer than this; unset: the target's
    # idle_session_max_age_s, the limit its capacity check judges.
    older_than_s: float | None = Field(default=None, gt=0)


class PostgresRemediation(Section):
    """``remediation:`` of a postgres target: an action runs only where it is listed."""

    terminate_idle_sessions: TerminateIdleSessionsSettings | None = None


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
