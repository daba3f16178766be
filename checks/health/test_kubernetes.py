"""Kubernetes health: the TekuToko runbook's ``kubectl get deploy,pods,hpa,events``.

Each declared Deployment is available and rolled out; no pod of the target's namespaces
crash-loops, cannot pull its image, or restarts too often; each declared HPA has room to
scale; no Warning event is recent.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.targets.kubernetes_model import BAD_WAITING, show_time
from opsverify.thresholds import Threshold, Verdict

if TYPE_CHECKING:
    from opsverify.targets.kubernetes import KubernetesClient
    from opsverify.targets.kubernetes_model import (
        DeploymentState,
        EventList,
        Found,
        HpaState,
        ObjectRef,
        PodList,
    )

EVENTS_SHOWN = 20


# Both deployment checks judge one GET of the deployment, prefetched in the probe pool.
@probe(key=lambda kubernetes, kubernetes_deployment: ("deployment", kubernetes_deployment.label))
def kubernetes_deployment_found(kubernetes: KubernetesClient,
                                kubernetes_deployment: ObjectRef) -> Found[DeploymentState]:
    return kubernetes.deployment(kubernetes_deployment)


# One listing of every pod, shared with checks/security/test_kubernetes.py.
@probe(key=lambda kubernetes: "pods")
def kubernetes_pods(kubernetes: KubernetesClient) -> PodList:
    return kubernetes.pods()


@probe
def kubernetes_hpa_found(kubernetes: KubernetesClient,
                         kubernetes_hpa: ObjectRef) -> Found[HpaState]:
    return kubernetes.hpa(kubernetes_hpa)


@probe
def kubernetes_warning_events(kubernetes: KubernetesClient) -> EventList:
    return kubernetes.warning_events()


def _exists(kind: str, found: Found[object], evidence: EvidenceLog, *declared: str) -> bool:
    """A declared object exists; a missing one FAILs every check of it, listing what is
    there instead."""
    ref = found.ref
    evidence.expect(f"{kind}s named {ref.name!r} in namespace {ref.namespace}",
                    0 if found.state is None else 1, at_least=1,
                    source=evidence.source_of(*declared))
    if found.state is None:
        evidence.note(f"{kind}s in namespace {ref.namespace}",
                      ", ".join(found.others[:20]) or "none")
    return found.state is not None


def _conditions(state: DeploymentState, evidence: EvidenceLog) -> None:
    for kind in ("Available", "Progressing", "ReplicaFailure"):
        condition = state.condition(kind)
        if condition is not None and (condition.status != "True" or kind == "ReplicaFailure"
                                      or condition.reason == "ProgressDeadlineExceeded"):
            evidence.note(f"{state.name} condition {kind}", condition.describe())


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_deployment_available(kubernetes: KubernetesClient, kubernetes_deployment: ObjectRef,
                              kubernetes_deployment_found: Found[DeploymentState],
                              evidence: EvidenceLog) -> None:
    """A declared deployment exists and every replica it asks for is ready and available."""
    found = kubernetes_deployment_found
    if not _exists("deployment", found, evidence, "targets", kubernetes.name, "deployments"):
        return
    state = found.state
    assert state is not None
    evidence.expect(f"{state.name} readyReplicas", state.ready, at_least=state.replicas,
                    unit="replicas", source="spec.replicas")
    evidence.expect(f"{state.name} availableReplicas", state.available,
                    at_least=state.replicas, unit="replicas", source="spec.replicas")
    if not state.is_available:
        evidence.note(f"{state.name} unavailableReplicas", state.unavailable, unit="replicas")
        _conditions(state, evidence)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_deployment_rollout_complete(kubernetes: KubernetesClient,
                                     kubernetes_deployment: ObjectRef,
                                     kubernetes_deployment_found: Found[DeploymentState],
                                     evidence: EvidenceLog) -> None:
    """A declared deployment's rollout is complete (``kubectl rollout status``): its
    controller saw the current generation, every replica runs the current template, no old
    replica is left, and the rollout did not exceed its progress deadline."""
    found = kubernetes_deployment_found
    if not _exists("deployment", found, evidence, "targets", kubernetes.name, "deployments"):
        return
    state = found.state
    assert state is not None
    evidence.expect(f"{state.name} status.observedGeneration", state.observed_generation,
                    at_least=state.generation, source="metadata.generation")
    evidence.expect(f"{state.name} updatedReplicas", state.updated, at_least=state.replicas,
                    unit="replicas", source="spec.replicas")
    evidence.expect(f"{state.name} old replicas left",
                    max(0, state.status_replicas - state.updated), at_most=0, unit="replicas")
    progressing = state.condition("Progressing")
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        # The controller gave up on this rollout: it will not complete by itself.
        evidence.expect(f"{state.name} condition Progressing", progressing.describe(),
                        equals="within its progressDeadlineSeconds")
    elif progressing is not None:
        evidence.note(f"{state.name} condition Progressing", progressing.describe())
    if state.paused:
        evidence.note(f"{state.name} rollout", "paused (spec.paused: true)")
    if not state.rollout_complete:
        _conditions(state, evidence)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_pods_healthy(kubernetes: KubernetesClient, kubernetes_pods: PodList,
                      evidence: EvidenceLog) -> None:
    """No container of the target's pods is stuck (CrashLoopBackOff, ImagePullBackOff,
    ErrImagePull, a configuration error) and none restarted more than
    ``kubernetes.restart_count`` allows (default: WARN over 3, FAIL over 5)."""
    pods = kubernetes_pods.pods
    evidence.note("pods inspected", len(pods), unit="pods")
    evidence.note("namespaces", ", ".join(kubernetes_pods.namespaces))
    stuck = 0
    restarted = []
    for pod in pods:
        for c in pod.containers:
            where = f"{pod.path} {c.label}"
            if c.waiting_reason in BAD_WAITING:
                stuck += 1
                shown = c.waiting_reason + (f": {c.waiting_message}" if c.waiting_message else "")
                evidence.expect(f"{where} waiting", shown, equals="not stuck")
                if c.last_exit_reason or c.last_exit_code is not None:
                    evidence.note(f"{where} last exit", f"{c.last_exit_reason or 'exited'} "
                                  f"(exit code {c.last_exit_code})")
            if c.restart_count:
                restarted.append((where, c.restart_count))
    evidence.expect("containers stuck waiting", stuck, at_most=0, unit="containers")
    # The worst container is judged against the threshold; every one past it is named.
    default = Threshold(warn=3, crit=5)
    applied = evidence.threshold("kubernetes.restart_count", default)
    restarted.sort(key=lambda r: -r[1])
    worst_where, worst = restarted[0] if restarted else ("", 0)
    evidence.within("kubernetes.restart_count", worst, unit="restarts", default=default,
                    item=worst_where or None)
    for where, count in restarted:
        if applied.crit is not None and count > applied.crit:
            evidence.expect(f"{where} restartCount", count, at_most=applied.crit,
                            unit="restarts", source=f"crit from {applied.source}")
        elif applied.warn is not None and count > applied.warn:
            evidence.note(f"{where} restartCount", count,
                          unit=f"restarts (over warn {applied.warn:g})")
    if not pods:
        evidence.note("pods", f"none in namespace(s) {', '.join(kubernetes_pods.namespaces)}")

@pytest.mark.daily
def test_hpa_not_at_max(kubernetes: KubernetesClient, kubernetes_hpa: ObjectRef,
                        kubernetes_hpa_found: Found[HpaState], evidence: EvidenceLog) -> None:
    """A declared HPA (read through ``autoscaling/v1``) runs and wants fewer replicas than
    its maximum: pinned at max, it cannot absorb more load."""
    found = kubernetes_hpa_found
    if not _exists("horizontalpodautoscaler", found, evidence,
                   "targets", kubernetes.name, "hpas"):
        return
    hpa = found.state
    assert hpa is not None
    if hpa.min_replicas >= hpa.max_replicas:
        pytest.skip(f"{hpa.namespace}/{hpa.name}: minReplicas = maxReplicas = "
                    f"{hpa.max_replicas}, it cannot scale: nothing to judge")
    below = hpa.max_replicas - 1
    evidence.expect(f"{hpa.name} currentReplicas", hpa.current, at_most=below,
                    unit=f"replicas (maxReplicas {hpa.max_replicas})")
    evidence.expect(f"{hpa.name} desiredReplicas", hpa.desired, at_most=below,
                    unit=f"replicas (maxReplicas {hpa.max_replicas})")
    evidence.note(f"{hpa.name} scales", f"{hpa.target} between {hpa.min_replicas} and "
                  f"{hpa.max_replicas}")
    if hpa.cpu_utilization is not None:
        evidence.note(f"{hpa.name} CPU utilization", hpa.cpu_utilization,
                      unit=f"% (target {hpa.cpu_target if hpa.cpu_target is not None else '?'} %)")
    evidence.note(f"{hpa.name} last scaled", show_time(hpa.last_scale))


@pytest.mark.daily
def test_no_recent_warning_events(kubernetes: KubernetesClient,
                                  kubernetes_warning_events: EventList,
                                  evidence: EvidenceLog) -> None:
    """No Warning event was last seen within ``events.window_minutes`` (default 60) in
    the target's namespaces; those listed are grouped by object and reason, counted."""
    settings = kubernetes.spec.events
    events = kubernetes_warning_events.within(settings.window_minutes,
                                              frozenset(settings.ignore_reasons))
    evidence.note("namespaces", ", ".join(kubernetes_warning_events.namespaces))
    evidence.note("window", settings.window_minutes, unit="minutes")
    judged = evidence.within("kubernetes.warning_events", sum(e.count for e in events),
                             unit="events", default=Threshold(crit=0))
    groups: Counter[tuple[str, str]] = Counter()
    latest: dict[tuple[str, str], tuple[str, str]] = {}
    for e in events:
        key = (f"{e.namespace}/{e.involved}", e.reason)
        groups[key] += e.count
        latest.setdefault(key, (show_time(e.last_seen), e.message))
    for (obj, reason), count in groups.most_common(EVENTS_SHOWN):
        when, message = latest[(obj, reason)]
        shown = f"{count}×, last {when}: {message}"
        if judged.verdict is Verdict.FAIL:  # the failure lists what happened to what
            evidence.expect(f"{obj} {reason}", shown, equals="no Warning event")
        else:
            evidence.note(f"{obj} {reason}", shown)
    if len(groups) > EVENTS_SHOWN:
        evidence.note("more objects and reasons", len(groups) - EVENTS_SHOWN)
    reasons: Counter[str] = Counter()
    for (_, reason), count in groups.items():
        reasons[reason] += count
    if reasons:
        evidence.note("reasons", ", ".join(f"{r} {c}×" for r, c in reasons.most_common()))
