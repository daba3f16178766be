"""AWS health, from the T-Developer runbook's daily script: ECS services run what they
desire, ALB targets are healthy, no CloudWatch alarm is in ALARM, few ERROR log events."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.aws import (
        Alarm,
        AlarmsSection,
        AwsClient,
        EcsService,
        LogCount,
        LogGroupCheck,
        TargetGroupHealth,
    )

# One read per declared service, target group, alarm scope and log group (each within one
# deadline, page by page), prefetched in the probe pool.


@probe
def aws_ecs_service_state(aws: AwsClient, aws_ecs_service: tuple[str, str]) -> EcsService:
    return aws.ecs_service(*aws_ecs_service)


@probe
def aws_target_group_health(aws: AwsClient, aws_target_group: str) -> TargetGroupHealth:
    return aws.target_health(aws_target_group)


@probe
def aws_alarms_in_scope(aws: AwsClient,
                        aws_alarms: AlarmsSection) -> tuple[tuple[Alarm, ...], bool]:
    alarms, more = aws.alarms(aws_alarms.prefix)
    return tuple(alarms), more


@probe
def aws_log_events(aws: AwsClient, aws_log_group: LogGroupCheck) -> LogCount:
    return aws.count_log_events(aws_log_group)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_ecs_service_running(aws: AwsClient, aws_ecs_service_state: EcsService,
                             evidence: EvidenceLog) -> None:
    """The service is ACTIVE and its runningCount equals its desiredCount."""
    service = aws_ecs_service_state
    evidence.expect("status", service.status, equals="ACTIVE",
                    source=evidence.source_of("targets", aws.name, "ecs", "services"))
    if not service.found:
        return
    evidence.expect("runningCount", service.running, equals=service.desired,
                    unit="tasks", source="desiredCount")
    evidence.note("pendingCount", service.pending, unit="tasks")
    if service.rollout:
        evidence.note("rollout", service.rollout)
    evidence.note("task definition", service.task_definition)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_alb_targets_healthy(aws: AwsClient, aws_target_group: str,
                             aws_target_group_health: TargetGroupHealth,
                             evidence: EvidenceLog) -> None:
    """The target group exists, has targets, and every one of them is ``healthy``."""
    health = aws_target_group_health
    where = evidence.source_of("targets", aws.name, "alb_target_groups",
                               aws.spec.alb_target_groups.index(aws_target_group))
    evidence.expect("target group found", health.found, equals=True, source=where)
    if not health.found:
        return
    healthy = [t for t in health.targets if t.state == "healthy"]
    evidence.expect("registered targets", len(health.targets), at_least=1, unit="targets")
    evidence.expect("targets not healthy",
                    [t.describe() for t in health.targets if t.state != "healthy"], equals=[])
    evidence.note("healthy targets", len(healthy), unit="targets")


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_no_alarm_firing(aws: AwsClient, aws_alarms: AlarmsSection,
                         aws_alarms_in_scope: tuple[tuple[Alarm, ...], bool],
                         evidence: EvidenceLog) -> None:
    """No CloudWatch alarm in scope is in ALARM, except those the environment allows."""
    alarms, more = aws_alarms_in_scope
    where = evidence.source_of("targets", aws.name, "alarms")
    # A prefix that matches nothing would make this check pass on nothing.
    evidence.expect("alarms in scope", len(alarms), at_least=1, unit="alarms", source=where)
    firing = [a for a in alarms if a.state == "ALARM"]
    evidence.expect("alarms in ALARM",
                    [f"{a.name}: {a.reason}" if a.reason else a.name
                     for a in firing if not aws_alarms.allows(a.name)],
                    equals=[], source=where)
    allowed = [a.name for a in firing if aws_alarms.allows(a.name)]
    if allowed:
        evidence.note("allowed alarms in ALARM", ", ".join(allowed))
    states = {state: sum(a.state == state for a in alarms)
              for state in sorted({a.state for a in alarms})}
    evidence.note("alarm states", ", ".join(f"{k} {v}" for k, v in states.items()))
    if more:
        evidence.note("only the first alarms were read", len(alarms))


@pytest.mark.daily
def test_log_errors(aws: AwsClient, aws_log_group: LogGroupCheck, aws_log_events: LogCount,
                    evidence: EvidenceLog) -> None:
    """Events matching the pattern (ERROR) over the window stay under ``aws.log_errors``."""
    result = aws_log_events
    index = aws.spec.log_groups.index(aws_log_group)
    evidence.expect("log group found", result.found, equals=True,
                    source=evidence.source_of("targets", aws.name, "log_groups", index))
    if not result.found:
        return
    evidence.within("aws.log_errors", result.count, unit="events",
                    default=Threshold(warn=10, crit=50))
    evidence.note("filter", f"{aws_log_group.pattern!r} over the last "
                            f"{aws_log_group.window_minutes} min")
    if result.capped:
        evidence.note("counting stopped at max_events", aws_log_group.max_events)
    for message in result.samples:
        evidence.note("event", message)
