"""What reading a Kubernetes API server returns, as the checks judge it.

Each dataclass is parsed from the API's own JSON (the field names are the API's:
``readyReplicas``, ``lastSuccessfulTime``), so a check's evidence says what ``kubectl get -o
yaml`` would show. Nothing here does I/O: the client (``targets/kubernetes.py``) reads, these
parse, the checks judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from opsverify.targets.base import api_time

# Why a container waits that means it will not run until someone acts: the kubelet's
# back-off reasons, and the configuration errors it cannot get past by retrying.
BAD_WAITING = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull",
                         "InvalidImageName", "CreateContainerConfigError",
                         "CreateContainerError", "RunContainerError"})
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
MESSAGE_CHARS = 200
T = TypeVar("T")


def show_time(when: datetime | None) -> str:
    return "never" if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(text: object, limit: int = MESSAGE_CHARS) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _int(value: object, default: int = 0) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else default


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class ObjectRef:
    """A declared object: its namespace and name, and the label it was declared as (the
    item's id: ``tekutoko-api``, or ``tekutoko/tekutoko-api`` when it names its namespace)."""

    namespace: str
    name: str
    label: str

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Condition:
        return cls(str(data.get("type", "")), str(data.get("status", "")),
                   str(data.get("reason") or ""), one_line(data.get("message")))

    def describe(self) -> str:
        text = f"{self.type}={self.status}"
        if self.reason:
            text += f" ({self.reason})"
        return f"{text}: {self.message}" if self.message else text


def _meta(data: dict[str, Any]) -> dict[str, Any]:
    return _dict(data.get("metadata"))


@dataclass(frozen=True)
class DeploymentState:
    """One Deployment: what it asks for (``spec``) and what its controller reports."""

    namespace: str
    name: str
    uid: str
    generation: int
    observed_generation: int
    replicas: int  # spec.replicas (1 when unset, as the API server defaults it)
    status_replicas: int  # pods of every ReplicaSet, old ones included
    ready: int
    available: int
    updated: int
    unavailable: int
    paused: bool
    conditions: tuple[Condition, ...]
    selector: str  # the label selector of its pods, as a list call takes it
    restarted_at: str  # the pod template's kubectl.kubernetes.io/restartedAt, "" when unset

    @classmethod
    def parse(cls, data: dict[str, Any]) -> DeploymentState:
        meta, spec, status = _meta(data), _dict(data.get("spec")), _dict(data.get("status"))
        template = _meta(_dict(spec.get("template")))
        return cls(
            namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")), generation=_int(meta.get("generation")),
            observed_generation=_int(status.get("observedGeneration")),
            replicas=_int(spec.get("replicas"), 1),
            status_replicas=_int(status.get("replicas")),
            ready=_int(status.get("readyReplicas")),
            available=_int(status.get("availableReplicas")),
            updated=_int(status.get("updatedReplicas")),
            unavailable=_int(status.get("unavailableReplicas")),
            paused=bool(spec.get("paused")),
            conditions=tuple(Condition.parse(c) for c in _list(status.get("conditions"))
                             if isinstance(c, dict)),
            selector=label_selector(_dict(spec.get("selector"))),
            restarted_at=str(_dict(template.get("annotations")).get(RESTARTED_AT) or ""),
        )

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.name}"

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    @property
    def is_available(self) -> bool:
        """Every asked-for replica is ready and available."""
        return self.ready >= self.replicas and self.available >= self.replicas

    @property
    def rollout_complete(self) -> bool:
        """``kubectl rollout status``'s test: the controller saw this generation, every
        replica runs the current template, and no old one is left."""
        return (self.observed_generation >= self.generation and self.updated >= self.replicas
                and self.status_replicas <= self.updated and self.available >= self.updated)

    def describe(self) -> str:
        """``generation 4 (observed 4), ready 1/3, available 1/3, updated 3/3``."""
        text = (f"generation {self.generation} (observed {self.observed_generation}), ready "
                f"{self.ready}/{self.replicas}, available {self.available}/{self.replicas}, "
                f"updated {self.updated}/{self.replicas}")
        return text + (", paused" if self.paused else "")


