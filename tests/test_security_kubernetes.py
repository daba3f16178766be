"""Kubernetes security checks (checks/security/test_kubernetes.py) against a real
kube-apiserver: TekuToko's seeded pods PASS; a privileged container, one that may escalate,
``:latest`` and untagged images, and containers without limits (init containers included)
each turn exactly their check red (or WARN), naming pod and container; a digest pins an
image whatever its tag; ``security: {<check>: false}`` is a SKIP saying where."""

from __future__ import annotations

from typing import Any

from opsverify.sandbox.kubernetes import KubernetesCluster
from tests.conftest import Project
from tests.test_kubernetes import (
    SECURITY,
    Admin,
    environment,
    failing,
    needs_kubernetes,
    notes,
    run_checks,
)

# The module's own API server and its administrator: tests/test_kubernetes.py's fixtures.
from tests.test_kubernetes import admin as admin
from tests.test_kubernetes import cluster as cluster

pytestmark = needs_kubernetes
PINNED = "registry.example/tekutoko-api:1.8.2"
LIMITS = {"limits": {"cpu": "500m", "memory": "256Mi"}}
SAFE = {"allowPrivilegeEscalation": False}
DIGEST = "registry.example/tekutoko-api:latest@sha256:" + "ab" * 32


def container(name: str, image: str = PINNED, *, resources: dict[str, Any] | None = None,
              context: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "image": image,
            "resources": LIMITS if resources is None else resources,
            "securityContext": SAFE if context is None else context}


def pod(admin: Admin, namespace: str, name: str, *containers: dict[str, Any],
        init: tuple[dict[str, Any], ...] = ()) -> None:
    spec: dict[str, Any] = {"containers": list(containers), "nodeName": "gke-tekutoko-pool-1"}
    if init:
        spec["initContainers"] = list(init)
    admin.api.create(f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def run(project: Project, cluster: KubernetesCluster, namespace: str, **security: Any,
        ) -> tuple[Any, dict[str, dict[str, Any]]]:
    target: dict[str, Any] = {"namespaces": [namespace]}
    if security:
        target["security"] = security
    return run_checks(project, environment(cluster, {"cluster": target}), "-m", "security",
                      checks=(SECURITY,), name="kubesec")


def test_checks_pass_on_tekutoko_and_fail_on_bad_pods(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    ns = admin.namespace().ns
    result, checks = run(project, cluster, ns)
    assert result.returncode == 0, result.output
    assert {k: c["outcome"] for k, c in checks.items()} == {
        "test_no_privileged_container[cluster]": "PASS",
        "test_no_latest_image_tag[cluster]": "PASS",
        "test_resource_limits_set[cluster]": "PASS"}
    assert notes(checks["test_no_privileged_container[cluster]"])["pods inspected"] == 3

    pod(admin, ns, "bad-privileged", container("agent", context={"privileged": True}))
    pod(admin, ns, "bad-escalation", container("app", context={}))
    pod(admin, ns, "bad-images", container("latest", "nginx:latest"),
        container("untagged", "registry.example:5000/team/tool"),
        container("digest", DIGEST))
    pod(admin, ns, "bad-limits", container("none", resources={}),
        container("memory-only", resources={"limits": {"memory": "64Mi"}}),
        init=(container("migrate", resources={"requests": {"cpu": "100m"}},
                        context={"privileged": True}),))
    result, checks = run(project, cluster, ns)
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output

    privileged = checks["test_no_privileged_container[cluster]"]
    assert failing(privileged) == sorted([
        f"{ns}/bad-limits init container migrate securityContext.privileged = True",
        f"{ns}/bad-privileged container agent securityContext.privileged = True",
        "privileged containers = 2"])
    # Not privileged, but allowed to gain privileges: a WARN naming it.
    assert failing(privileged, "WARN") == ["kubernetes.privilege_escalation_containers = 1"]
    assert notes(privileged)["allowPrivilegeEscalation not false"] == f"{ns}/bad-escalation app"
    assert notes(privileged)["pods inspected"] == 7

    assert failing(checks["test_no_latest_image_tag[cluster]"]) == sorted([
        f"{ns}/bad-images container latest image = nginx:latest (the :latest tag)",
        f"{ns}/bad-images container untagged image = registry.example:5000/team/tool (no tag "
        "(pulls :latest))",
        "containers with an unpinned image = 2"])

    assert failing(checks["test_resource_limits_set[cluster]"]) == sorted([
        f"{ns}/bad-limits container memory-only resources.limits = memory=64Mi",
        f"{ns}/bad-limits container none resources.limits = none",
        f"{ns}/bad-limits init container migrate resources.limits = none",
        "containers without cpu and memory limits = 3"])
    # The kubeconfig's token is a secret of the run: in no artifact.
    token = cluster.token
    for path in (p for p in project.reports.rglob("*") if p.is_file()):
        assert token not in path.read_text(errors="replace"), path


def test_an_opt_out_is_a_skip_that_says_where(cluster: KubernetesCluster, admin: Admin,
                                              project: Project) -> None:
    ns = admin.namespace().ns
    pod(admin, ns, "bad-privileged", container("agent", context={"privileged": True}))
    result, checks = run(project, cluster, ns, privileged=False)
    assert result.returncode == 0, result.output
    opted = checks["test_no_privileged_container[cluster]"]
    assert opted["outcome"] == "SKIP"
    assert opted["message"].startswith(
        "opted out: targets.cluster.security.privileged is false (environments/kubesec.yaml:")
    assert checks["test_resource_limits_set[cluster]"]["outcome"] == "PASS"

