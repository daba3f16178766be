"""AWS remediation: the runbooks' fixes, each enabled per target (``remediation:``).

ECS: ``ecs_redeploy`` and ``ecs_rollback`` share one rule (opsverify/remediation/aws.py), so
that never both act on one service; each re-checks what test_ecs_service_running judges, for
every declared service but those the other fixes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation.aws import (
    ECS_SETTLE_S,
    EcsRedeploy,
    EcsRedeploySettings,
    EcsRollback,
    EcsRollbackSettings,
    RotateSecret,
    RotateSecretSettings,
)
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.aws import AwsClient

ROTATION_AGE_DAYS = Threshold(crit=90)  # test_secret_rotation's default


def _recheck_services(action: EcsRedeploy | EcsRollback, applied: bool,
                      evidence: EvidenceLog) -> None:
    """test_ecs_service_running's expectations, per service, read again (after waiting for
    the new deployment's tasks when something was applied)."""
    source = evidence.source_of("targets", action.target, "ecs", "services")
    for service, diagnosis in action.settled(ECS_SETTLE_S if applied else 0.0):
        if not action.answers_for(diagnosis):
            evidence.note(service.name, f"left to ecs_{diagnosis.fix}: {diagnosis.why}")
            continue
        evidence.expect(f"{service.name} status", service.status, equals="ACTIVE",
                        source=source)
        if service.status != "ACTIVE":
            continue
        evidence.expect(f"{service.name} runningCount", service.running,
                        equals=service.desired, unit="tasks", source="desiredCount")
        evidence.note(f"{service.name} now", service.describe())


@pytest.mark.destructive
def test_ecs_redeploy(aws_admin: AwsClient, aws_ecs_redeploy: EcsRedeploySettings,
                      remediation: Gate, evidence: EvidenceLog) -> None:
    """Force a new deployment of each declared service running fewer tasks than desired
    (unless it is a failing new revision, which ecs_rollback takes), then re-check."""
    action = EcsRedeploy(aws_admin, aws_ecs_redeploy)
    outcome = remediation.run(action, population=len(action.services))
    _recheck_services(action, bool(outcome.applied), evidence)


@pytest.mark.destructive
def test_ecs_rollback(aws_admin: AwsClient, aws_ecs_rollback: EcsRollbackSettings,
                      remediation: Gate, evidence: EvidenceLog) -> None:
    """Roll each declared service whose new revision is failing back to the previous ACTIVE
    revision of its family, then re-check."""
    action = EcsRollback(aws_admin, aws_ecs_rollback)
    outcome = remediation.run(action, population=len(action.services))
    _recheck_services(action, bool(outcome.applied), evidence)


@pytest.mark.destructive
def test_rotate_secret(aws_admin: AwsClient, aws_rotate_secret: RotateSecretSettings,
                       remediation: Gate, evidence: EvidenceLog) -> None:
    """Rotate every secret without rotation or older than ``older_than_days``, then re-check
    what test_secret_rotation judges (never reading a value)."""
    older_than = aws_rotate_secret.older_than_days
    if older_than is None:
        crit = evidence.threshold("secrets.rotation_age_days", ROTATION_AGE_DAYS).crit
        older_than = max(1, min(1000, int(crit if crit is not None else 90)))
    listed, _capped = aws_admin.secrets_rotation()
    remediation.run(RotateSecret(aws_admin, older_than), population=len(listed))
    secrets, _capped = aws_admin.secrets_rotation()
    evidence.expect("secrets without rotation",
                    [s.name for s in secrets if not s.rotation_enabled], equals=[])
    now = time.time()
    aged = [(age, s) for s in secrets if (age := s.age_days(now)) is not None]
    if not aged:
        return
    age, stalest = max(aged, key=lambda pair: pair[0])
    evidence.note("stalest secret", stalest.name)
    evidence.within("secrets.rotation_age_days", round(age, 5), unit="days",
                    default=ROTATION_AGE_DAYS)
