"""AWS security, after Prowler's ec2/secretsmanager/logs/ecr/ecs checks and the T-Developer
runbook's monthly review: no security group open to the world on an administration or
database port, secrets rotated, logs kept 30 days, images scanned on push and free of HIGH
findings, task definitions neither privileged nor holding secrets in plain environment
variables.

Every check applies to the whole region of every aws target; ``security:
{ecr_findings: false}`` (by check name) switches one off. What the credentials may not read
is a SKIP naming the permission. Secret values are never read: rotation comes from the
secrets' metadata, and a secret-looking environment value is shown by its variable's name
only (the value is registered as a secret, masked in every artifact).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.aws import AwsClient
    from opsverify.targets.aws_security import (
        EcrRepository,
        LogRetention,
        SecretRotation,
        SecurityGroups,
        TaskDefinitionSecurity,
    )

ROTATION_AGE_DAYS = Threshold(crit=90)
RETENTION_DAYS = Threshold(crit=30, direction="min")

# One reading per service for the region (page by page, each within the target's deadline),
# prefetched in the probe pool.


@probe
def security_aws_security_groups(aws: AwsClient) -> SecurityGroups:
    return aws.security_groups()


@probe
def security_aws_secrets(aws: AwsClient) -> tuple[tuple[SecretRotation, ...], bool]:
    return aws.secrets_rotation()


@probe
def security_aws_log_groups(aws: AwsClient) -> tuple[tuple[LogRetention, ...], bool]:
    return aws.log_group_retention()


@probe
def security_aws_ecr(aws: AwsClient) -> tuple[tuple[EcrRepository, ...], bool]:
    return aws.ecr_repositories()


@probe
def security_aws_task_definitions(
        aws: AwsClient) -> tuple[tuple[TaskDefinitionSecurity, ...], bool]:
    return aws.ecs_task_definitions()


def _counted(evidence: EvidenceLog, what: str, count: int, capped: bool) -> None:
    evidence.note(what, f"{count} (only the first were read)" if capped else count)


@pytest.mark.monthly
@pytest.mark.security_check("security_groups")
def test_security_groups_closed(security_aws_security_groups: SecurityGroups,
                                evidence: EvidenceLog) -> None:
    """No security group admits 0.0.0.0/0 or ::/0 on SSH, RDP, PostgreSQL, MySQL, Redis,
    MongoDB or Elasticsearch, nor on all ports."""
    groups = security_aws_security_groups
    _counted(evidence, "security groups", groups.count, groups.capped)
    evidence.expect("ingress open to the world", [o.describe() for o in groups.open],
                    equals=[])


@pytest.mark.monthly
@pytest.mark.security_check("secret_rotation")
def test_secret_rotation(aws: AwsClient,
                         security_aws_secrets: tuple[tuple[SecretRotation, ...], bool],
                         evidence: EvidenceLog) -> None:
    """Every secret has automatic rotation enabled, and the stalest current value is younger
    than ``secrets.rotation_age_days`` (crit 90)."""
    secrets, capped = security_aws_secrets
    if not secrets:
        pytest.skip(f"no Secrets Manager secret in {aws.spec.region}: nothing to rotate")
    _counted(evidence, "secrets", len(secrets), capped)
    evidence.expect("secrets without rotation",
                    [s.name for s in secrets if not s.rotation_enabled], equals=[])
    now = time.time()
    aged = [(age, s) for s in secrets if (age := s.age_days(now)) is not None]
    if not aged:
        return
    age, stalest = max(aged, key=lambda pair: pair[0])
    evidence.note("stalest secret", stalest.name + (
        "" if stalest.last_rotated is not None else " (never rotated: age since creation)"))
    evidence.within("secrets.rotation_age_days", round(age, 5), unit="days",
                    default=ROTATION_AGE_DAYS)


@pytest.mark.monthly
@pytest.mark.security_check("log_retention")
def test_log_retention(aws: AwsClient,
                       security_aws_log_groups: tuple[tuple[LogRetention, ...], bool],
                       evidence: EvidenceLog) -> None:
    """Every CloudWatch Logs group keeps its events at least ``logs.retention_days`` (crit
    30); a group whose events never expire is fine."""
    groups, capped = security_aws_log_groups
    if not groups:
        pytest.skip(f"no CloudWatch Logs group in {aws.spec.region}")
    _counted(evidence, "log groups", len(groups), capped)
    expiring = [g for g in groups if g.retention_days is not None]
    evidence.note("never expire", len(groups) - len(expiring))
    if not expiring:
        return
    shortest = min(expiring, key=lambda g: g.retention_days or 0)
    evidence.note("shortest retention", shortest.group)
    limit = evidence.threshold("logs.retention_days", RETENTION_DAYS).crit
    if limit is not None:
        short = [f"{g.group}: {g.retention_days} days" for g in expiring
                 if (g.retention_days or 0) < limit]
        if short:
            evidence.note("groups kept too briefly", "; ".join(short))
    evidence.within("logs.retention_days", shortest.retention_days or 0, unit="days",
                    default=RETENTION_DAYS)


@pytest.mark.monthly
@pytest.mark.security_check("ecr_scan_on_push")
def test_ecr_scan_on_push(aws: AwsClient,
                          security_aws_ecr: tuple[tuple[EcrRepository, ...], bool],
                          evidence: EvidenceLog) -> None:
    """Every ECR repository scans images when they are pushed."""
    repositories, capped = security_aws_ecr
    if not repositories:
        pytest.skip(f"no ECR repository in {aws.spec.region}")
    _counted(evidence, "repositories", len(repositories), capped)
    evidence.expect("repositories without scan on push",
                    [r.name for r in repositories if not r.scan_on_push], equals=[])


@pytest.mark.monthly
@pytest.mark.security_check("ecr_findings")
def test_ecr_image_findings(aws: AwsClient,
                            security_aws_ecr: tuple[tuple[EcrRepository, ...], bool],
                            evidence: EvidenceLog) -> None:
    """The most recently pushed image of every repository has a completed scan with no
    finding of severity HIGH or CRITICAL."""
    repositories, capped = security_aws_ecr
    if not repositories:
        pytest.skip(f"no ECR repository in {aws.spec.region}")
    _counted(evidence, "repositories", len(repositories), capped)
    latest = [(r.name, r.latest) for r in repositories if r.latest is not None]
    empty = [r.name for r in repositories if r.latest is None]
    if empty:
        evidence.note("repositories without images", ", ".join(empty))
    evidence.expect("latest images without a completed scan",
                    [f"{name}:{image.image} ({image.status})" for name, image in latest
                     if image.status != "COMPLETE"], equals=[])
    evidence.expect("latest images with findings >= HIGH",
                    [f"{name}:{image.image} " + ", ".join(
                        f"{severity} {count}" for severity, count in bad.items())
                     for name, image in latest if (bad := image.high_or_worse())],
                    equals=[])
    for name, image in latest:
        counts = ", ".join(f"{s} {n}" for s, n in image.severities) or "no findings"
        evidence.note(f"{name}:{image.image}", counts)


@pytest.mark.monthly
@pytest.mark.security_check("ecs_privileged")
def test_ecs_not_privileged(
        aws: AwsClient,
        security_aws_task_definitions: tuple[tuple[TaskDefinitionSecurity, ...], bool],
        evidence: EvidenceLog) -> None:
    """No container of the latest revision of any task definition runs privileged."""
    definitions, capped = security_aws_task_definitions
    if not definitions:
        pytest.skip(f"no ACTIVE ECS task definition in {aws.spec.region}")
    _counted(evidence, "task definitions", len(definitions), capped)
    evidence.expect("privileged containers",
                    [f"{d.task_definition}/{c.name}" for d in definitions
                     for c in d.containers if c.privileged], equals=[])


@pytest.mark.monthly
@pytest.mark.security_check("ecs_env_secrets")
def test_ecs_env_secrets(
        aws: AwsClient,
        security_aws_task_definitions: tuple[tuple[TaskDefinitionSecurity, ...], bool],
        evidence: EvidenceLog) -> None:
    """No plain ``environment`` value of a task definition's container looks like a secret
    (a password, token, key or a URL with a password): secrets belong in ``secrets``
    (``valueFrom`` Secrets Manager or SSM). Only the variables' names are shown."""
    definitions, capped = security_aws_task_definitions
    if not definitions:
        pytest.skip(f"no ACTIVE ECS task definition in {aws.spec.region}")
    _counted(evidence, "task definitions", len(definitions), capped)
    evidence.expect("secret-looking environment variables",
                    [f"{d.task_definition}/{c.name}: {name}" for d in definitions
                     for c in d.containers for name in c.secret_env], equals=[])