def label_selector(selector: dict[str, Any]) -> str:
    """A LabelSelector as the ``labelSelector`` query parameter writes it."""
    parts = [f"{k}={v}" for k, v in sorted(_dict(selector.get("matchLabels")).items())]
    for expr in _list(selector.get("matchExpressions")):
        key, op = str(_dict(expr).get("key", "")), str(_dict(expr).get("operator", ""))
        values = ",".join(str(v) for v in _list(_dict(expr).get("values")))
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, key))
    return ",".join(parts)


@dataclass(frozen=True)
class ContainerState:
    """One container of a pod: its spec (image, security context, limits) and its status."""

    name: str
    init: bool
    image: str
    privileged: bool
    allow_privilege_escalation: bool | None  # None: not set (Linux allows it)
    limits: tuple[tuple[str, str], ...]  # (resource, quantity) of resources.limits
    ready: bool
    restart_count: int
    waiting_reason: str
    waiting_message: str
    last_exit_reason: str  # lastState.terminated: why it stopped last time
    last_exit_code: int | None

    @property
    def label(self) -> str:
        return f"init container {self.name}" if self.init else f"container {self.name}"

    def limit(self, resource: str) -> str | None:
        return next((q for r, q in self.limits if r == resource), None)

    @property
    def image_tag_problem(self) -> str | None:
        """Why the image is not pinned: ``:latest``, or no tag at all (which pulls latest);
        ``None`` for a tag or a digest (``@sha256:…``)."""
        return image_tag_problem(self.image)


def image_tag_problem(image: str) -> str | None:
    if "@" in image:
        return None  # pinned by digest, whatever the tag says
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "no tag (pulls :latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return "the :latest tag"
    return None


@dataclass(frozen=True)
class PodState:
    namespace: str
    name: str
    phase: str
    owner: str  # Kind/name of its controller, "" for a bare pod
    labels: tuple[tuple[str, str], ...]
    containers: tuple[ContainerState, ...]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> PodState:
        meta, spec, status = _meta(data), _dict(data.get("spec")), _dict(data.get("status"))
        owner = next((f"{o.get('kind')}/{o.get('name')}" for o in _list(meta.get("ownerReferences"))
                      if isinstance(o, dict) and o.get("controller")), "")
        statuses = {(False, str(s.get("name"))): s for s in _list(status.get("containerStatuses"))
                    if isinstance(s, dict)}
        statuses |= {(True, str(s.get("name"))): s
                     for s in _list(status.get("initContainerStatuses")) if isinstance(s, dict)}
        containers = [
            _container(c, init, statuses.get((init, str(c.get("name"))), {}))
            for init, key in ((True, "initContainers"), (False, "containers"))
            for c in _list(spec.get(key)) if isinstance(c, dict)]
        return cls(namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
                   phase=str(status.get("phase") or "Unknown"), owner=owner,
                   labels=tuple(sorted((str(k), str(v))
                                       for k, v in _dict(meta.get("labels")).items())),
                   containers=tuple(containers))

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.name}"


def _container(spec: dict[str, Any], init: bool, status: dict[str, Any]) -> ContainerState:
    context = _dict(spec.get("securityContext"))
    escalation = context.get("allowPrivilegeEscalation")
    waiting = _dict(_dict(status.get("state")).get("waiting"))
    last = _dict(_dict(status.get("lastState")).get("terminated"))
    limits = _dict(_dict(spec.get("resources")).get("limits"))
    return ContainerState(
        name=str(spec.get("name", "")), init=init, image=str(spec.get("image") or ""),
        privileged=context.get("privileged") is True,
        allow_privilege_escalation=escalation if isinstance(escalation, bool) else None,
        limits=tuple(sorted((str(k), str(v)) for k, v in limits.items())),
        ready=status.get("ready") is True, restart_count=_int(status.get("restartCount")),
        waiting_reason=str(waiting.get("reason") or ""),
        waiting_message=one_line(waiting.get("message")),
        last_exit_reason=str(last.get("reason") or ""),
        last_exit_code=_int(last["exitCode"]) if "exitCode" in last else None,
    )


@dataclass(frozen=True)
class PodList:
    """Every pod of the target's namespaces (or of the listing's selector)."""

    namespaces: tuple[str, ...]
    pods: tuple[PodState, ...]


