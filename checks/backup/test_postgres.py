"""PostgreSQL's own backup stream: with ``archive_mode`` on, WAL segments reach the archive
(``pg_stat_archiver``): the last attempt did not fail, and the last success is recent."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.backup.service import WalArchiver, wal_archiver
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.postgres import PostgresClient


@probe
def postgres_wal_archiver(postgres: PostgresClient) -> WalArchiver:
    """``pg_stat_archiver`` with ``archive_mode`` and whether the server is a standby."""
    return wal_archiver(postgres)


@pytest.mark.daily
def test_wal_archiving(postgres: PostgresClient, postgres_wal_archiving: bool | None,
                       postgres_wal_archiver: WalArchiver, evidence: EvidenceLog) -> None:
    """WAL archiving works: no failure since the last archived segment, which is recent
    (threshold ``backup.wal_archive_age_s``; since the server started when none yet).
    A target declaring ``wal_archiving: true`` fails on a server that does not archive."""
    archiver = postgres_wal_archiver
    evidence.note("archive_mode", archiver.archive_mode)
    evidence.note("standby", archiver.in_recovery)
    if not archiver.archiving:
        why = ("archive_mode is off" if archiver.archive_mode == "off" else
               f"a standby archives only with archive_mode=always (it is "
               f"{archiver.archive_mode})")
        if postgres_wal_archiving:
            evidence.expect("WAL archiving", f"no: {why}", equals="yes",
                            source=evidence.source_of("targets", postgres.name,
                                                      "wal_archiving"))
            return
        pytest.skip(f"{why}: no WAL archive to check on this server "
                    "(declare wal_archiving: true to require one)")
    evidence.note("archived_count", archiver.archived_count)
    evidence.note("last archived WAL", archiver.last_archived_wal or "none yet")
    evidence.note("failed_count", archiver.failed_count)
    evidence.expect("last archive attempt",
                    f"failed ({archiver.last_failed_wal})" if archiver.failing else "ok",
                    equals="ok")
    evidence.within("backup.wal_archive_age_s", round(archiver.since_archived_s, 1), unit="s",
                    default=Threshold(warn=3600, crit=6 * 3600))
