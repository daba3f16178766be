"""AWS fixes, each enabled per ``aws`` target under ``remediation:`` in its section:

    remediation:
      ecs_redeploy: {}
      ecs_rollback: {}
      rotate_secret: {older_than_days: 30}

The actions take a write-capable :class:`~opsverify.targets.aws.AwsClient` that may send
``UpdateService`` and ``RotateSecret`` besides reads and nothing else (``aws_admin``, which
exists only inside an allowed destructive check). Secret values are never read.

Which ECS fix a service gets — one rule, :func:`diagnose`, that both actions share, so that
never both act on one service:

- nothing while it runs its desired count, or while its deployment rolls out with no failed
  task (a healthy rollout is left alone);
- ``ecs_rollback`` when its latest deployment rolled out a new revision and is failing: the
  deployment is PRIMARY, IN_PROGRESS or FAILED, has failed tasks (or FAILED), runs the
  service's task definition, which is the newest ACTIVE revision of its family, no other
  deployment runs that revision (it is not a forced redeploy), and an older ACTIVE revision
  exists: the target is the newest of those;
- ``ecs_redeploy`` otherwise (a task lost after the rollout completed, a stuck deployment of
  the revision that ran before, a service with a single revision).

After a rollback the failing revision stays registered, so the service no longer runs the
newest revision: a second rollback cannot follow the first. Both send the planned
``desiredCount`` with their ``UpdateService``: unchanged on AWS (drift re-reads it just
before), it is what makes moto — which runs no scheduler — report the desired count running
(opsverify/sandbox/moto.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from opsverify.remediation import Item
from opsverify.targets.aws_security import SecretRotation, epoch
from opsverify.targets.base import Section

if TYPE_CHECKING:
    from opsverify.targets.aws import AwsClient

FAILING_ROLLOUTS = ("IN_PROGRESS", "FAILED")
REVISION_PAGES_MAX = 10  # ListTaskDefinitions pages searched for the previous revision
# On AWS a new deployment starts its tasks in a minute or two, a rotation Lambda finishes in
# seconds: how long the re-check (ECS) and apply (a rotation) wait for the effect. Within
# pytest-timeout's backstop (120 s).
ECS_SETTLE_S = 60.0
ROTATION_WAIT_S = 20.0
POLL_S = 2.0
MESSAGE_CHARS = 160


class EcsRedeploySettings(Section):
    """``ecs_redeploy: {}``: no keys; the services are those of the ``ecs:`` section."""


class EcsRollbackSettings(Section):
    """``ecs_rollback: {}``: no keys; the services are those of the ``ecs:`` section."""


class RotateSecretSettings(Section):
    # Secrets whose current value is older than this (since their last rotation, or their
    # creation), and those without rotation, which get rotation every this many days; unset:
    # the crit of secrets.rotation_age_days, the limit test_secret_rotation judges.
    older_than_days: int | None = Field(default=None, ge=1, le=1000)


class AwsRemediation(Section):
    """``remediation:`` of an aws target: an action runs only where it is listed."""

    ecs_redeploy: EcsRedeploySettings | None = None
    ecs_rollback: EcsRollbackSettings | None = None
    rotate_secret: RotateSecretSettings | None = None


# -- ECS: what is read, and the rule ------------------------------------------------------
@dataclass(frozen=True)
class Deployment:
    id: str
    status: str  # PRIMARY, ACTIVE, INACTIVE
    task_definition: str  # ARN
    rollout: str  # IN_PROGRESS, COMPLETED, FAILED; "" when not reported
    failed: int = 0  # failedTasks
    running: int = 0


@dataclass(frozen=True)
class Service:
    """A declared service as DescribeServices shows it (``status`` MISSING when absent)."""

    cluster: str
    name: str
    status: str
    arn: str = ""
    desired: int = 0
    running: int = 0
    pending: int = 0
    task_definition: str = ""  # ARN
    deployments: tuple[Deployment, ...] = ()

    @property
    def primary(self) -> Deployment | None:
        return next((d for d in self.deployments if d.status == "PRIMARY"), None)

    def describe(self) -> str:
        """``t-developer:2, running 1/2, pending 1, deployment ecs-svc/1 IN_PROGRESS with 1
        failed task``."""
        text = (f"{short(self.task_definition)}, running {self.running}/{self.desired}, "
                f"pending {self.pending}")
        primary = self.primary
        if primary is not None:
            text += f", deployment {primary.id} {primary.rollout or primary.status}"
            if primary.failed:
                text += f" with {primary.failed} failed task" + "s" * (primary.failed > 1)
        return text


Fix = Literal["none", "wait", "redeploy", "rollback"]


@dataclass(frozen=True)
class Diagnosis:
    fix: Fix
    why: str
    previous: str = ""  # the revision a rollback goes to (ARN)


def short(task_definition: str) -> str:
    """``t-developer:2`` of ``arn:aws:ecs:…:task-definition/t-developer:2``."""
    return task_definition.rsplit("/", 1)[-1]


def family_of(task_definition: str) -> str:
    return short(task_definition).rsplit(":", 1)[0]


def revision_of(task_definition: str) -> int:
    tail = short(task_definition).rsplit(":", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0


def diagnose(service: Service, revisions: list[str]) -> Diagnosis:
    """Which fix ``service`` gets (module docstring), given the ACTIVE revisions (ARNs) of
    its task definition's family."""
    if service.status != "ACTIVE":
        return Diagnosis("none", f"the service is {service.status}")
    if service.running >= service.desired:
        return Diagnosis("none", f"runs {service.running} of {service.desired} tasks")
    primary = service.primary
    if primary is not None and primary.rollout == "IN_PROGRESS" and not primary.failed:
        return Diagnosis("wait", f"deployment {primary.id} is rolling out with no failed task")
    current = revision_of(service.task_definition)
    family = [r for r in revisions if family_of(r) == family_of(service.task_definition)]
    older = [r for r in family if revision_of(r) < current]
    newest = bool(family) and current == max(revision_of(r) for r in family)
    redeployed = any(d is not primary and d.task_definition == service.task_definition
                     for d in service.deployments)
    failing = primary is not None and primary.rollout in FAILING_ROLLOUTS and (
        primary.failed > 0 or primary.rollout == "FAILED")
    if (failing and primary is not None and primary.task_definition == service.task_definition
            and newest and older and not redeployed):
        previous = max(older, key=revision_of)
        return Diagnosis("rollback", f"the new revision {short(service.task_definition)} is "
                         f"failing; {short(previous)} is the previous ACTIVE one", previous)
    if not older and failing:
        why = "no previous ACTIVE revision to roll back to"
    elif primary is not None and primary.rollout == "COMPLETED":
        why = "tasks lost after the rollout completed"
    else:
        why = "not a new revision failing its rollout"
    return Diagnosis("redeploy", why)


