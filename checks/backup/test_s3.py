"""S3's own protection of what a bucket holds: versioning (an overwrite or a delete keeps
the previous version) and replication to another bucket (a copy outside this one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.backup.service import ReplicationRule, bucket_replication, bucket_versioning
from opsverify.evidence import EvidenceLog

if TYPE_CHECKING:
    from opsverify.targets.s3 import S3Client

# GetBucketVersioning and GetBucketReplication, prefetched in the probe pool.


@probe
def s3_versioning_status(s3: S3Client) -> str:
    return bucket_versioning(s3)


@probe
def s3_replication_rules(s3: S3Client) -> tuple[ReplicationRule, ...]:
    return tuple(bucket_replication(s3))


@pytest.mark.daily
def test_versioning(s3_versioning_status: str, evidence: EvidenceLog) -> None:
    """Versioning is Enabled on the bucket (not Suspended, not never enabled)."""
    evidence.expect("versioning", s3_versioning_status, equals="Enabled")


@pytest.mark.daily
def test_replication(s3_replication_rules: tuple[ReplicationRule, ...],
                     evidence: EvidenceLog) -> None:
    """The bucket replicates to another bucket: at least one enabled replication rule."""
    rules = s3_replication_rules
    enabled = [r for r in rules if r.status == "Enabled"]
    evidence.expect("enabled replication rules", len(enabled), at_least=1)
    for rule in rules:
        prefix = f" (prefix {rule.prefix!r})" if rule.prefix else ""
        evidence.note(f"rule {rule.rule or '?'}", f"{rule.status} → {rule.destination}{prefix}")
