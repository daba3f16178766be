"""AWS targets: the ``aws`` section (ECS, ALB, CloudWatch alarms and Logs) and its read-only
API client, including the security reads of checks/security/test_aws.py (security groups,
Secrets Manager metadata, log group retention, ECR scans, ECS task definitions). Inside a
destructive check, a client built with ``writes=REMEDIATION_WRITES`` may send those
operations too, and nothing else.

What every AWS-API target shares (``s3`` uses it too: credentials, deadlines, the read-only
guard, error translation) is :mod:`opsverify.targets.aws_api`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import Field, model_validator

from opsverify.remediation.aws import AwsRemediation
from opsverify.secrets import SECRETS
from opsverify.targets.aws_api import AwsApi, AwsTargetSpec, clip
from opsverify.targets.aws_security import (
    IMAGE_PAGES_MAX,
    PER_ITEM_MAX,
    SECURITY_ITEMS_MAX,
    ContainerSecurity,
    EcrImageScan,
    EcrRepository,
    LogRetention,
    OpenIngress,
    SecretRotation,
    SecurityGroups,
    TaskDefinitionSecurity,
    epoch,
    looks_secret,
    world_open,
)
from opsverify.targets.base import Deadline, Section

# The only writes a remediation client (``aws_admin``) may send: what opsverify/remediation/
# aws.py does. Secret values are never read, not even by it.
REMEDIATION_WRITES = frozenset({"UpdateService", "RotateSecret"})


class EcsSection(Section):
    """ECS services whose running task count must equal their desired count."""

    cluster: str = Field(min_length=1)
    services: list[str] = Field(min_length=1)


class AlarmsSection(Section):
    """CloudWatch alarms in scope (by name prefix) and those allowed to be in ALARM."""

    prefix: str = ""
    # Names or shell-style patterns of alarms known to fire, accepted for now.
    allowed: list[str] = Field(default_factory=list)

    def allows(self, alarm: str) -> bool:
        return any(fnmatchcase(alarm, pattern) for pattern in self.allowed)

    def scope(self) -> str:
        return f"{self.prefix}*" if self.prefix else "all-alarms"


class LogGroupCheck(Section):
    """Events matching ``pattern`` in a log group over a window, judged by ``aws.log_errors``."""

    name: str = Field(min_length=1)
    pattern: str = "ERROR"  # a CloudWatch Logs filter pattern
    window_minutes: int = Field(default=1440, gt=0, le=43200)
    # Counting stops here; a capped count is reported as such.
    max_events: int = Field(default=1000, ge=1, le=100000)


class AwsSecurity(Section):
    """``security:`` of an aws target: every check of checks/security/test_aws.py applies to
    the whole region unless switched off here by its name (``{ecr_findings: false}``)."""

    security_groups: bool = True  # no world-open ingress to admin/database ports or all ports
    secret_rotation: bool = True  # Secrets Manager rotation on, last rotation recent
    log_retention: bool = True  # CloudWatch Logs groups keep events long enough
    ecr_scan_on_push: bool = True
    ecr_findings: bool = True  # no finding >= HIGH in a repository's latest image
    ecs_privileged: bool = True  # no privileged container in a task definition
    ecs_env_secrets: bool = True  # no secret-looking plain environment value


class AwsTarget(AwsTargetSpec):
    type: Literal["aws"]
    ecs: EcsSection | None = None
    alb_target_groups: list[str] = Field(default_factory=list)  # names or ARNs
    alarms: AlarmsSection | None = None
    log_groups: list[LogGroupCheck] = Field(default_factory=list)
    security: AwsSecurity = Field(default_factory=AwsSecurity)
    remediation: AwsRemediation = Field(default_factory=AwsRemediation)

    @model_validator(mode="after")
    def _ecs_for_ecs_fixes(self) -> AwsTarget:
        fixes = [k for k in ("ecs_redeploy", "ecs_rollback") if getattr(self.remediation, k)]
        if fixes and self.ecs is None:
            raise ValueError(f"remediation.{fixes[0]} acts on the services of the ecs: section; "
                             "declare ecs: {cluster: ..., services: [...]}")
        return self

    def address(self) -> str:
        return self.endpoint_address() or f"{self.region}.amazonaws.com"


# -- results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class EcsService:
    cluster: str
    name: str
    status: str  # ACTIVE, DRAINING, INACTIVE; MISSING or ClusterNotFound when absent
    desired: int = 0
    running: int = 0
    pending: int = 0
    task_definition: str = ""
    rollout: str = ""

    @property
    def found(self) -> bool:
        return self.status in ("ACTIVE", "DRAINING", "INACTIVE")


@dataclass(frozen=True)
class TargetState:
    target: str  # id:port
    state: str
    reason: str = ""
    description: str = ""

    def describe(self) -> str:
        why = ": ".join(p for p in (self.reason, self.description) if p)
        return f"{self.target} {self.state}" + (f" ({why})" if why else "")


@dataclass(frozen=True)
class TargetGroupHealth:
    group: str
    found: bool
    arn: str = ""
    targets: tuple[TargetState, ...] = ()


@dataclass(frozen=True)
class Alarm:
    name: str
    state: str  # OK, ALARM, INSUFFICIENT_DATA
    reason: str = ""


@dataclass(frozen=True)
class LogCount:
    group: str
    found: bool
    count: int = 0
    capped: bool = False
    samples: tuple[str, ...] = ()


# -- the aws client ----------------------------------------------------------------------
class AwsClient:
    """Read-only views of ECS, ELBv2, CloudWatch and CloudWatch Logs for one ``aws`` target;
    built with ``writes`` (``REMEDIATION_WRITES``, inside a destructive check only) it may
    send those operations too."""

    def __init__(self, name: str, spec: AwsTarget, timeout_s: float, *,
                 writes: Iterable[str] = ()) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.api = AwsApi(name, spec, timeout_s, writes=writes, where="aws")

    def account(self) -> str:
        """The account the credentials belong to (STS GetCallerIdentity needs no
        permission): proves the endpoint answers and the credentials are accepted."""
        reply = self.api.call("sts", "get_caller_identity")
        return str(reply.data.get("Account", ""))

    def ecs_service(self, cluster: str, service: str) -> EcsService:
        reply = self.api.call("ecs", "describe_services", cluster=cluster, services=[service],
                              handled=("ClusterNotFoundException",))
        if reply.error:
            return EcsService(cluster, service, "ClusterNotFound")
        found = reply.data.get("services", [])
        if not found:
            failures = reply.data.get("failures", [])
            reason = str(failures[0].get("reason", "MISSING")) if failures else "MISSING"
            return EcsService(cluster, service, reason)
        svc = found[0]
        primary: dict[str, Any] = next(
            (d for d in svc.get("deployments", []) if d.get("status") == "PRIMARY"), {})
        return EcsService(
            cluster, service, str(svc.get("status", "")),
            desired=int(svc.get("desiredCount", 0)),
            running=int(svc.get("runningCount", 0)),
            pending=int(svc.get("pendingCount", 0)),
            task_definition=str(svc.get("taskDefinition", "")).rsplit("/", 1)[-1],
            rollout=str(primary.get("rolloutState", "")),
        )

    def target_health(self, group: str) -> TargetGroupHealth:
        """Health of every target registered in a target group given by name or ARN."""
        deadline = Deadline.start(self.timeout_s)
        if group.startswith("arn:"):
            arn = group
        else:
            reply = self.api.call("elbv2", "describe_target_groups", Names=[group],
                                  handled=("TargetGroupNotFound",), deadline=deadline)
            groups = reply.data.get("TargetGroups", [])
            if reply.error or not groups:
                return TargetGroupHealth(group, found=False)
            arn = str(groups[0]["TargetGroupArn"])
        reply = self.api.call("elbv2", "describe_target_health", TargetGroupArn=arn,
                              handled=("TargetGroupNotFound",), deadline=deadline)
        if reply.error:
            return TargetGroupHealth(group, found=False, arn=arn)
        states = []
        for desc in reply.data.get("TargetHealthDescriptions", []):
            target, health = desc.get("Target", {}), desc.get("TargetHealth", {})
            where = f"{target.get('Id')}:{target['Port']}" if "Port" in target else str(
                target.get("Id"))
            states.append(TargetState(where, str(health.get("State", "")),
                                      str(health.get("Reason", "")),
                                      clip(str(health.get("Description", "")))))
        return TargetGroupHealth(group, found=True, arn=arn, targets=tuple(states))

    def alarms(self, prefix: str = "", limit: int = 1000) -> tuple[list[Alarm], bool]:
        """Metric and composite alarms whose name starts with ``prefix`` (at most ``limit``;
        the flag says whether more exist), read page by page within one deadline."""
        deadline = Deadline.start(self.timeout_s)
        found: list[Alarm] = []
        params: dict[str, Any] = {"AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
                                  "MaxRecords": 100}
        if prefix:
            params["AlarmNamePrefix"] = prefix
        while True:
            data = self.api.call("cloudwatch", "describe_alarms", deadline=deadline,
                                 **params).data
            for alarm in [*data.get("MetricAlarms", []), *data.get("CompositeAlarms", [])]:
                found.append(Alarm(str(alarm["AlarmName"]), str(alarm.get("StateValue", "")),
                                   clip(str(alarm.get("StateReason", "")))))
            token = data.get("NextToken")
            if len(found) >= limit:
                return found[:limit], bool(token) or len(found) > limit
            if not token:
                return found, False
            params["NextToken"] = token

    def count_log_events(self, check: LogGroupCheck, samples: int = 3) -> LogCount:
        """Events matching ``check.pattern`` over the last ``check.window_minutes``, counted
        page by page up to ``check.max_events``, all within one deadline."""
        deadline = Deadline.start(self.timeout_s)
        end = int(time.time() * 1000)
        params: dict[str, Any] = {
            "logGroupName": check.name, "filterPattern": check.pattern,
            "startTime": end - check.window_minutes * 60_000, "endTime": end,
        }
        count, kept = 0, list[str]()
        while True:
            params["limit"] = min(10_000, check.max_events - count)
            reply = self.api.call("logs", "filter_log_events", deadline=deadline,
                                  handled=("ResourceNotFoundException",), **params)
            if reply.error:
                return LogCount(check.name, found=False)
            events = reply.data.get("events", [])
            count += len(events)
            kept += [clip(str(e.get("message", ""))) for e in events[: samples - len(kept)]]
            token = reply.data.get("nextToken")
            if count >= check.max_events:
                return LogCount(check.name, True, count, capped=bool(token), samples=tuple(kept))
            if not token:
                return LogCount(check.name, True, count, False, tuple(kept))
            params["nextToken"] = token

    def close(self) -> None:
        self.api.close()

    # -- security reads (checks/security/test_aws.py): metadata only, never a value ----------
    def security_groups(self) -> SecurityGroups:
        """Every security group of the region (EC2 DescribeSecurityGroups, page by page)
        and its ingress rules open to 0.0.0.0/0 or ::/0 on a risky port or on all ports."""
        deadline = Deadline.start(self.timeout_s)
        count, found = 0, list[OpenIngress]()
        params: dict[str, Any] = {"MaxResults": 1000}
        while True:
            data = self.api.read("ec2", "describe_security_groups", deadline=deadline,
                                 what="EC2 security groups", grant="ec2:DescribeSecurityGroups",
                                 **params).data
            for group in data.get("SecurityGroups", []):
                count += 1
                label = f"{group.get('GroupId', '?')} ({group.get('GroupName', '')})"
                for permission in group.get("IpPermissions", []):
                    found += [OpenIngress(label, rule, exposes)
                              for rule, exposes in world_open(permission)]
            token = data.get("NextToken")
            if not token or count >= SECURITY_ITEMS_MAX:
                return SecurityGroups(count, tuple(found), capped=bool(token))
            params["NextToken"] = token

    def secrets_rotation(self) -> tuple[tuple[SecretRotation, ...], bool]:
        """Rotation metadata of every secret (Secrets Manager ListSecrets, the metadata
        DescribeSecret shows: never a value, never GetSecretValue), and whether capped."""
        deadline = Deadline.start(self.timeout_s)
        found: list[SecretRotation] = []
        params: dict[str, Any] = {"MaxResults": 100}
        while True:
            data = self.api.read("secretsmanager", "list_secrets", deadline=deadline,
                                 what="Secrets Manager secret metadata",
                                 grant="secretsmanager:ListSecrets", **params).data
            for secret in data.get("SecretList", []):
                rules = secret.get("RotationRules", {})
                found.append(SecretRotation(
                    str(secret.get("Name", "")), bool(secret.get("RotationEnabled", False)),
                    epoch(secret.get("LastRotatedDate")), epoch(secret.get("CreatedDate")),
                    int(rules["AutomaticallyAfterDays"])
                    if rules.get("AutomaticallyAfterDays") else None))
            token = data.get("NextToken")
            if not token or len(found) >= SECURITY_ITEMS_MAX:
                return tuple(found), bool(token)
            params["NextToken"] = token

    def log_group_retention(self) -> tuple[tuple[LogRetention, ...], bool]:
        """Retention of every CloudWatch Logs group (DescribeLogGroups; no retentionInDays
        means the events never expire), and whether capped."""
        deadline = Deadline.start(self.timeout_s)
        found: list[LogRetention] = []
        params: dict[str, Any] = {"limit": 50}
        while True:
            data = self.api.read("logs", "describe_log_groups", deadline=deadline,
                                 what="CloudWatch Logs groups", grant="logs:DescribeLogGroups",
                                 **params).data
            for group in data.get("logGroups", []):
                days = group.get("retentionInDays")
                found.append(LogRetention(str(group.get("logGroupName", "")),
                                          None if days is None else int(days)))
            token = data.get("nextToken")
            if not token or len(found) >= SECURITY_ITEMS_MAX:
                return tuple(found), bool(token)
            params["nextToken"] = token

    def ecr_repositories(self) -> tuple[tuple[EcrRepository, ...], bool]:
        """Every ECR repository (at most :data:`PER_ITEM_MAX`) with its scan-on-push setting
        and the scan of its most recently pushed image; whether capped. Each repository's
        reads have their own deadline."""
        what = "ECR repositories and image scans"
        grant = "ecr:DescribeRepositories, ecr:DescribeImages, ecr:DescribeImageScanFindings"
        data = self.api.read("ecr", "describe_repositories", maxResults=PER_ITEM_MAX,
                             what=what, grant=grant).data
        repositories = data.get("repositories", [])[:PER_ITEM_MAX]
        found = []
        for repo in repositories:
            name = str(repo.get("repositoryName", ""))
            deadline = Deadline.start(self.timeout_s)
            scan_on_push = bool(repo.get("imageScanningConfiguration", {}).get("scanOnPush"))
            images: list[dict[str, Any]] = []
            params: dict[str, Any] = {"repositoryName": name, "maxResults": 1000}
            for _page in range(IMAGE_PAGES_MAX):
                page = self.api.read("ecr", "describe_images", deadline=deadline, what=what,
                                     grant=grant, **params).data
                images += page.get("imageDetails", [])
                if not page.get("nextToken"):
                    break
                params["nextToken"] = page["nextToken"]
            if not images:
                found.append(EcrRepository(name, scan_on_push, None))
                continue
            # The newest push; among pushes of the same second, the last listed.
            latest = max(reversed(images), key=lambda i: epoch(i.get("imagePushedAt")) or 0)
            tags = latest.get("imageTags") or []
            image_id = {"imageTag": str(tags[0])} if tags else {
                "imageDigest": str(latest.get("imageDigest", ""))}
            reply = self.api.read("ecr", "describe_image_scan_findings", repositoryName=name,
                                  imageId=image_id, maxResults=1, deadline=deadline,
                                  handled=("ScanNotFoundException",), what=what, grant=grant)
            scan = reply.data.get("imageScanFindings", {})
            found.append(EcrRepository(name, scan_on_push, EcrImageScan(
                next(iter(image_id.values())), epoch(latest.get("imagePushedAt")) or 0.0,
                "NOT_SCANNED" if reply.error else str(
                    reply.data.get("imageScanStatus", {}).get("status", "")),
                tuple(sorted((str(k), int(v)) for k, v in
                             scan.get("findingSeverityCounts", {}).items())))))
        return tuple(found), bool(data.get("nextToken")) or len(repositories) >= PER_ITEM_MAX

    def ecs_task_definitions(self) -> tuple[tuple[TaskDefinitionSecurity, ...], bool]:
        """The latest ACTIVE revision of every task definition family (at most
        :data:`PER_ITEM_MAX`): privileged containers and the names of plain environment
        variables whose value looks like a secret; those values are registered as secrets
        (masked in every artifact) and never returned."""
        what, grant = "ECS task definitions", "ecs:ListTaskDefinitionFamilies, " \
                                              "ecs:DescribeTaskDefinition"
        data = self.api.read("ecs", "list_task_definition_families", status="ACTIVE",
                             maxResults=PER_ITEM_MAX, what=what, grant=grant).data
        families = [str(f) for f in data.get("families", [])][:PER_ITEM_MAX]
        found = []
        for family in families:
            definition = self.api.read("ecs", "describe_task_definition", taskDefinition=family,
                                       what=what, grant=grant).data.get("taskDefinition", {})
            containers = []
            for container in definition.get("containerDefinitions", []):
                secret_env = []
                for variable in container.get("environment", []):
                    name, value = str(variable.get("name", "")), str(variable.get("value", ""))
                    if looks_secret(name, value):
                        SECRETS.add(value)
                        secret_env.append(name)
                containers.append(ContainerSecurity(
                    str(container.get("name", "")), bool(container.get("privileged")),
                    tuple(secret_env)))
            found.append(TaskDefinitionSecurity(
                f"{definition.get('family', family)}:{definition.get('revision', '?')}",
                tuple(containers)))
        return tuple(found), bool(data.get("nextToken")) or len(families) >= PER_ITEM_MAX
