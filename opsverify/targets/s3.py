"""S3 targets: the ``s3`` section (AWS S3 or an S3-compatible store such as MinIO) and a
client that can only ask whether a bucket answers, list it, and read its access settings
(public access block, policy, ACL, default encryption) for checks/security/test_s3.py.

Credentials, deadlines, the read-only guard and error translation are shared with the
``aws`` type (:mod:`opsverify.targets.aws`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from opsverify.targets.aws_api import AwsApi, AwsTargetSpec
from opsverify.targets.base import Deadline, Section

# Answers about the bucket itself, which are findings (FAIL), not "could not evaluate".
HEAD_FINDINGS = ("403", "404", "301", "400", "NoSuchBucket", "Forbidden", "PermanentRedirect")
LIST_FINDINGS = ("NoSuchBucket", "AccessDenied", "PermanentRedirect",
                 "AuthorizationHeaderMalformed", "AllAccessDisabled")


# What an S3-compatible store that lacks an API answers (MinIO has no public access block).
UNSUPPORTED = ("NotImplemented", "XNotImplemented")
PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                       "RestrictPublicBuckets")
PUBLIC_GROUPS = {"http://acs.amazonaws.com/groups/global/AllUsers": "AllUsers",
                 "http://acs.amazonaws.com/groups/global/AuthenticatedUsers":
                     "AuthenticatedUsers"}
# Condition keys that confine an Allow to known callers (an account, a network, an
# organisation): a statement with one is not public (Prowler's is_condition_block_restrictive).
RESTRICTING_KEYS = frozenset(k.lower() for k in (
    "aws:SourceArn", "aws:SourceAccount", "aws:SourceOwner", "aws:SourceIp", "aws:SourceVpc",
    "aws:SourceVpce", "aws:PrincipalAccount", "aws:PrincipalArn", "aws:PrincipalOrgID",
    "aws:PrincipalOrgPaths", "aws:userid", "aws:username", "s3:DataAccessPointAccount",
    "s3:DataAccessPointArn"))


class S3Security(Section):
    """``security:`` of an s3 target: every check of checks/security/test_s3.py is on unless
    switched off here by its name (a static website bucket: ``{public_access_block: false,
    no_public_grants: false}``)."""

    public_access_block: bool = True  # all four flags, on the bucket or the account
    no_public_grants: bool = True  # no policy or ACL grant to * / AllUsers
    default_encryption: bool = True
    tls_only: bool = True  # a policy denying aws:SecureTransport false (WARN when missing)


class S3Capacity(Section):
    """``capacity:`` of an s3 target: the limits the bucket fills (a MinIO quota, a budget),
    judged by checks/capacity/test_s3.py: ``{max_bytes: 107374182400, max_objects: 1000000}``."""

    max_bytes: int | None = Field(default=None, ge=1)  # total size of the current objects
    max_objects: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _something(self) -> S3Capacity:
        if self.max_bytes is None and self.max_objects is None:
            raise ValueError("give max_bytes, max_objects or both")
        return self


class S3Target(AwsTargetSpec):
    type: Literal["s3"]
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]+$")
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    # Key prefixes that must hold at least one object: [backups/, datasets/]
    expect_prefixes: list[str] = Field(default_factory=list)
    # Keys the listing check reads (one page; S3 returns at most 1000).
    list_sample: int = Field(default=1000, ge=1, le=1000)
    security: S3Security = Field(default_factory=S3Security)
    capacity: S3Capacity | None = None

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

    # -- security reads: settings only, never an object -----------------------------------
    def public_access_block(self) -> PublicAccessBlock:
        """The bucket's public access block and, when it does not set all four flags, the
        account's (S3 Control), which applies to every bucket."""
        deadline = Deadline.start(self.timeout_s)
        reply = self.api.read("s3", "get_public_access_block", Bucket=self.spec.bucket,
                              deadline=deadline, what="the bucket's public access block",
                              grant="s3:GetBucketPublicAccessBlock",
                              handled=("NoSuchPublicAccessBlockConfiguration", *UNSUPPORTED))
        if reply.error in UNSUPPORTED:
            return PublicAccessBlock(None, None, unsupported="GetPublicAccessBlock")
        bucket = None if reply.error else _flags(reply.data)
        if bucket is not None and len(bucket) == len(PUBLIC_ACCESS_FLAGS):
            return PublicAccessBlock(bucket, None)
        if self.spec.endpoint_url is not None:
            # S3 Control puts the account id in front of the endpoint's host name
            # (123456789012.127.0.0.1): behind an endpoint override only the bucket counts.
            return PublicAccessBlock(bucket, None, account_read=False)
        account_id = str(self.api.call("sts", "get_caller_identity",
                                       deadline=deadline).data.get("Account", ""))
        reply = self.api.read("s3control", "get_public_access_block", AccountId=account_id,
                              deadline=deadline, what="the account's public access block",
                              grant="s3:GetAccountPublicAccessBlock",
                              handled=("NoSuchPublicAccessBlockConfiguration", *UNSUPPORTED))
        return PublicAccessBlock(bucket, None if reply.error else _flags(reply.data))

    def bucket_policy(self) -> BucketPolicy:
        """The bucket policy document ("" when the bucket has none)."""
        reply = self.api.read("s3", "get_bucket_policy", Bucket=self.spec.bucket,
                              what="the bucket policy", grant="s3:GetBucketPolicy",
                              handled=("NoSuchBucketPolicy", *UNSUPPORTED))
        if reply.error in UNSUPPORTED:
            return BucketPolicy("", unsupported="GetBucketPolicy")
        return BucketPolicy("" if reply.error else str(reply.data.get("Policy", "")))

    def bucket_acl(self) -> BucketAcl:
        """The bucket ACL's grants: ``(grantee, permission)``, groups by their short name."""
        reply = self.api.read("s3", "get_bucket_acl", Bucket=self.spec.bucket,
                              what="the bucket ACL", grant="s3:GetBucketAcl",
                              handled=UNSUPPORTED)
        if reply.error:
            return BucketAcl((), unsupported="GetBucketAcl")
        grants = []
        for grant in reply.data.get("Grants", []):
            grantee = grant.get("Grantee", {})
            who = grantee.get("URI") or grantee.get("ID") or grantee.get("EmailAddress") or "?"
            grants.append((PUBLIC_GROUPS.get(str(who), str(who)), str(grant.get("Permission"))))
        return BucketAcl(tuple(grants))

    def bucket_encryption(self) -> BucketEncryption:
        """The default encryption algorithms of the bucket (``()`` when none is set)."""
        reply = self.api.read("s3", "get_bucket_encryption", Bucket=self.spec.bucket,
                              what="the bucket's default encryption",
                              grant="s3:GetEncryptionConfiguration",
                              handled=("ServerSideEncryptionConfigurationNotFoundError",
                                       *UNSUPPORTED))
        if reply.error in UNSUPPORTED:
            return BucketEncryption((), unsupported="GetBucketEncryption")
        rules = reply.data.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        return BucketEncryption(tuple(
            str(r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm", ""))
            for r in rules if r.get("ApplyServerSideEncryptionByDefault")))

    def close(self) -> None:
        self.api.close()


def _flags(data: dict[str, Any]) -> tuple[str, ...]:
    config = data.get("PublicAccessBlockConfiguration", {})
    return tuple(flag for flag in PUBLIC_ACCESS_FLAGS if config.get(flag) is True)


@dataclass(frozen=True)
class PublicAccessBlock:
    """Flags set on the bucket and on the account; ``None``: that level has no
    configuration (or was not read: the bucket's sets all four)."""

    bucket: tuple[str, ...] | None
    account: tuple[str, ...] | None
    unsupported: str = ""  # the API an S3-compatible store does not implement
    account_read: bool = True  # False: behind an endpoint override S3 Control is not read

    def missing(self) -> tuple[str, ...]:
        on = set(self.bucket or ()) | set(self.account or ())
        return tuple(flag for flag in PUBLIC_ACCESS_FLAGS if flag not in on)


@dataclass(frozen=True)
class BucketPolicy:
    document: str  # the policy JSON; "" when the bucket has none
    unsupported: str = ""

    def statements(self) -> list[dict[str, Any]]:
        if not self.document:
            return []
        parsed = json.loads(self.document)
        found = parsed.get("Statement", []) if isinstance(parsed, dict) else []
        return [found] if isinstance(found, dict) else [s for s in found if isinstance(s, dict)]

    def public_statements(self) -> list[str]:
        """Allow statements for anyone (``*``) that no restricting condition confines."""
        return [_describe(s) for s in self.statements()
                if s.get("Effect") == "Allow" and _anyone(s.get("Principal"))
                and not _restricted(s.get("Condition", {}))]

    def denies_insecure_transport(self) -> list[str]:
        """Deny statements for everyone on every S3 action when aws:SecureTransport is
        false: the bucket refuses plain HTTP."""
        return [_describe(s) for s in self.statements()
                if s.get("Effect") == "Deny" and _anyone(s.get("Principal"))
                and {"s3:*", "*"} & set(_listed(s.get("Action")))
                and _insecure_transport(s.get("Condition", {}))]


@dataclass(frozen=True)
class BucketAcl:
    grants: tuple[tuple[str, str], ...]  # (grantee, permission)
    unsupported: str = ""

    def public_grants(self) -> list[str]:
        return [f"{who}: {permission}" for who, permission in self.grants
                if who in PUBLIC_GROUPS.values()]


@dataclass(frozen=True)
class BucketEncryption:
    algorithms: tuple[str, ...]  # AES256, aws:kms, aws:kms:dsse; () when not set
    unsupported: str = ""


def _listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [] if value is None else [
        str(value)]


def _anyone(principal: Any) -> bool:
    if principal == "*":
        return True
    return isinstance(principal, dict) and "*" in _listed(principal.get("AWS"))


def _restricted(condition: Any) -> bool:
    if not isinstance(condition, dict):
        return False
    return any(isinstance(keys, dict) and any(k.lower() in RESTRICTING_KEYS for k in keys)
               for keys in condition.values())


def _insecure_transport(condition: Any) -> bool:
    if not isinstance(condition, dict):
        return False
    for operator in ("Bool", "BoolIfExists"):
        keys = condition.get(operator, {})
        if isinstance(keys, dict):
            for key, value in keys.items():
                if key.lower() == "aws:securetransport" and "false" in [
                        v.lower() for v in _listed(value)]:
                    return True
    return False


def _describe(statement: dict[str, Any]) -> str:
    sid = statement.get("Sid")
    actions = ", ".join(_listed(statement.get("Action"))) or "?"
    return f"{sid + ': ' if sid else ''}{statement.get('Effect')} {actions} to *"