def read_service(client: AwsClient, cluster: str, name: str) -> Service:
    reply = client.api.call("ecs", "describe_services", cluster=cluster, services=[name],
                            handled=("ClusterNotFoundException",))
    found = reply.data.get("services", [])
    if reply.error or not found:
        return Service(cluster, name, "ClusterNotFound" if reply.error else "MISSING")
    svc: dict[str, Any] = found[0]
    deployments = tuple(Deployment(
        str(d.get("id", "")), str(d.get("status", "")), str(d.get("taskDefinition", "")),
        str(d.get("rolloutState", "")), int(d.get("failedTasks", 0)),
        int(d.get("runningCount", 0))) for d in svc.get("deployments", []))
    return Service(cluster, name, str(svc.get("status", "")), str(svc.get("serviceArn", "")),
                   int(svc.get("desiredCount", 0)), int(svc.get("runningCount", 0)),
                   int(svc.get("pendingCount", 0)), str(svc.get("taskDefinition", "")),
                   deployments)


def active_revisions(client: AwsClient, task_definition: str) -> list[str]:
    """The ACTIVE revisions of ``task_definition``'s family (ARNs), newest first, down to
    the one below it (ListTaskDefinitions matches by family prefix: others are dropped)."""
    family, current = family_of(task_definition), revision_of(task_definition)
    params: dict[str, Any] = {"familyPrefix": family, "status": "ACTIVE", "sort": "DESC"}
    found: list[str] = []
    for _page in range(REVISION_PAGES_MAX):
        data = client.api.call("ecs", "list_task_definitions", **params).data
        found += [str(a) for a in data.get("taskDefinitionArns", [])
                  if family_of(str(a)) == family]
        if not data.get("nextToken") or any(revision_of(a) < current for a in found):
            break
        params["nextToken"] = data["nextToken"]
    return found


