"""PostgreSQL health: the runbook's ``psql -c "SELECT 1"``, version, primary/replica role,
replication, and its declared queries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.postgres import PostgresClient, Replica, SqlCheck, WalReceiver

MiB = 1024 * 1024
LAG_S = Threshold(warn=30, crit=300)
LAG_BYTES = Threshold(warn=16 * MiB, crit=256 * MiB)  # one WAL segment warns

# Every read here is a fixed query, or a declared one, prefetched in the probe pool.


@dataclass(frozen=True)
class SessionReading:
    """What a read-only session answers: ``SELECT 1``, its read-only flag, the version."""

    select_1: Any
    read_only: Any
    server_version: Any


@probe
def postgres_session_reading(postgres: PostgresClient) -> SessionReading:
    return SessionReading(postgres.scalar("SELECT 1"),
                          postgres.scalar("SHOW transaction_read_only"),
                          postgres.scalar("SHOW server_version"))


@probe
def postgres_server_version(postgres: PostgresClient) -> tuple[str, int]:
    return postgres.server_version()


@probe
def postgres_in_recovery(postgres: PostgresClient) -> bool:
    return postgres.is_in_recovery()


@probe
def postgres_replicas(postgres: PostgresClient) -> tuple[Replica, ...]:
    return tuple(postgres.replicas())


@probe
def postgres_wal_receiver(postgres: PostgresClient) -> WalReceiver:
    return postgres.wal_receiver()


@probe
def postgres_sql_value(postgres: PostgresClient, sql_check: SqlCheck) -> Any:
    # A bad or writing query is the check's FAIL: the probe's error is raised in its body.
    return postgres.scalar(sql_check.query)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_accepts_queries(postgres_session_reading: SessionReading,
                         evidence: EvidenceLog) -> None:
    """The server answers a query in a read-only session."""
    reading = postgres_session_reading
    evidence.expect("SELECT 1", reading.select_1, equals=1)
    evidence.expect("session read-only", reading.read_only, equals="on")
    evidence.note("server_version", reading.server_version)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_server_version(postgres: PostgresClient, postgres_min_version: str,
                        postgres_server_version: tuple[str, int],
                        evidence: EvidenceLog) -> None:
    """The server runs at least the declared ``min_version``."""
    # Not at the top: a run without postgres targets never imports the type.
    from opsverify.targets.postgres import version_num

    version, number = postgres_server_version
    evidence.note("server_version", version)
    evidence.expect("server_version_num", number, at_least=version_num(postgres_min_version),
                    source=evidence.source_of("targets", postgres.name, "min_version"))


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_role(postgres: PostgresClient, postgres_role: str, postgres_in_recovery: bool,
              evidence: EvidenceLog) -> None:
    """The server is the primary or the replica it is declared to be (pg_is_in_recovery)."""
    in_recovery = postgres_in_recovery
    evidence.note("pg_is_in_recovery()", in_recovery)
    evidence.expect("role", "replica" if in_recovery else "primary", equals=postgres_role,
                    source=evidence.source_of("targets", postgres.name, "role"))


@pytest.mark.daily
def test_replicas_streaming(postgres: PostgresClient, postgres_expect_replicas: int,
                            postgres_replicas: tuple[Replica, ...],
                            evidence: EvidenceLog) -> None:
    """At least ``expect_replicas`` standbys stream from this server, and the furthest
    behind replays within the lag thresholds."""
    replicas = postgres_replicas
    for replica in replicas:
        evidence.note("replica", replica.describe())
    streaming = [r for r in replicas if r.state == "streaming"]
    evidence.expect("streaming replicas", len(streaming), at_least=postgres_expect_replicas,
                    source=evidence.source_of("targets", postgres.name, "expect_replicas"))
    if streaming:
        evidence.within("postgres.replication_lag_s", max(r.lag_s for r in streaming),
                        unit="s", default=LAG_S)
        evidence.within("postgres.replication_lag_bytes",
                        max(r.lag_bytes for r in streaming), unit="B", default=LAG_BYTES)


@pytest.mark.daily
def test_wal_receiver_streaming(postgres: PostgresClient, postgres_replica: str,
                                postgres_wal_receiver: WalReceiver,
                                evidence: EvidenceLog) -> None:
    """A replica receives WAL from its primary right now, and replays what it received
    within the lag thresholds."""
    receiver = postgres_wal_receiver
    if receiver.sender:
        evidence.note("primary", receiver.sender)
    evidence.expect("WAL receiver status", receiver.status, equals="streaming",
                    source=evidence.source_of("targets", postgres.name, "role"))
    if receiver.lag_s is None:
        evidence.note("postgres.replication_lag_s",
                      "unknown: no transaction replayed since the standby started")
    else:
        evidence.within("postgres.replication_lag_s", receiver.lag_s, unit="s", default=LAG_S)
    evidence.within("postgres.replication_lag_bytes", receiver.lag_bytes, unit="B",
                    default=LAG_BYTES)


def test_sql_check(postgres: PostgresClient, sql_check: SqlCheck,
                   postgres_sql_value: Any, evidence: EvidenceLog) -> None:
    """A query declared in the environment file returns a value within its bounds.

    Cadence and category markers come from the declaration.
    """
    value = postgres_sql_value
    index = postgres.spec.sql_checks.index(sql_check)
    where = evidence.source_of("targets", postgres.name, "sql_checks", index)
    warn = sql_check.warn
    for direction in ("max", "min"):
        crit_limit = getattr(sql_check.expect, direction)
        warn_limit = getattr(warn, direction) if warn else None
        if crit_limit is None and warn_limit is None:
            continue
        evidence.within(
            f"sql.{sql_check.name}", float(value), unit=sql_check.unit,
            default=Threshold(warn=warn_limit, crit=crit_limit, direction=direction),
            default_source=where,
        )
    expected = sql_check.expect.equals
    if expected is not None:
        # A number is compared as a number (1 = 1.0), anything else as text ('on').
        numeric = not isinstance(expected, str | bool)
        evidence.expect(f"sql.{sql_check.name}", float(value) if numeric else str(value),
                        equals=float(expected) if numeric else str(expected), source=where)
