"""What reading a PostgreSQL target returns (replicas, the WAL receiver, sessions,
pg_hba.conf lines, stored password kinds); split from :mod:`opsverify.targets.postgres`,
whose client builds them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Replica:
    """A row of pg_stat_replication: one standby fed by this server."""

    name: str
    client: str
    state: str
    lag_s: float
    lag_bytes: float

    def describe(self) -> str:
        return (f"{self.name} from {self.client}: {self.state}, "
                f"replay lag {self.lag_s:.1f} s / {self.lag_bytes:.0f} B")


@dataclass(frozen=True)
class WalReceiver:
    """A standby's view of its primary: receiver status and how far replay is behind."""

    in_recovery: bool
    status: str  # pg_stat_wal_receiver.status, or "not running" when there is no receiver
    sender: str
    # None: WAL waits to be replayed, but no transaction has been replayed since the standby
    # started, so there is no replay timestamp to measure from (the byte lag still counts).
    lag_s: float | None
    lag_bytes: float


@dataclass(frozen=True)
class Session:
    """A row of pg_stat_activity, as remediation sees it."""

    pid: int
    user: str
    application: str
    client: str
    state: str
    idle_s: float


@dataclass(frozen=True)
class HbaRule:
    """A line of pg_hba.conf as the server parses it now (pg_hba_file_rules)."""

    line: int
    type: str  # local | host | hostssl | hostnossl | ...
    database: str
    user: str
    address: str
    method: str
    error: str  # why the server could not parse the line, or ""

    def describe(self) -> str:
        where = f" {self.address}" if self.address else ""
        return f"line {self.line}: {self.type} {self.database} {self.user}{where} {self.method}"


@dataclass(frozen=True)
class RolePassword:
    """How a login role's password is stored: the kind only, never the value or its hash."""

    role: str
    # scram-sha-256 | md5 | empty | plain text | none (NULL: password login always fails)
    kind: str


# Classified on the server: the query never returns rolpassword, nor its hash. An md5 hash
# of the empty password ('md5' || md5('' || rolname)) is an empty password.
STORED_HASH_KINDS = """
SELECT rolname,
       CASE WHEN rolpassword IS NULL THEN 'none'
            WHEN rolpassword = '' OR rolpassword = 'md5' || md5(rolname) THEN 'empty'
            WHEN rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram-sha-256'
            WHEN rolpassword ~ '^md5[0-9a-f]{32}$' THEN 'md5'
            ELSE 'plain text' END
FROM pg_catalog.pg_authid WHERE rolcanlogin ORDER BY rolname
"""
