"""DynamoDB's own backups: every table of the region has point-in-time recovery on and a
recent on-demand backup (the T-Developer runbook's "verify the table backups")."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.backup.service import TableBackups, dynamodb_tables
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.aws import AwsClient


# Both checks judge one reading of the region's tables (ListTables, then each table's
# continuous backups and backups), prefetched in the probe pool.
@probe
def aws_dynamodb_tables(aws: AwsClient) -> tuple[tuple[TableBackups, ...], bool]:
    tables, capped = dynamodb_tables(aws)
    return tuple(tables), capped


@pytest.mark.daily
def test_dynamodb_pitr(aws: AwsClient,
                       aws_dynamodb_tables: tuple[tuple[TableBackups, ...], bool],
                       evidence: EvidenceLog) -> None:
    """Point-in-time recovery is enabled on every DynamoDB table."""
    tables, capped = aws_dynamodb_tables
    if not tables:
        pytest.skip(f"no DynamoDB table in {aws.spec.region}: nothing to back up")
    evidence.note("tables", len(tables) if not capped else f"{len(tables)} (capped)")
    for table in tables:
        evidence.expect(f"{table.table}: point-in-time recovery", table.pitr, equals="ENABLED")


@pytest.mark.daily
def test_dynamodb_backup_recent(aws: AwsClient,
                                aws_dynamodb_tables: tuple[tuple[TableBackups, ...], bool],
                                evidence: EvidenceLog) -> None:
    """Every DynamoDB table has an available on-demand backup, and the newest is recent
    (threshold ``backup.dynamodb_backup_age_h``)."""
    tables, capped = aws_dynamodb_tables
    if not tables:
        pytest.skip(f"no DynamoDB table in {aws.spec.region}: nothing to back up")
    evidence.note("tables", len(tables) if not capped else f"{len(tables)} (capped)")
    backed_up = []
    for table in tables:
        if table.newest_backup_age_h is None:
            evidence.expect(f"{table.table}: on-demand backups", 0, at_least=1)
            continue
        backed_up.append(table)
        evidence.note(f"{table.table}: newest backup",
                      f"{table.newest_backup}, {table.newest_backup_age_h:.1f} h old")
    if backed_up:
        stalest = max(backed_up, key=lambda t: t.newest_backup_age_h or 0.0)
        evidence.note("stalest table", stalest.table)
        evidence.within("backup.dynamodb_backup_age_h",
                        round(stalest.newest_backup_age_h or 0.0, 4), unit="h",
                        default=Threshold(warn=26, crit=50))
