"""S3's own protection of what a bucket holds: versioning (an overwrite or a delete keeps
the previous version) and replication to another bucket (a copy outside this one)."""

import pytest

from opsverify.backup.service import bucket_replication, bucket_versioning
from opsverify.evidence import EvidenceLog
from opsverify.targets.s3 import S3Client


@pytest.mark.daily
def test_versioning(s3: S3Client, evidence: EvidenceLog) -> None:
    """Versioning is Enabled on the bucket (not Suspended, not never enabled)."""
    evidence.expect("versioning", bucket_versioning(s3), equals="Enabled")


@pytest.mark.daily
def test_replication(s3: S3Client, evidence: EvidenceLog) -> None:
    """The bucket replicates to another bucket: at least one enabled replication rule."""
    rules = bucket_replication(s3)
    enabled = [r for r in rules if r.status == "Enabled"]
    evidence.expect("enabled replication rules", len(enabled), at_least=1)
    for rule in rules:
        prefix = f" (prefix {rule.prefix!r})" if rule.prefix else ""
        evidence.note(f"rule {rule.rule or '?'}", f"{rule.status} → {rule.destination}{prefix}")
