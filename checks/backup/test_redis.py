"""Redis's own backup: the RDB snapshot (``redis-cli LASTSAVE``) is recent and the last
BGSAVE succeeded, for servers declared with RDB persistence."""

import pytest

from opsverify.backup.service import redis_snapshot
from opsverify.evidence import EvidenceLog
from opsverify.targets.redis import RedisClient
from opsverify.thresholds import Threshold


@pytest.mark.daily
def test_snapshot(redis: RedisClient, redis_rdb: str, evidence: EvidenceLog) -> None:
    """The last BGSAVE succeeded and LASTSAVE is recent by the server's clock (threshold
    ``backup.redis_lastsave_age_s``), unless nothing changed since: an old snapshot of an
    unchanged dataset is still complete."""
    snapshot = redis_snapshot(redis)
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
