"""Redis's own backup: the RDB snapshot (``redis-cli LASTSAVE``) is recent and the last
BGSAVE succeeded, for servers declared with RDB persistence."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.backup.service import RedisSnapshot, redis_snapshot
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.redis import RedisClient


@probe
def redis_rdb_snapshot(redis: RedisClient) -> RedisSnapshot:
    """LASTSAVE, the server's clock and ``INFO persistence``."""
    return redis_snapshot(redis)


@pytest.mark.daily
def test_snapshot(redis_rdb: str, redis_rdb_snapshot: RedisSnapshot,
                  evidence: EvidenceLog) -> None:
    """The last BGSAVE succeeded and LASTSAVE is recent by the server's clock (threshold
    ``backup.redis_lastsave_age_s``), unless nothing changed since: an old snapshot of an
    unchanged dataset is still complete."""
    snapshot = redis_rdb_snapshot
    evidence.expect("rdb_last_bgsave_status", snapshot.bgsave_status, equals="ok")
    evidence.note("LASTSAVE", snapshot.lastsave)
    evidence.note("changes since last save", snapshot.changes_since)
    if snapshot.in_progress:
        evidence.note("bgsave in progress", True)
    if snapshot.changes_since == 0:
        evidence.note("last save age", round(snapshot.age_s, 1), unit="s")
        return
    evidence.within("backup.redis_lastsave_age_s", round(snapshot.age_s, 1), unit="s",
                    default=Threshold(warn=2 * 3600, crit=26 * 3600))
