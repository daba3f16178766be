"""PostgreSQL health: the runbook's ``psql -c "SELECT 1"`` and its declared queries."""

import pytest

from opsverify.evidence import EvidenceLog
from opsverify.targets.postgres import PostgresClient, SqlCheck
from opsverify.thresholds import Threshold


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_accepts_queries(postgres: PostgresClient, evidence: EvidenceLog) -> None:
    """The server answers a query in a read-only session."""
    evidence.expect("SELECT 1", postgres.scalar("SELECT 1"), equals=1)
    evidence.expect("session read-only", postgres.scalar("SHOW transaction_read_only"),
                    equals="on")
    evidence.note("server_version", postgres.scalar("SHOW server_version"))


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
    if sql_check.expect.equals is not None:
        evidence.expect(f"sql.{sql_check.name}", str(value), equals=str(sql_check.expect.equals),
                        source=where)
