"""S3 targets: the ``s3`` section (AWS S3 or an S3-compatible store such as MinIO) and a
client that can only ask whether a bucket answers and list it.

Credentials, deadlines, the read-only guard and error translation are shared with the
``aws`` type (:mod:`opsverify.targets.aws`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from opsverify.targets.aws import AwsApi, AwsTargetSpec

# Answers about the bucket itself, which are findings (FAIL), not "could not evaluate".
HEAD_FINDINGS = ("403", "404", "301", "400", "NoSuchBucket", "Forbidden", "PermanentRedirect")
LIST_FINDINGS = ("NoSuchBucket", "AccessDenied", "PermanentRedirect",
                 "AuthorizationHeaderMalformed", "AllAccessDisabled")


class S3Target(AwsTargetSpec):
    type: Literal["s3"]
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]+$")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    # Key prefixes that must hold at least one object: [backups/, datasets/]
    expect_prefixes: list[str] = Field(default_factory=list)
    # Keys the listing check reads (one page; S3 returns at most 1000).
    list_sample: int = Field(default=1000, ge=1, le=1000)

    def address(self) -> str:
        host = self.endpoint_address() or f"s3.{self.region}.amazonaws.com"
        return f"{host}/{self.bucket}"


@dataclass(frozen=True)
class BucketHead:
    """HEAD of the bucket: 200 when it exists and these credentials may use it."""

    status: int
    error: str = ""
    region: str = ""


@dataclass(frozen=True)
class Listing:
    """One page of ``ListObjectsV2``, or the error code the store answered with."""

    prefix: str
    error: str = ""
    count: int = 0
    truncated: bool = False
    sample: tuple[str, ...] = ()


class S3Client:
    """HeadBucket and ListObjectsV2 for one bucket, and nothing else, under the target's
    deadline; the underlying boto3 client refuses every operation that is not a read."""

    def __init__(self, name: str, spec: S3Target, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        # S3-compatible stores (MinIO) serve buckets as paths, not as host names.
        style = "path" if spec.endpoint_url else "auto"
        self.api = AwsApi(name, spec, timeout_s, where=f"s3://{spec.bucket}",
                          s3={"addressing_style": style})

    def head_bucket(self) -> BucketHead:
        reply = self.api.call("s3", "head_bucket", Bucket=self.spec.bucket,
                              handled=HEAD_FINDINGS)
        if reply.error:
            status = int(reply.error) if reply.error.isdigit() else reply.status
            return BucketHead(status, reply.error)
        meta = reply.data.get("ResponseMetadata", {})
        region = reply.data.get("BucketRegion") or meta.get("HTTPHeaders", {}).get(
            "x-amz-bucket-region", "")
        return BucketHead(int(meta.get("HTTPStatusCode", 0)), region=str(region))

    def list_objects(self, prefix: str = "", max_keys: int = 1000) -> Listing:
        """The first page of keys under ``prefix`` (at most ``max_keys``)."""
        reply = self.api.call("s3", "list_objects_v2", Bucket=self.spec.bucket, Prefix=prefix,
                              MaxKeys=max_keys, handled=LIST_FINDINGS)
        if reply.error:
            return Listing(prefix, reply.error)
        keys = [str(item["Key"]) for item in reply.data.get("Contents", [])]
        return Listing(prefix, count=int(reply.data.get("KeyCount", len(keys))),
                       truncated=bool(reply.data.get("IsTruncated")), sample=tuple(keys[:3]))

    def close(self) -> None:
        self.api.close()
