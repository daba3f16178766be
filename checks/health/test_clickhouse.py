"""ClickHouse health: the runbook's ``SELECT 1`` and ``SHOW TABLES FROM gogooku3``."""

import pytest

from opsverify.evidence import EvidenceLog
from opsverify.targets.clickhouse import ClickHouseClient, Database, QueryRefused


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_ping(clickhouse: ClickHouseClient, evidence: EvidenceLog) -> None:
    """``GET /ping`` answers 200 ``Ok.``: the HTTP interface is up."""
    answer = clickhouse.ping()
    evidence.note("GET /ping response time", answer.elapsed_ms, unit="ms")
    evidence.expect("GET /ping status", answer.status, equals=200)
    evidence.expect("GET /ping body", answer.text.strip()[:80], equals="Ok.")


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_accepts_queries(clickhouse: ClickHouseClient, evidence: EvidenceLog) -> None:
    """The server runs ``SELECT 1`` for the monitoring user, in a read-only session."""
    try:
        value = clickhouse.scalar("SELECT 1")
    except QueryRefused as exc:
        evidence.expect("SELECT 1", f"refused: {exc.cause}", equals=1)
        return
    evidence.expect("SELECT 1", value, equals=1)
    readonly = clickhouse.scalar("SELECT value FROM system.settings WHERE name = 'readonly'")
    evidence.expect("session readonly", int(readonly), at_least=1)
    evidence.note("version", clickhouse.scalar("SELECT version()"))
    evidence.note("uptime", clickhouse.scalar("SELECT uptime()"), unit="s")


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_tables_exist(clickhouse: ClickHouseClient, clickhouse_database: Database,
                      evidence: EvidenceLog) -> None:
    """A declared database exists and holds every declared table."""
    db = clickhouse_database
    where = evidence.source_of("targets", clickhouse.name, "databases", db.name)
    present = clickhouse.tables(db.name)
    evidence.expect(f"database {db.name} exists", present is not None, equals=True,
                    source=where)
    if present is None:
        return
    missing = sorted(set(db.tables) - present)
    evidence.expect(f"{db.name}: missing tables", ", ".join(missing) or "none",
                    equals="none", source=where)
    evidence.note(f"{db.name}: tables", len(present))
