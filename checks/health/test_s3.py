"""S3 health: the runbooks' ``mc ls gogooku`` and ``aws s3 ls``: the bucket answers, lists,
and holds what the environment says it holds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog

if TYPE_CHECKING:
    from opsverify.targets.s3 import BucketHead, Listing, S3Client

# HeadBucket, one listing of the bucket and one of each declared prefix, prefetched in the
# probe pool.


# HeadBucket is also the target's reachability probe (fixtures/s3.py registers
# S3Client.head_bucket under the default key): this check judges that same answer.
@probe(key=lambda s3: "reachable")
def s3_bucket_head(s3: S3Client) -> BucketHead:
    return s3.head_bucket()


@probe
def s3_bucket_listing(s3: S3Client) -> Listing:
    return s3.list_objects(max_keys=s3.spec.list_sample)


@probe
def s3_prefix_listing(s3: S3Client, s3_prefix: str) -> Listing:
    return s3.list_objects(s3_prefix, max_keys=1)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_bucket_reachable(s3: S3Client, s3_bucket_head: BucketHead,
                          evidence: EvidenceLog) -> None:
    """HEAD on the bucket answers 200: it exists and these credentials may use it."""
    head = s3_bucket_head
    evidence.expect("HeadBucket status", head.status, equals=200,
                    source=evidence.source_of("targets", s3.name, "bucket"))
    if head.error:
        evidence.note("error", head.error)
    if head.region:
        evidence.note("bucket region", head.region)


@pytest.mark.daily
def test_bucket_listable(s3_bucket_listing: Listing, evidence: EvidenceLog) -> None:
    """ListObjectsV2 on the bucket succeeds; the number of keys read is the evidence."""
    listing = s3_bucket_listing
    evidence.expect("ListObjectsV2", listing.error or "ok", equals="ok")
    if listing.error:
        return
    evidence.note("objects sampled", listing.count, unit="objects")
    evidence.note("more beyond the sample", listing.truncated)
    if listing.sample:
        evidence.note("first keys", ", ".join(listing.sample))


@pytest.mark.daily
def test_prefix_present(s3: S3Client, s3_prefix: str, s3_prefix_listing: Listing,
                        evidence: EvidenceLog) -> None:
    """A prefix the environment declares holds at least one object."""
    listing = s3_prefix_listing
    where = evidence.source_of("targets", s3.name, "expect_prefixes",
                               s3.spec.expect_prefixes.index(s3_prefix))
    evidence.expect("ListObjectsV2", listing.error or "ok", equals="ok")
    if listing.error:
        return
    evidence.expect(f"objects under {s3_prefix}", listing.count, at_least=1, unit="objects",
                    source=where)
    if listing.sample:
        evidence.note("first key", listing.sample[0])
