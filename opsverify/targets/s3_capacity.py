"""S3 capacity: the size and object count of a bucket, from a full ``ListObjectsV2``
listing (MinIO's ``mc du``), bounded in pages and by the target's deadline.

The listing counts current objects only: noncurrent versions of a versioned bucket and
incomplete multipart uploads take space it does not see. A listing stopped at its bound
(:data:`LISTING_CAP` objects) or near the deadline is a lower bound, and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opsverify.targets.base import Deadline

# The check modules import this one in every run: the s3 type (and the aws type it
# builds on) is imported by the read, which only a run with s3 targets makes.
if TYPE_CHECKING:
    from opsverify.targets.s3 import S3Client

PAGE_SIZE = 1000  # what S3 returns at most per ListObjectsV2 page
LISTING_CAP = 100_000  # objects: 100 pages, then the result is a lower bound


@dataclass(frozen=True)
class BucketUsage:
    """The bucket's current objects as listed, or the error code the store answered."""

    bytes: int = 0
    objects: int = 0
    pages: int = 0
    truncated: str = ""  # why the listing stopped early ("" when it is complete)
    error: str = ""

    @property
    def complete(self) -> bool:
        return not self.truncated and not self.error

    def bytes_pct(self, limit: int) -> float:
        return round(100.0 * self.bytes / limit, 2)

    def objects_pct(self, limit: int) -> float:
        return round(100.0 * self.objects / limit, 2)


def bucket_usage(client: S3Client, *, cap: int | None = None,
                 page_size: int | None = None) -> BucketUsage:
    """Sum the sizes of every object of the bucket, page by page, within the target's
    deadline for the whole listing; stop early (a lower bound) at ``cap`` objects, or when
    the time left would not hold another page as slow as the slowest so far."""
    from opsverify.targets.s3 import LIST_FINDINGS

    cap = LISTING_CAP if cap is None else cap
    deadline = Deadline.start(client.timeout_s)
    params: dict[str, Any] = {"Bucket": client.spec.bucket,
                              "MaxKeys": PAGE_SIZE if page_size is None else page_size}
    size = count = pages = 0
    slowest = 0.0
    while True:
        started = time.monotonic()
        reply = client.api.read("s3", "list_objects_v2", deadline=deadline,
                                what="the bucket's object listing", grant="s3:ListBucket",
                                handled=tuple(c for c in LIST_FINDINGS if c != "AccessDenied"),
                                **params)
        if reply.error:
            return BucketUsage(error=reply.error)
        slowest = max(slowest, time.monotonic() - started)
        pages += 1
        for item in reply.data.get("Contents", []):
            count += 1
            size += int(item.get("Size", 0))
        token = reply.data.get("NextContinuationToken")
        if not reply.data.get("IsTruncated") or not token:
            return BucketUsage(size, count, pages)
        if count >= cap:
            return BucketUsage(size, count, pages, truncated=(
                f"listing stopped after {pages} pages ({count} objects; the bound is {cap})"))
        if deadline.remaining() < 2 * slowest:
            return BucketUsage(size, count, pages, truncated=(
                f"listing stopped after {pages} pages ({count} objects) to keep within the "
                f"{client.timeout_s:g} s deadline"))
        params["ContinuationToken"] = token
