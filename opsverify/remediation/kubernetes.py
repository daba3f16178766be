"""Kubernetes fixes, each enabled per target under ``remediation:`` in its section:

    remediation:
      rollout_restart: {select: unhealthy}          # or all; deployments: [a subset]
      scale: {replicas: {tekutoko-api: 3}}

``rollout_restart`` is ``kubectl rollout restart``: the pod template's
``kubectl.kubernetes.io/restartedAt`` annotation is stamped, so the deployment controller
replaces every pod. By default only the declared deployments that are unavailable or have a
pod in CrashLoopBackOff are restarted (``select: all``: every one listed). ``scale`` is
``kubectl scale``: the scale subresource's ``spec.replicas`` is set where it differs. Each
is verified from the server (a new generation, the replicas read back); the re-check waits,
bounded by ``wait_s``, for the rollout the change started, as ``kubectl rollout status``
does. The action takes a write-capable :class:`~opsverify.targets.kubernetes.KubernetesClient`
(``writable=True``: GETs and exactly these two PATCHes), which exists only inside an allowed
destructive check (``kubernetes_admin``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field

from opsverify.remediation import Item
from opsverify.targets.base import Section
from opsverify.targets.kubernetes_model import DeploymentState, ObjectRef

if TYPE_CHECKING:
    from opsverify.targets.kubernetes import KubernetesClient

WAIT_S = 120.0
POLL_S = 0.25


class RolloutRestartSettings(Section):
    # Which declared deployments it may restart (default: every one of `deployments:`).
    deployments: list[str] | None = None
    # unhealthy: those unavailable or with a pod in CrashLoopBackOff; all: every one listed.
    select: Literal["unhealthy", "all"] = "unhealthy"
    # How long the re-check waits for the rollout each restart starts.
    wait_s: float = Field(default=WAIT_S, gt=0)


class ScaleSettings(Section):
    # deployment (or namespace/deployment) -> the spec.replicas it must have.
    replicas: dict[str, Annotated[int, Field(ge=0)]] = Field(min_length=1)
    wait_s: float = Field(default=WAIT_S, gt=0)


class KubernetesRemediation(Section):
    """``remediation:`` of a kubernetes target: an action runs only where it is listed."""

    rollout_restart: RolloutRestartSettings | None = None
    scale: ScaleSettings | None = None

    def declared_names(self) -> list[str]:
        """Every object name the actions' settings write (validated as the target's are)."""
        names = list(self.rollout_restart.deployments or []) if self.rollout_restart else []
        return names + (list(self.scale.replicas) if self.scale else [])


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PlannedDeployment:
    """What identifies a deployment across plan and apply: its uid (one deleted and created
    again under the same name is another), and the generation and replicas it had."""

    ref: ObjectRef
    uid: str
    generation: int
    replicas: int


def _refs(client: KubernetesClient, entries: list[str]) -> list[ObjectRef]:
    return [client.resolve(client.spec.ref(entry)) for entry in entries]


def replaced(state: DeploymentState | None) -> str:
    """The drift of a planned deployment that is no longer the one planned (its uid)."""
    if state is None:
        return "the deployment was deleted"
    return f"deleted and created again since the plan (uid {state.uid[:8]})"


def crash_looping(client: KubernetesClient, state: DeploymentState) -> list[str]:
    """``pod/container`` of the deployment's pods waiting in CrashLoopBackOff."""
    if not state.selector:
        return []
    pods = client.pods(state.selector, state.namespace).pods
    return [f"{p.name}/{c.name}" for p in pods for c in p.containers
            if c.waiting_reason == "CrashLoopBackOff"]


