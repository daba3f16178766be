"""Kubernetes security: the Pod Security Standards' container rules, for every pod of every
kubernetes target's namespaces (init containers included).

No container is privileged (``allowPrivilegeEscalation`` not set to ``false`` is a WARN,
as the restricted profile requires it); no image is ``:latest`` or untagged (a digest pins
it, whatever its tag); every container has cpu and memory limits.
``security: {<check>: false}`` on the target opts it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.kubernetes import KubernetesClient
    from opsverify.targets.kubernetes_model import PodList

LIMITED = ("cpu", "memory")


# The same listing as checks/health/test_kubernetes.py's kubernetes_pods: one read.
@probe(key=lambda kubernetes: "pods")
def security_kubernetes_pods(kubernetes: KubernetesClient) -> PodList:
    return kubernetes.pods()


def _inspected(pods: PodList, evidence: EvidenceLog) -> None:
    evidence.note("pods inspected", len(pods.pods), unit="pods")
    evidence.note("namespaces", ", ".join(pods.namespaces))


@pytest.mark.monthly
@pytest.mark.security_check("privileged")
def test_no_privileged_container(security_kubernetes_pods: PodList,
                                 evidence: EvidenceLog) -> None:
    """No container runs privileged (every device, every capability: the node's root); one
    that may gain privileges (``allowPrivilegeEscalation`` not ``false``) is a WARN."""
    _inspected(security_kubernetes_pods, evidence)
    privileged = 0
    escalating = []
    for pod in security_kubernetes_pods.pods:
        for c in pod.containers:
            if c.privileged:
                privileged += 1
                evidence.expect(f"{pod.path} {c.label} securityContext.privileged", True,
                                equals=False)
            elif c.allow_privilege_escalation is not False:
                escalating.append(f"{pod.path} {c.name}")
    evidence.expect("privileged containers", privileged, at_most=0, unit="containers")
    evidence.within("kubernetes.privilege_escalation_containers", len(escalating),
                    unit="containers", default=Threshold(warn=0))
    if escalating:
        evidence.note("allowPrivilegeEscalation not false", ", ".join(escalating[:20])
                      + (f" and {len(escalating) - 20} more" if len(escalating) > 20 else ""))


@pytest.mark.monthly
@pytest.mark.security_check("latest_tag")
def test_no_latest_image_tag(security_kubernetes_pods: PodList,
                             evidence: EvidenceLog) -> None:
    """Every image is pinned: a version tag or a digest, never ``:latest`` or no tag (which
    is latest), so a restart cannot silently run other code."""
    _inspected(security_kubernetes_pods, evidence)
    unpinned = 0
    for pod in security_kubernetes_pods.pods:
        for c in pod.containers:
            problem = c.image_tag_problem
            if problem is not None:
                unpinned += 1
                evidence.expect(f"{pod.path} {c.label} image", f"{c.image} ({problem})",
                                equals="a version tag or a digest")
    evidence.expect("containers with an unpinned image", unpinned, at_most=0,
                    unit="containers")


@pytest.mark.monthly
@pytest.mark.security_check("resource_limits")
def test_resource_limits_set(security_kubernetes_pods: PodList,
                             evidence: EvidenceLog) -> None:
    """Every container has cpu and memory limits: one without can starve its node."""
    _inspected(security_kubernetes_pods, evidence)
    unlimited = 0
    for pod in security_kubernetes_pods.pods:
        for c in pod.containers:
            missing = [r for r in LIMITED if c.limit(r) is None]
            if missing:
                unlimited += 1
                evidence.expect(f"{pod.path} {c.label} resources.limits",
                                ", ".join(f"{k}={v}" for k, v in c.limits) or "none",
                                equals="cpu and memory set")
    evidence.expect("containers without cpu and memory limits", unlimited, at_most=0,
                    unit="containers")
