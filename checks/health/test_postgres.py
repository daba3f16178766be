"""PostgreSQL health: the runbook's ``psql -c "SELECT 1"``, version, primary/replica role,
replication, and its declared queries."""

import pytest

from opsverify.evidence import EvidenceLog
from opsverify.targets.postgres import PostgresClient, SqlCheck, version_num
from opsverify.thresholds import Threshold

MiB = 1024 * 1024
LAG_S = Threshold(warn=30, crit=300)
LAG_BYTES = Threshold(warn=16 * MiB, crit=256 * MiB)  # one WAL segment warns


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_accepts_queries(postgres: PostgresClient, evidence: EvidenceLog) -> None:
    """The server answers a query in a read-only session."""
    evidence.expect("SELECT 1", postgres.scalar("SELECT 1"), equals=1)
    evidence.expect("session read-only", postgres.scalar("SHOW transaction_read_only"),
                    equals="on")
    evidence.note("server_version", postgres.scalar("SHOW server_version"))


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_server_version(postgres: PostgresClient, postgres_min_version: str,
                        evidence: EvidenceLog) -> None:
    """The server runs at least the declared ``min_version``."""
    version, number = postgres.server_version()
    evidence.note("server_version", version)
    evidence.expect("server_version_num", number, at_least=version_num(postgres_min_version),
                    source=evidence.source_of("targets", postgres.name, "min_version"))


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_role(postgres: PostgresClient, postgres_role: str, evidence: EvidenceLog) -> None:
    """The server is the primary or the replica it is declared to be (pg_is_in_recovery)."""
    in_recovery = postgres.is_in_recovery()
    evidence.note("pg_is_in_recovery()", in_recovery)
    evidence.expect("role", "replica" if in_recovery else "primary", equals=postgres_role,
                    source=evidence.source_of("targets", postgres.name, "role"))


@pytest.mark.daily
def test_replicas_streaming(postgres: PostgresClient, postgres_expect_replicas: int,
                            evidence: EvidenceLog) -> None:
    """At least ``expect_replicas`` standbys stream from this server, and the furthest
    behind replays within the lag thresholds."""
    replicas = postgres.replicas()
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
                                evidence: EvidenceLog) -> None:
    """A replica receives WAL from its primary right now, and replays what it received
    within the lag thresholds."""
    receiver = postgres.wal_receiver()
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


def test_sql_check(postgres: PostgresClient, sql_check: SqlCheck, evidence: EvidenceLog) -> None:
    """A query declared in the environment file returns a value within its bounds.

    Cadence and category markers come from the declaration.
    """
    value = postgres.scalar(sql_check.query)
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