@dataclass(frozen=True)
class HpaState:
    """A HorizontalPodAutoscaler as ``autoscaling/v1`` serves it (every server does)."""

    namespace: str
    name: str
    target: str  # Kind/name it scales
    min_replicas: int
    max_replicas: int
    current: int
    desired: int
    cpu_utilization: int | None  # status.currentCPUUtilizationPercentage
    cpu_target: int | None
    last_scale: datetime | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> HpaState:
        meta, spec, status = _meta(data), _dict(data.get("spec")), _dict(data.get("status"))
        ref = _dict(spec.get("scaleTargetRef"))
        cpu = status.get("currentCPUUtilizationPercentage")
        cpu_target = spec.get("targetCPUUtilizationPercentage")
        return cls(
            namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
            target=f"{ref.get('kind', '?')}/{ref.get('name', '?')}",
            min_replicas=_int(spec.get("minReplicas"), 1),
            max_replicas=_int(spec.get("maxReplicas")),
            current=_int(status.get("currentReplicas")),
            desired=_int(status.get("desiredReplicas")),
            cpu_utilization=_int(cpu) if isinstance(cpu, int) else None,
            cpu_target=_int(cpu_target) if isinstance(cpu_target, int) else None,
            last_scale=api_time(status.get("lastScaleTime")),
        )


@dataclass(frozen=True)
class CronJobState:
    namespace: str
    name: str
    schedule: str
    suspended: bool
    created: datetime | None
    last_schedule: datetime | None
    last_success: datetime | None
    active: tuple[str, ...]  # names of the Jobs running now

    @classmethod
    def parse(cls, data: dict[str, Any]) -> CronJobState:
        meta, spec, status = _meta(data), _dict(data.get("spec")), _dict(data.get("status"))
        return cls(
            namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
            schedule=str(spec.get("schedule", "")), suspended=spec.get("suspend") is True,
            created=api_time(meta.get("creationTimestamp")),
            last_schedule=api_time(status.get("lastScheduleTime")),
            last_success=api_time(status.get("lastSuccessfulTime")),
            active=tuple(str(_dict(a).get("name", "")) for a in _list(status.get("active"))),
        )


@dataclass(frozen=True)
class EventState:
    """A ``core/v1`` Event: what happened to which object, how often, and when last."""

    namespace: str
    type: str
    reason: str
    message: str
    involved: str  # Kind/name
    count: int
    last_seen: datetime | None

    @classmethod
    def parse(cls, data: dict[str, Any]) -> EventState:
        meta, obj = _meta(data), _dict(data.get("involvedObject"))
        series = _dict(data.get("series"))
        # When it was last seen: the series' last observation (events.k8s.io), else the
        # last occurrence (core/v1), else when it happened once; creation only as a last
        # resort (a re-created old event is not new).
        times = [api_time(series.get("lastObservedTime")), api_time(data.get("lastTimestamp")),
                 api_time(data.get("eventTime")), api_time(data.get("firstTimestamp")),
                 api_time(meta.get("creationTimestamp"))]
        seen = next((t for t in times if t is not None), None)
        return cls(
            namespace=str(meta.get("namespace", "")), type=str(data.get("type") or ""),
            reason=str(data.get("reason") or ""), message=one_line(data.get("note")
                                                                   or data.get("message")),
            involved=f"{obj.get('kind', '?')}/{obj.get('name', '?')}",
            count=max(1, _int(series.get("count")), _int(data.get("count"))),
            last_seen=seen,
        )


@dataclass(frozen=True)
class EventList:
    """Warning events of the target's namespaces, and the server's clock when it answered
    (the window is judged by it, not ours)."""

    namespaces: tuple[str, ...]
    events: tuple[EventState, ...]
    now: datetime

    def within(self, minutes: float, ignore: frozenset[str] = frozenset()) -> list[EventState]:
        """Those last seen in the past ``minutes``, newest first."""
        cutoff = self.now.timestamp() - minutes * 60
        found = [e for e in self.events if e.last_seen is not None
                 and e.last_seen.timestamp() >= cutoff and e.reason not in ignore]
        return sorted(found, key=lambda e: e.last_seen or self.now, reverse=True)


@dataclass(frozen=True)
class Found(Generic[T]):
    """A declared object as read (``None``: no such object), the names of its kind that do
    exist in its namespace (only when it is missing, for the failure to show), and the
    server's clock when it answered."""

    ref: ObjectRef
    state: T | None
    others: tuple[str, ...]
    now: datetime