@dataclass(frozen=True)
class Planned:
    """What apply needs of a planned service, and what drift compares."""

    cluster: str
    name: str
    task_definition: str
    deployment: str
    desired: int
    previous: str = ""


class _EcsAction:
    """What ``ecs_redeploy`` and ``ecs_rollback`` share: the declared services, read and
    diagnosed the same way, each item re-read before it is changed."""

    name: ClassVar[str]
    fix: ClassVar[Fix]

    def __init__(self, client: AwsClient) -> None:
        self.client = client
        self.target = client.name
        ecs = client.spec.ecs
        self.services = [(ecs.cluster, s) for s in ecs.services] if ecs else []

    def states(self) -> list[tuple[Service, Diagnosis]]:
        """Every declared service, read now, with the fix it gets."""
        found = []
        for cluster, name in self.services:
            service = read_service(self.client, cluster, name)
            revisions = (active_revisions(self.client, service.task_definition)
                         if service.task_definition else [])
            found.append((service, diagnose(service, revisions)))
        return found

    def settled(self, wait_s: float, clock: Callable[[], float] = time.monotonic,
                ) -> list[tuple[Service, Diagnosis]]:
        """:meth:`states` once every service this action answers for runs its desired count,
        or after ``wait_s``: what the re-check judges."""
        until = clock() + wait_s
        while True:
            found = self.states()
            if clock() >= until or all(s.running >= s.desired for s, d in found
                                       if self.answers_for(d)):
                return found
            time.sleep(POLL_S)

    def answers_for(self, diagnosis: Diagnosis) -> bool:
        """Whether the re-check of this action judges a service: all but the other
        action's."""
        return diagnosis.fix in (self.fix, "none", "wait")

    def select(self) -> list[Item]:
        items = []
        for service, diagnosis in self.states():
            if diagnosis.fix != self.fix:
                continue
            primary = service.primary
            deployment = primary.id if primary is not None else "none"
            items.append(Item(
                identity=self._identity(service, deployment),
                before=f"{service.describe()}: {diagnosis.why}",
                ref=Planned(service.cluster, service.name, service.task_definition, deployment,
                            service.desired, diagnosis.previous)))
        return items

    def drift(self, item: Item) -> str | None:
        planned: Planned = item.ref
        service = read_service(self.client, planned.cluster, planned.name)
        if service.status != "ACTIVE":
            return f"the service is {service.status} now"
        if service.task_definition != planned.task_definition:
            return (f"its task definition changed: {short(planned.task_definition)} -> "
                    f"{short(service.task_definition)}")
        primary = service.primary
        deployment = primary.id if primary is not None else "none"
        if deployment != planned.deployment:
            return f"a new deployment since the plan: {planned.deployment} -> {deployment}"
        if service.desired != planned.desired:
            return f"its desired count changed: {planned.desired} -> {service.desired}"
        if service.running >= service.desired:
            return f"it recovered: running {service.running}/{service.desired}"
        revisions = active_revisions(self.client, service.task_definition)
        if planned.previous and planned.previous not in revisions:
            return f"{short(planned.previous)} is no longer ACTIVE"
        diagnosis = diagnose(service, revisions)
        if diagnosis.fix != self.fix or diagnosis.previous != planned.previous:
            return f"no longer for {self.name}: {diagnosis.why}"
        return None

    def _identity(self, service: Service, deployment: str) -> str:
        raise NotImplementedError

    def _update(self, planned: Planned, **params: Any) -> Service:
        # The planned desired count, restated: see the module docstring.
        self.client.api.call("ecs", "update_service", cluster=planned.cluster,
                             service=planned.name, desiredCount=planned.desired, **params)
        return read_service(self.client, planned.cluster, planned.name)


