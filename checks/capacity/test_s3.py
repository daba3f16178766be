"""S3 capacity: gogooku3's MinIO usage (``mc du``): the bucket's size and object count
against the limits its target declares (``capacity: {max_bytes, max_objects}``), and the
days until it is full."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.history import judge_trend
from fixtures.probes import probe
from opsverify.backup.presence import human_size
from opsverify.evidence import EvidenceLog
from opsverify.history import History
from opsverify.targets.s3_capacity import bucket_usage
from opsverify.thresholds import Threshold, Verdict, judge

if TYPE_CHECKING:
    from opsverify.targets.s3 import S3Client
    from opsverify.targets.s3_capacity import BucketUsage

LIMIT = Threshold(warn=80, crit=90)


# One full listing per bucket (page by page, bounded), prefetched in the probe pool.
@probe(key=lambda s3: "bucket usage")
def s3_bucket_usage(s3: S3Client) -> BucketUsage:
    return bucket_usage(s3)


def _judge(evidence: EvidenceLog, usage: BucketUsage, threshold_id: str, pct: float) -> None:
    """A complete listing is judged; a truncated one is a lower bound: judged only when
    even that crosses a threshold (then the real value does too), else a SKIP."""
    if usage.truncated:
        evidence.note("lower bound", f"{usage.truncated}: the bucket holds more, so "
                      f"{pct:g} % is a lower bound")
        verdict, _ = judge(pct, evidence.threshold(threshold_id, LIMIT))
        if verdict is Verdict.PASS:
            pytest.skip(f"{usage.truncated}: at least {pct:g} % used, a lower bound that "
                        "cannot show the bucket is within its limit")
    evidence.within(threshold_id, pct, unit="%", default=LIMIT, capacity=100)


def _listed(evidence: EvidenceLog, usage: BucketUsage) -> bool:
    evidence.expect("ListObjectsV2", usage.error or "ok", equals="ok")
    return not usage.error


@pytest.mark.daily
def test_bucket_size(s3: S3Client, s3_max_bytes: int, s3_bucket_usage: BucketUsage,
                     evidence: EvidenceLog) -> None:
    """The current objects' total size stays below the declared ``capacity.max_bytes``."""
    usage = s3_bucket_usage
    if not _listed(evidence, usage):
        return
    evidence.note("size", f"{human_size(usage.bytes)} in {usage.objects} objects")
    evidence.note("max_bytes", f"{human_size(s3_max_bytes)} "
                  f"({evidence.source_of('targets', s3.name, 'capacity', 'max_bytes')})")
    if not usage.truncated:  # a lower bound is no size to keep in the history
        evidence.note("s3.bucket_bytes", usage.bytes, unit="bytes", capacity=s3_max_bytes)
    _judge(evidence, usage, "s3.bucket_used_pct", usage.bytes_pct(s3_max_bytes))


@pytest.mark.daily
def test_object_count(s3: S3Client, s3_max_objects: int, s3_bucket_usage: BucketUsage,
                      evidence: EvidenceLog) -> None:
    """The number of current objects stays below the declared ``capacity.max_objects``."""
    usage = s3_bucket_usage
    if not _listed(evidence, usage):
        return
    evidence.note("objects", usage.objects, unit="objects")
    evidence.note("max_objects", f"{s3_max_objects} "
                  f"({evidence.source_of('targets', s3.name, 'capacity', 'max_objects')})")
    _judge(evidence, usage, "s3.objects_used_pct", usage.objects_pct(s3_max_objects))


@pytest.mark.daily
def test_bucket_trend(s3_max_bytes: int, s3_bucket_usage: BucketUsage,
                      capacity_history: History, evidence: EvidenceLog) -> None:
    """Days until the bucket reaches ``capacity.max_bytes``, from the history (Theil-Sen)."""
    usage = s3_bucket_usage
    if usage.error:  # test_bucket_size fails for it
        evidence.note("ListObjectsV2", usage.error)
        pytest.skip(f"ListObjectsV2 answered {usage.error}: no reading to add to the trend")
    if usage.truncated:
        evidence.note("lower bound", usage.truncated)
        pytest.skip(f"{usage.truncated}: a lower bound gives no trend")
    judge_trend(evidence, capacity_history, "s3.bucket_used_pct",
                usage.bytes_pct(s3_max_bytes), 100, days_left_id="s3.bucket.days_left",
                unit="%")
