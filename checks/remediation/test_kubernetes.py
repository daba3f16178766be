"""Kubernetes remediation: the runbooks' fixes, each enabled per target (``remediation:``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation.kubernetes import (
    RolloutRestart,
    RolloutRestartSettings,
    Scale,
    ScaleSettings,
    await_rollout,
    crash_looping,
)

if TYPE_CHECKING:
    from opsverify.targets.kubernetes import KubernetesClient
    from opsverify.targets.kubernetes_model import ObjectRef


def _recheck(client: KubernetesClient, ref: ObjectRef, changed: bool, wait_s: float,
             evidence: EvidenceLog) -> None:
    """What test_deployment_available and test_deployment_rollout_complete judge, once the
    rollout a change started has settled (a bounded wait, shown in the evidence)."""
    settled = await_rollout(client, ref, wait_s if changed else 0)
    state = settled.state
    if changed:
        evidence.note(f"{ref.name} waited for its rollout", round(settled.waited_s, 1),
                      unit=f"s (at most {settled.bound_s:g} s)")
    if state is None:
        evidence.expect(f"deployments named {ref.name!r} in namespace {ref.namespace}", 0,
                        at_least=1)
        return
    evidence.expect(f"{state.name} readyReplicas", state.ready, at_least=state.replicas,
                    unit="replicas", source="spec.replicas")
    evidence.expect(f"{state.name} availableReplicas", state.available,
                    at_least=state.replicas, unit="replicas", source="spec.replicas")
    evidence.expect(f"{state.name} status.observedGeneration", state.observed_generation,
                    at_least=state.generation, source="metadata.generation")
    evidence.expect(f"{state.name} updatedReplicas", state.updated, at_least=state.replicas,
                    unit="replicas", source="spec.replicas")


@pytest.mark.destructive
def test_rollout_restart(
    kubernetes_admin: KubernetesClient, kubernetes_rollout_restart: RolloutRestartSettings,
    remediation: Gate, evidence: EvidenceLog,
) -> None:
    """``kubectl rollout restart`` of the declared deployments that are unavailable or have
    a pod in CrashLoopBackOff (``select: all``: every one listed), then re-check, once each
    rollout settled, that they are available and rolled out and no pod of theirs
    crash-loops."""
    action = RolloutRestart(kubernetes_admin, kubernetes_rollout_restart)
    considered = action.considered()
    outcome = remediation.run(action, population=len(considered))
    restarted = {item.ref.ref for item, _ in outcome.applied}
    for ref in considered:
        _recheck(kubernetes_admin, ref, ref in restarted, kubernetes_rollout_restart.wait_s,
                 evidence)
        state = kubernetes_admin.deployment_state(ref)
        if state is not None:
            looping = crash_looping(kubernetes_admin, state)
            evidence.expect(f"{ref.name} pods in CrashLoopBackOff", len(looping), at_most=0,
                            unit="containers")
            if looping:
                evidence.note(f"{ref.name} crash-looping", ", ".join(looping[:10]))


@pytest.mark.destructive
def test_scale(
    kubernetes_admin: KubernetesClient, kubernetes_scale: ScaleSettings,
    remediation: Gate, evidence: EvidenceLog,
) -> None:
    """``kubectl scale`` of the listed deployments whose ``spec.replicas`` differs from
    ``replicas:``, then re-check the replicas read back and, once each rollout settled,
    that every replica is ready and available."""
    action = Scale(kubernetes_admin, kubernetes_scale)
    considered = action.considered()
    outcome = remediation.run(action, population=len(considered))
    scaled = {item.ref.ref for item, _ in outcome.applied}
    for ref, wanted in considered:
        evidence.expect(f"{ref.name} spec.replicas", kubernetes_admin.scale_replicas(ref),
                        equals=wanted, source=evidence.source_of(
                            "targets", kubernetes_admin.name, "remediation", "scale",
                            "replicas", ref.label))
        _recheck(kubernetes_admin, ref, ref in scaled, kubernetes_scale.wait_s, evidence)