class EcsRedeploy(_EcsAction):
    """The runbook's ``aws ecs update-service --force-new-deployment``: a new deployment of
    the revision the service runs, for each declared service short of its desired count
    that is not a failing new revision (:func:`diagnose`)."""

    name: ClassVar[str] = "ecs_redeploy"
    fix: ClassVar[Fix] = "redeploy"

    def __init__(self, client: AwsClient, settings: EcsRedeploySettings | None = None) -> None:
        super().__init__(client)

    def _identity(self, service: Service, deployment: str) -> str:
        return f"{service.arn} @ {service.task_definition} deployment {deployment}"

    def apply(self, item: Item) -> str:
        planned: Planned = item.ref
        service = self._update(planned, forceNewDeployment=True)
        primary = service.primary
        # Success is a new deployment listed by the service (its tasks start after: the
        # re-check waits for them).
        if primary is None or primary.id == planned.deployment:
            raise RuntimeError(f"UpdateService returned, but DescribeServices lists no new "
                               f"deployment (still {planned.deployment})")
        if service.task_definition != planned.task_definition:
            raise RuntimeError(f"the service runs {short(service.task_definition)} after the "
                               f"redeploy, not {short(planned.task_definition)}")
        return f"deployment {primary.id} of {short(service.task_definition)}, running " \
               f"{service.running}/{service.desired}"


class EcsRollback(_EcsAction):
    """The runbook's "roll back the task definition": a failing new revision's service back
    to the previous ACTIVE revision of its family (:func:`diagnose`)."""

    name: ClassVar[str] = "ecs_rollback"
    fix: ClassVar[Fix] = "rollback"

    def __init__(self, client: AwsClient, settings: EcsRollbackSettings | None = None) -> None:
        super().__init__(client)

    def _identity(self, service: Service, deployment: str) -> str:
        return f"{service.arn} @ {service.task_definition}"

    def apply(self, item: Item) -> str:
        planned: Planned = item.ref
        service = self._update(planned, taskDefinition=planned.previous)
        if service.task_definition != planned.previous:
            raise RuntimeError(f"UpdateService returned, but the service runs "
                               f"{short(service.task_definition)}, not "
                               f"{short(planned.previous)}")
        primary = service.primary
        return (f"{short(service.task_definition)}" +
                (f", deployment {primary.id}" if primary is not None else "") +
                f", running {service.running}/{service.desired}")


# -- Secrets Manager -----------------------------------------------------------------------
@dataclass(frozen=True)
class Secret:
    """A secret's metadata (DescribeSecret; never its value)."""

    arn: str
    name: str
    found: bool = True
    current: str = ""  # the AWSCURRENT version id; "" when the secret has no value
    rotation_enabled: bool = False
    rotate_after_days: int | None = None
    last_rotated: float | None = None
    deleted: bool = False


def read_secret(client: AwsClient, secret_id: str) -> Secret:
    reply = client.api.call("secretsmanager", "describe_secret", SecretId=secret_id,
                            handled=("ResourceNotFoundException",))
    if reply.error:
        return Secret(secret_id, secret_id, found=False)
    data = reply.data
    current = next((str(v) for v, stages in data.get("VersionIdsToStages", {}).items()
                    if "AWSCURRENT" in stages), "")
    rules = data.get("RotationRules", {})
    return Secret(str(data.get("ARN", secret_id)), str(data.get("Name", "")), True, current,
                  bool(data.get("RotationEnabled", False)),
                  int(rules["AutomaticallyAfterDays"]) if rules.get("AutomaticallyAfterDays")
                  else None, epoch(data.get("LastRotatedDate")), data.get("DeletedDate")
                  is not None)


