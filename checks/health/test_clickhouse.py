"""ClickHouse health: the runbook's ``SELECT 1`` and ``SHOW TABLES FROM gogooku3``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog

if TYPE_CHECKING:
    from opsverify.targets.clickhouse import Answer, ClickHouseClient, Database

# Every read here is a fixed GET or query (or the listing of a declared database),
# prefetched in the probe pool.


@dataclass(frozen=True)
class QueryReading:
    """``SELECT 1`` for the monitoring user (``refused`` says why not) and what the session
    and server say about themselves."""

    refused: str | None = None
    value: Any = None
    readonly: Any = None
    version: Any = None
    uptime_s: Any = None


@probe
def clickhouse_ping_answer(clickhouse: ClickHouseClient) -> Answer:
    return clickhouse.ping()


@probe
def clickhouse_query_reading(clickhouse: ClickHouseClient) -> QueryReading:
    # Not at the top: a run without clickhouse targets never imports the type.
    from opsverify.targets.clickhouse import QueryRefused

    try:
        value = clickhouse.scalar("SELECT 1")
    except QueryRefused as exc:
        return QueryReading(refused=exc.cause)
    return QueryReading(
        value=value,
        readonly=clickhouse.scalar("SELECT value FROM system.settings WHERE name = 'readonly'"),
        version=clickhouse.scalar("SELECT version()"),
        uptime_s=clickhouse.scalar("SELECT uptime()"))


@probe
def clickhouse_tables(clickhouse: ClickHouseClient,
                      clickhouse_database: Database) -> frozenset[str] | None:
    """The tables of a declared database, or ``None`` if it does not exist."""
    present = clickhouse.tables(clickhouse_database.name)
    return None if present is None else frozenset(present)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_ping(clickhouse_ping_answer: Answer, evidence: EvidenceLog) -> None:
    """``GET /ping`` answers 200 ``Ok.``: the HTTP interface is up."""
    answer = clickhouse_ping_answer
    evidence.note("GET /ping response time", answer.elapsed_ms, unit="ms")
    evidence.expect("GET /ping status", answer.status, equals=200)
    evidence.expect("GET /ping body", answer.text.strip()[:80], equals="Ok.")


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_accepts_queries(clickhouse_query_reading: QueryReading,
                         evidence: EvidenceLog) -> None:
    """The server runs ``SELECT 1`` for the monitoring user, in a read-only session."""
    reading = clickhouse_query_reading
    if reading.refused is not None:
        evidence.expect("SELECT 1", f"refused: {reading.refused}", equals=1)
        return
    evidence.expect("SELECT 1", reading.value, equals=1)
    evidence.expect("session readonly", int(reading.readonly), at_least=1)
    evidence.note("version", reading.version)
    evidence.note("uptime", reading.uptime_s, unit="s")


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_tables_exist(clickhouse: ClickHouseClient, clickhouse_database: Database,
                      clickhouse_tables: frozenset[str] | None, evidence: EvidenceLog) -> None:
    """A declared database exists and holds every declared table."""
    db = clickhouse_database
    where = evidence.source_of("targets", clickhouse.name, "databases", db.name)
    present = clickhouse_tables
    evidence.expect(f"database {db.name} exists", present is not None, equals=True,
                    source=where)
    if present is None:
        return
    missing = sorted(set(db.tables) - present)
    evidence.expect(f"{db.name}: missing tables", ", ".join(missing) or "none",
                    equals="none", source=where)
    evidence.note(f"{db.name}: tables", len(present))