class RolloutRestart:
    """The runbook's "restart the deployment": each selected declared deployment's pod
    template stamped with ``restartedAt`` (by its uid), the new generation read back."""

    name: ClassVar[str] = "rollout_restart"

    def __init__(self, client: KubernetesClient, settings: RolloutRestartSettings) -> None:
        self.client = client
        self.target = client.name
        self.settings = settings

    def considered(self) -> list[ObjectRef]:
        """The deployments it chooses from (the population a percentage limit is taken of)."""
        return _refs(self.client, self.settings.deployments or self.client.spec.deployments)

    def _why(self, state: DeploymentState) -> str:
        """Why it needs a restart (``""``: it does not), for the plan and the drift."""
        looping = crash_looping(self.client, state)
        reasons = [] if state.is_available else [state.describe()]
        if looping:
            reasons.append("CrashLoopBackOff: " + ", ".join(looping[:5])
                           + (f" and {len(looping) - 5} more" if len(looping) > 5 else ""))
        return "; ".join(reasons)

    def select(self) -> list[Item]:
        items = []
        for ref in self.considered():
            state = self.client.deployment_state(ref)
            if state is None:
                continue  # nothing to restart: test_deployment_available says it is missing
            why = self._why(state)
            if self.settings.select == "unhealthy" and not why:
                continue
            before = why if why else state.describe()
            items.append(Item(identity=f"deployment {ref.path} (uid {state.uid[:8]})",
                              before=f"{before}; restartedAt {state.restarted_at or 'never'}",
                              ref=PlannedDeployment(ref, state.uid, state.generation,
                                                    state.replicas)))
        return items

    def drift(self, item: Item) -> str | None:
        planned: PlannedDeployment = item.ref
        state = self.client.deployment_state(planned.ref)
        if state is None or state.uid != planned.uid:
            return replaced(state)
        if state.generation != planned.generation:
            return (f"changed since the plan (generation {planned.generation} → "
                    f"{state.generation}): restarted or edited by someone else")
        if self.settings.select == "unhealthy" and not self._why(state):
            return "available again, no pod in CrashLoopBackOff"
        return None

    def apply(self, item: Item) -> str:
        planned: PlannedDeployment = item.ref
        at = _utc_now()
        self.client.restart_deployment(planned.ref, at)
        # Success is a new generation of the same deployment carrying the stamp, read back.
        after = self.client.deployment_state(planned.ref)
        if after is None or after.uid != planned.uid:
            raise RuntimeError(f"deployment {planned.ref.path} is gone after the PATCH")
        if after.generation <= planned.generation or after.restarted_at != at:
            raise RuntimeError(f"deployment {planned.ref.path} was not restarted (generation "
                               f"{after.generation}, restartedAt {after.restarted_at or 'unset'})")
        return f"restartedAt {at}, generation {planned.generation} → {after.generation}"


@dataclass(frozen=True)
class PlannedScale:
    ref: ObjectRef
    uid: str
    current: int
    wanted: int


class Scale:
    """The runbook's "scale the deployment": each listed deployment whose ``spec.replicas``
    differs from the setting, scaled through its scale subresource, the replicas read back."""

    name: ClassVar[str] = "scale"

    def __init__(self, client: KubernetesClient, settings: ScaleSettings) -> None:
        self.client = client
        self.target = client.name
        self.settings = settings

    def considered(self) -> list[tuple[ObjectRef, int]]:
        refs = _refs(self.client, list(self.settings.replicas))
        return [(ref, self.settings.replicas[ref.label]) for ref in refs]

    def select(self) -> list[Item]:
        items = []
        for ref, wanted in self.considered():
            state = self.client.deployment_state(ref)
            if state is None or state.replicas == wanted:
                continue
            items.append(Item(
                identity=f"deployment {ref.path} (uid {state.uid[:8]}) to {wanted} replicas",
                before=f"spec.replicas {state.replicas}, {state.describe()}",
                ref=PlannedScale(ref, state.uid, state.replicas, wanted)))
        return items

    def drift(self, item: Item) -> str | None:
        planned: PlannedScale = item.ref
        state = self.client.deployment_state(planned.ref)
        if state is None or state.uid != planned.uid:
            return replaced(state)
        if state.replicas != planned.current:
            return f"spec.replicas is {state.replicas} now (planned from {planned.current})"
        return None

    def apply(self, item: Item) -> str:
        planned: PlannedScale = item.ref
        self.client.scale_deployment(planned.ref, planned.wanted)
        now = self.client.scale_replicas(planned.ref)
        if now != planned.wanted:
            raise RuntimeError(f"deployment {planned.ref.path}: spec.replicas reads {now} after "
                               f"the PATCH, not {planned.wanted}")
        return f"spec.replicas {planned.current} → {now} (read back)"


@dataclass(frozen=True)
class Settled:
    """A deployment once its rollout settled (or the wait ran out), and how long that took."""

    state: DeploymentState | None
    waited_s: float
    bound_s: float


def await_rollout(client: KubernetesClient, ref: ObjectRef, wait_s: float) -> Settled:
    """Read ``ref`` until it is available and rolled out (``kubectl rollout status``), at
    most ``wait_s``: the controller, not us, replaces the pods."""
    started = time.monotonic()
    while True:
        state = client.deployment_state(ref)
        waited = time.monotonic() - started
        if state is None or (state.is_available and state.rollout_complete) or waited >= wait_s:
            return Settled(state, waited, wait_s)
        time.sleep(POLL_S)