def due(secret: SecretRotation, older_than_days: float, now: float) -> str:
    """Why ``secret`` is rotated (what test_secret_rotation fails it for), or ``""``."""
    age = secret.age_days(now)
    since = "last rotated" if secret.last_rotated is not None else "never rotated, created"
    aged = f"{since} {age:.1f} days ago" if age is not None else "age unknown"
    if not secret.rotation_enabled:
        return f"rotation off, {aged}"
    if age is not None and age > older_than_days:
        return f"rotation every {secret.rotate_after_days} days, {aged} " \
               f"(> {older_than_days:g})"
    return ""


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


class RotateSecret:
    """The runbook's "rotate the secret": RotateSecret for every secret of the region (as
    test_secret_rotation reads them) without rotation, or whose current value is older than
    ``older_than_days``. A secret without rotation gets ``RotationRules`` (every
    ``older_than_days`` days): that turns rotation on, with the rotation function the secret
    already has (AWS refuses a secret that has none; moto needs none). Success is a new
    AWSCURRENT version, read back from DescribeSecret within ``wait_s``."""

    name: ClassVar[str] = "rotate_secret"

    def __init__(self, client: AwsClient, older_than_days: int,
                 wait_s: float = ROTATION_WAIT_S) -> None:
        self.client = client
        self.target = client.name
        self.older_than_days = older_than_days
        self.wait_s = wait_s

    def select(self) -> list[Item]:
        listed, _capped = self.client.secrets_rotation()
        now = time.time()
        items = []
        for listing in listed:
            why = due(listing, self.older_than_days, now)
            if not why:
                continue
            secret = read_secret(self.client, listing.name)
            if not secret.found or secret.deleted:
                continue
            items.append(Item(identity=f"{secret.arn} version {secret.current or 'none'}",
                              before=why, ref=secret))
        return items

    def drift(self, item: Item) -> str | None:
        planned: Secret = item.ref
        secret = read_secret(self.client, planned.arn)
        if not secret.found:
            return "the secret was deleted"
        if secret.deleted:
            return "the secret is scheduled for deletion"
        if secret.current != planned.current:
            return (f"rotated since the plan: AWSCURRENT is version {secret.current or 'none'}, "
                    f"was {planned.current or 'none'}")
        return None

    def apply(self, item: Item) -> str:
        planned: Secret = item.ref
        params: dict[str, Any] = {"SecretId": planned.arn}
        if not planned.rotation_enabled:
            params["RotationRules"] = {"AutomaticallyAfterDays": self.older_than_days}
        reply = self.client.api.call(
            "secretsmanager", "rotate_secret", handled=(
                "InvalidRequestException", "InvalidParameterException",
                "ResourceNotFoundException", "AccessDeniedException", "LimitExceededException",
            ), **params)
        if reply.error:
            message = " ".join(reply.message.split())[:MESSAGE_CHARS]
            raise RuntimeError(f"RotateSecret refused: {reply.error}" +
                               (f": {message}" if message else ""))
        # RotateSecret starts the rotation function and returns: success is a new
        # AWSCURRENT version, read back.
        until = time.monotonic() + self.wait_s
        while True:
            secret = read_secret(self.client, planned.arn)
            if secret.current and secret.current != planned.current:
                break
            if time.monotonic() >= until:
                raise RuntimeError(f"RotateSecret accepted, but AWSCURRENT is still version "
                                   f"{planned.current or 'none'} after {self.wait_s:g} s "
                                   "(see the rotation function's logs)")
            time.sleep(min(POLL_S, max(0.0, until - time.monotonic())))
        schedule = (f"rotation every {secret.rotate_after_days} days"
                    if secret.rotation_enabled else "rotation off")
        return f"version {secret.current}, rotated {_when(secret.last_rotated)}, {schedule}"
