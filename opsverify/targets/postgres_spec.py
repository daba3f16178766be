"""The ``postgres`` section of an environment file: the target's model, its declared
``sql_checks`` and their bounds; split from :mod:`opsverify.targets.postgres`, whose client
reads the server it names."""

from __future__ import annotations

import re
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, field_validator, model_validator

from opsverify.remediation.postgres import PostgresRemediation
from opsverify.targets.base import DeclaredCheck, Section, TargetSpec


class Bounds(Section):
    """``{max: 0}``, ``{min: 1}``, ``{equals: 'on'}`` or a combination."""

    max: float | None = None
    min: float | None = None
    equals: bool | int | float | str | None = None

    @model_validator(mode="after")
    def _something(self) -> Bounds:
        if self.max is None and self.min is None and self.equals is None:
            raise ValueError("give max, min or equals")
        return self

    def violated_by(self, value: Any) -> str | None:
        """Why ``value`` is outside these bounds, or ``None``."""
        if self.equals is not None and not same_value(value, self.equals):
            return f"expected = {self.equals}"
        number = _as_number(value)
        if (self.max is not None or self.min is not None) and number is None:
            return "expected a number"
        if self.max is not None and number is not None and number > self.max:
            return f"expected ≤ {self.max:g}"
        if self.min is not None and number is not None and number < self.min:
            return f"expected ≥ {self.min:g}"
        return None


def same_value(value: Any, expected: Any) -> bool:
    """``1 == 1.0`` and ``'on' == 'on'``; a number is compared as a number, not as text."""
    left, right = _as_number(value), _as_number(expected)
    if left is not None and right is not None and not isinstance(value, str | bool) and \
            not isinstance(expected, str | bool):
        return left == right
    return str(value) == str(expected)


class SqlCheck(DeclaredCheck):
    """A runbook query whose single value must stay within bounds."""

    query: str
    expect: Bounds
    warn: Bounds | None = None
    unit: str = ""


class PostgresSecurity(Section):
    """``security:`` of a postgres target: every check of checks/security/test_postgres.py
    is on unless switched off here by its name (``{ssl: false}`` for a server reached only
    over a unix socket)."""

    ssl: bool = True
    password_encryption: bool = True
    log_connections: bool = True
    hba_auth: bool = True  # no trust or password lines in pg_hba.conf
    superusers: bool = True
    password_hashes: bool = True  # no login role with an md5, empty or plain-text password
    # Superuser roles this server may have (the bootstrap superuser is one).
    max_superusers: int = Field(default=1, ge=0)


class PostgresTarget(TargetSpec):
    type: Literal["postgres"]
    dsn: str
    # What pg_is_in_recovery() must say; a replica also gets its WAL receiver checked.
    role: Literal["primary", "replica"] | None = None
    # ``14`` or ``"14.10"`` (quoted: YAML reads 14.10 as the number 14.1).
    min_version: int | str | None = None
    # Streaming replicas this server must feed (pg_stat_replication), lag judged by
    # thresholds postgres.replication_lag_s and postgres.replication_lag_bytes.
    expect_replicas: int | None = Field(default=None, ge=0)
    # A client session idle longer than this counts as stale (runbook: 1 hour).
    idle_session_max_age_s: float = Field(default=3600, gt=0)
    # WAL archiving (PITR): true = required, a server that does not archive FAILs; false =
    # not checked (a replica that does not archive); unset = checked where it is switched on.
    wal_archiving: bool | None = None
    # What the DSN's database may grow to (its volume, its plan's quota), judged by
    # postgres.database_size_pct; unset: the database size is not checked.
    capacity_bytes: int | None = Field(default=None, gt=0)
    # Noise floors of the weekly review (runbook: n_dead_tup > 1000, indexes over 10 MB).
    dead_tuple_min_rows: int = Field(default=1000, ge=0)
    unused_index_min_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    sql_checks: list[SqlCheck] = Field(default_factory=list)
    security: PostgresSecurity = Field(default_factory=PostgresSecurity)
    # Fixes checks/remediation/ may apply here (each also needs -m destructive and
    # --allow-destructive): {terminate_idle_sessions: {older_than_s: 3600}}.
    remediation: PostgresRemediation = Field(default_factory=PostgresRemediation)

    @field_validator("min_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError("quote a version with a minor number, e.g. '14.10' "
                             "(YAML reads 14.10 as the number 14.1)")
        if isinstance(value, str) and not re.fullmatch(r"\d+(\.\d+){0,2}", value.strip()):
            raise ValueError("expected a version such as 14 or '14.10'")
        return value

    def min_version_num(self) -> int | None:
        """``min_version`` as ``server_version_num`` counts it: 14 -> 140000, '9.6' -> 90600."""
        if self.min_version is None:
            return None
        return version_num(str(self.min_version))

    @field_validator("dsn")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            conninfo_to_dict(value)
        except psycopg.ProgrammingError:
            raise ValueError("not a PostgreSQL connection string or URL") from None
        return value

    def address(self) -> str:
        params = conninfo_to_dict(self.dsn)
        host = str(params.get("host") or "localhost")
        port = str(params.get("port") or "5432")
        dbname = params.get("dbname")
        return f"{host}:{port}" + (f"/{dbname}" if dbname else "")

    def secrets(self) -> list[str]:
        return [self.dsn, self.password() or ""]

    def password(self) -> str | None:
        value = conninfo_to_dict(self.dsn).get("password")
        return None if value is None else str(value)


def version_num(version: str) -> int:
    """``'14.10'`` -> 140010, ``'15'`` -> 150000, ``'9.6.3'`` -> 90603 (before 10, two
    numbers made the major version)."""
    parts = [int(p) for p in version.strip().split(".")] + [0, 0]
    if parts[0] >= 10:
        return parts[0] * 10000 + parts[1]
    return parts[0] * 10000 + parts[1] * 100 + parts[2]


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
