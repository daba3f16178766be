"""S3 security, after Prowler's s3 checks: the bucket blocks public access, neither its
policy nor its ACL grants anything to everyone, objects are encrypted by default, and plain
HTTP is refused (a missing TLS-only policy is a WARN).

Every check applies to every s3 target; ``security: {tls_only: false}`` (by check name)
switches one off. What the credentials may not read is a SKIP naming the permission.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.s3 import (
        BucketAcl,
        BucketEncryption,
        BucketPolicy,
        PublicAccessBlock,
        S3Client,
    )

# GetPublicAccessBlock (and the account's, when the bucket's is incomplete),
# GetBucketPolicy, GetBucketAcl and GetBucketEncryption, prefetched in the probe pool.


@probe
def security_s3_public_access_block(s3: S3Client) -> PublicAccessBlock:
    return s3.public_access_block()


@probe
def security_s3_policy(s3: S3Client) -> BucketPolicy:
    return s3.bucket_policy()


@probe
def security_s3_acl(s3: S3Client) -> BucketAcl:
    return s3.bucket_acl()


@probe
def security_s3_encryption(s3: S3Client) -> BucketEncryption:
    return s3.bucket_encryption()


def _unsupported(api: str, key: str) -> None:
    pytest.skip(f"the store does not implement {api} (an S3-compatible store?): "
                f"set security.{key}: false to say so")


@pytest.mark.monthly
@pytest.mark.security_check("public_access_block")
def test_public_access_block(security_s3_public_access_block: PublicAccessBlock,
                             evidence: EvidenceLog) -> None:
    """All four public access block flags are on, on the bucket or on the account."""
    block = security_s3_public_access_block
    if block.unsupported:
        _unsupported(block.unsupported, "public_access_block")
    evidence.expect("public access block flags off", list(block.missing()), equals=[])
    evidence.note("bucket level", ", ".join(block.bucket) if block.bucket else
                  "none" if block.bucket is None else "all off")
    if block.account is not None:
        evidence.note("account level", ", ".join(block.account) or "all off")
    elif not block.account_read:
        evidence.note("account level", "not read (S3 Control is not reached through an "
                                       "endpoint override)")


@pytest.mark.monthly
@pytest.mark.security_check("no_public_grants")
def test_no_public_grants(security_s3_policy: BucketPolicy, security_s3_acl: BucketAcl,
                          evidence: EvidenceLog) -> None:
    """No bucket policy statement allows ``*`` without a restricting condition, and no ACL
    grant goes to AllUsers or AuthenticatedUsers."""
    policy, acl = security_s3_policy, security_s3_acl
    if policy.unsupported and acl.unsupported:
        _unsupported(f"{policy.unsupported} and {acl.unsupported}", "no_public_grants")
    evidence.expect("policy statements allowing *", policy.public_statements(), equals=[])
    evidence.expect("ACL grants to everyone", acl.public_grants(), equals=[])
    evidence.note("policy statements", len(policy.statements()))
    evidence.note("ACL grants", len(acl.grants))


@pytest.mark.monthly
@pytest.mark.security_check("default_encryption")
def test_default_encryption(security_s3_encryption: BucketEncryption,
                            evidence: EvidenceLog) -> None:
    """New objects are encrypted at rest by default (SSE-S3, SSE-KMS or DSSE-KMS)."""
    encryption = security_s3_encryption
    if encryption.unsupported:
        _unsupported(encryption.unsupported, "default_encryption")
    evidence.expect("default encryption rules", len(encryption.algorithms), at_least=1,
                    unit="rules")
    if encryption.algorithms:
        evidence.note("algorithm", ", ".join(encryption.algorithms))


@pytest.mark.monthly
@pytest.mark.security_check("tls_only")
def test_tls_only_policy(security_s3_policy: BucketPolicy, evidence: EvidenceLog) -> None:
    """The bucket policy denies every request made without TLS (``aws:SecureTransport``
    false); without such a statement the check WARNs (threshold ``s3.tls_deny_statements``:
    make it ``{crit: 1}`` to FAIL instead)."""
    policy = security_s3_policy
    if policy.unsupported:
        _unsupported(policy.unsupported, "tls_only")
    denying = policy.denies_insecure_transport()
    evidence.within("s3.tls_deny_statements", len(denying), unit="statements",
                    default=Threshold(warn=1, direction="min"))
    for statement in denying:
        evidence.note("statement", statement)
