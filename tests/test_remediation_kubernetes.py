"""rollout_restart and scale against a real kube-apiserver: gated three times, planned,
bounded, applied by uid with the writable client's two PATCHes and nothing else, audited
(ours and the API server's), re-checked.

No controller manager or kubelet runs in the sandbox, so nothing rolls out by itself. Where
a test needs the rollout a fix starts, the sandbox's :class:`RolloutController` thread
plays the deployment controller and the kubelet for the test's namespace: when a
deployment's generation is ahead of its ``status.observedGeneration`` it marks the
deployment's pods running and ready and writes the deployment's status subresource (every
replica updated, ready, available), as envtest users do. What changed is read from the
server by the administrator, outside opsverify.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsverify.errors import WriteRefused
from opsverify.remediation import Remediation
from opsverify.remediation.kubernetes import RolloutRestart, RolloutRestartSettings
from opsverify.sandbox.kubernetes import USER, KubernetesCluster
from opsverify.sandbox.kubernetes_controller import RolloutController
from opsverify.sandbox.kubernetes_state import APP, Cluster
from opsverify.targets.kubernetes import KubernetesClient, KubernetesTarget
from opsverify.targets.kubernetes_model import RESTARTED_AT
from tests.conftest import Project, Result
from tests.test_kubernetes import (
    HEALTH,
    REMEDIATION,
    Admin,
    audit_events,
    environment,
    failing,
    needs_kubernetes,
    notes,
    pods_of,
    run_checks,
)

# The module's own API server and its administrator: tests/test_kubernetes.py's fixtures.
from tests.test_kubernetes import admin as admin
from tests.test_kubernetes import cluster as cluster

pytestmark = needs_kubernetes
RESTART = "test_rollout_restart[cluster]"
SCALE = "test_scale[cluster]"
VAP = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"


def deployment(ns: Cluster, name: str = APP) -> dict[str, Any]:
    return ns.api.get(ns.path("apps/v1", "deployments", name))


def add_unavailable(ns: Cluster, name: str) -> None:
    """Another deployment of TekuToko's, no replica of it ready."""
    body = deployment(ns)
    labels = {"app": name}
    body["metadata"] = {"name": name, "labels": labels}
    body["spec"]["selector"] = {"matchLabels": labels}
    body["spec"]["template"]["metadata"]["labels"] = labels
    ns.api.create(ns.path("apps/v1", "deployments"), body)
    ns.api.patch(ns.path("apps/v1", "deployments", name) + "/status", {"status": {
        "observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 0,
        "availableReplicas": 0, "unavailableReplicas": 3}})


def env(cluster: KubernetesCluster, ns: Cluster, remediation: dict[str, Any] | None,
        deployments: list[str] | None = None) -> str:
    target: dict[str, Any] = {"namespaces": [ns.ns], "deployments": deployments or [APP]}
    if remediation is not None:
        target["remediation"] = remediation
    return environment(cluster, {"cluster": target})


RESTART_SETTINGS = {"rollout_restart": {"select": "unhealthy", "wait_s": 15}}


def run(project: Project, text: str, *args: str) -> tuple[Result, dict[str, Any]]:
    return run_checks(project, text, "checks/remediation", *args,
                      checks=(REMEDIATION, HEALTH))


def audit(project: Project) -> list[dict[str, str]]:
    path = project.reports / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def writes_by_checks(cluster: KubernetesCluster, since: int) -> list[tuple[str, str]]:
    """(verb, URI) of every request but a read the checks' user sent since ``since``."""
    time.sleep(0.3)
    return [(e["verb"], e["requestURI"]) for e in audit_events(cluster)[since:]
            if e["user"].get("username") == USER and e["verb"] not in ("get", "list", "watch")]


# -- (1) three opt-ins ---------------------------------------------------------------------
def test_nothing_runs_without_each_of_the_three_opt_ins(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    ns = admin.namespace("pod-crashloop")
    since = len(audit_events(cluster))
    result, checks = run(project, env(cluster, ns, None), "-m", "destructive",
                         "--allow-destructive=kube")
    assert RESTART not in checks, result.output
    assert checks["test_rollout_restart[no-kubernetes-target]"]["message"].startswith(
        "no kubernetes target declares rollout_restart in environment 'kube'")
    result, _ = run(project, env(cluster, ns, RESTART_SETTINGS), "--allow-destructive=kube")
    assert "2 destructive check(s) deselected: a destructive check runs only when selected " \
        "by name: add -m destructive" in result.stdout, result.output
    result, _ = run(project, env(cluster, ns, RESTART_SETTINGS), "-m", "destructive")
    assert "2 destructive check(s) deselected: they change systems; add " \
        "--allow-destructive=kube" in result.stdout, result.output
    assert deployment(ns)["metadata"]["generation"] == 1
    assert audit(project) == []
    assert writes_by_checks(cluster, since) == []


# -- (2) --plan -----------------------------------------------------------------------------
def test_plan_lists_exactly_the_crash_looping_deployment_and_changes_nothing(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    ns = admin.namespace("pod-crashloop")
    add_unavailable(ns, "tekutoko-worker")
    admin.namespace()  # a healthy one elsewhere: not its business
    since = len(audit_events(cluster))
    uid = deployment(ns)["metadata"]["uid"]
    result, checks = run(project, env(cluster, ns, RESTART_SETTINGS, [APP, "tekutoko-worker",
                                                                       "tekutoko-gone"]),
                         "-m", "destructive", "--allow-destructive=kube", "--plan")
    assert result.returncode == 0, result.output
    outcome = checks[RESTART]
    assert outcome["outcome"] == "PLAN", result.output
    looping = pods_of(ns)[2]
    worker = deployment(ns, "tekutoko-worker")["metadata"]["uid"]
    assert outcome["plan"] == [
        f"cluster: rollout_restart deployment {ns.ns}/{APP} (uid {uid[:8]}) (generation 1 "
        f"(observed 1), ready 2/3, available 2/3, updated 3/3; CrashLoopBackOff: {looping}/api; "
        f"restartedAt never) [plan {outcome['plan'][0].rsplit(' ', 1)[1]}",
        f"cluster: rollout_restart deployment {ns.ns}/tekutoko-worker (uid {worker[:8]}) "
        "(generation 1 (observed 1), ready 0/3, available 0/3, updated 3/3; restartedAt never) "
        f"[plan {outcome['plan'][0].rsplit(' ', 1)[1]}"]
    assert deployment(ns)["metadata"]["generation"] == 1
    assert audit(project) == []
    assert writes_by_checks(cluster, since) == []


# -- (3) apply, audit, re-check; a daily run afterwards is green ----------------------------
def test_apply_restarts_exactly_the_planned_deployment_and_rechecks(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    ns = admin.namespace("pod-crashloop")
    add_unavailable(ns, "tekutoko-healthy")  # declared, but healthy once the controller ran:
    ns.api.patch(ns.path("apps/v1", "deployments", "tekutoko-healthy") + "/status", {"status": {
        "readyReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 0}})
    uid = deployment(ns)["metadata"]["uid"]
    since = len(audit_events(cluster))
    with RolloutController(ns) as controller:
        result, checks = run(project, env(cluster, ns, RESTART_SETTINGS,
                                          [APP, "tekutoko-healthy"]),
                             "-m", "destructive", "--allow-destructive=kube", "-k", "rollout")
    assert result.returncode == 0, result.output
    after = deployment(ns)
    stamp = after["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert after["metadata"]["generation"] == 2
    assert controller.rolled == [(APP, 2)]
    assert deployment(ns, "tekutoko-healthy")["metadata"]["generation"] == 1, "not planned"
    [entry] = audit(project)
    assert {k: entry[k] for k in ("env", "target", "action", "identity", "result")} == {
        "env": "kube", "target": "cluster", "action": "rollout_restart",
        "identity": f"deployment {ns.ns}/{APP} (uid {uid[:8]})", "result": "applied"}
    assert entry["before"].startswith("generation 1 (observed 1), ready 2/3, available 2/3")
    assert entry["after"] == f"restartedAt {stamp}, generation 1 → 2"
    # The API server saw exactly one write from the checks' user: that PATCH, by the
    # remediation's client.
    assert writes_by_checks(cluster, since) == [
        ("patch", f"/apis/apps/v1/namespaces/{ns.ns}/deployments/{APP}?fieldManager=opsverify")]
    patch = next(e for e in audit_events(cluster)[since:] if e["verb"] == "patch"
                 and e["user"].get("username") == USER)
    assert patch["userAgent"] == "opsverify (remediation)"
    outcome = checks[RESTART]
    assert outcome["outcome"] == "PASS", outcome
    evidence = notes(outcome)
    assert evidence[f"{APP} readyReplicas"] == 3
    assert evidence[f"{APP} status.observedGeneration"] == 2
    assert evidence[f"{APP} pods in CrashLoopBackOff"] == 0
    assert 0 < evidence[f"{APP} waited for its rollout"] < 15
    daily = project.run("--env", "kube", "-p", "no:xdist", "-m", "daily", "-k",
                        "deployment or pods", "checks/health", timeout=120)
    assert daily.returncode == 0, daily.output


def test_a_restart_the_cluster_does_not_roll_out_fails_its_recheck(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    ns = admin.namespace("deployment-degraded")
    settings = {"rollout_restart": {"wait_s": 1}}
    result, checks = run(project, env(cluster, ns, settings), "-m", "destructive",
                         "--allow-destructive=kube", "-k", "rollout")  # no controller runs
    assert result.returncode == 1, result.output
    outcome = checks[RESTART]
    assert outcome["outcome"] == "FAIL"
    assert failing(outcome) == [f"{APP} availableReplicas = 1", f"{APP} readyReplicas = 1",
                                f"{APP} status.observedGeneration = 1"]
    assert notes(outcome)[f"{APP} waited for its rollout"] >= 1
    [entry] = audit(project)
    assert entry["result"] == "applied"  # it was done; it did not fix it, and the check says so


# -- (4) drift between plan and apply -------------------------------------------------------
def test_a_deployment_that_drifted_between_plan_and_apply_is_skipped(
        cluster: KubernetesCluster, admin: Admin, tmp_path: Path) -> None:
    ns = admin.namespace("deployment-degraded")
    spec = KubernetesTarget.model_validate(yaml.safe_load(env(cluster, ns, RESTART_SETTINGS))[
        "targets"]["cluster"])
    client = KubernetesClient("cluster", spec, 5, writable=True)
    action = RolloutRestart(client, RolloutRestartSettings())
    engine = Remediation(env="kube", operator="tester", check="t", run_id="r1",
                         audit_path=tmp_path / "audit.jsonl", max_actions=5, plan_only=False)
    plan = engine.plan(action)
    assert [i.identity for i in plan.items] == [
        f"deployment {ns.ns}/{APP} (uid {deployment(ns)['metadata']['uid'][:8]})"]
    # Someone else restarts it first.
    ns.api.patch(ns.path("apps/v1", "deployments", APP), {"spec": {"template": {"metadata": {
        "annotations": {RESTARTED_AT: "2026-12-01T00:00:00Z"}}}}})
    outcome = engine.apply(action, plan)
    assert outcome.applied == []
    [(_item, why)] = outcome.skipped
    assert why == ("changed since the plan (generation 1 → 2): restarted or edited by someone "
                   "else")
    assert deployment(ns)["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == \
        "2026-12-01T00:00:00Z"
    [entry] = engine.audited
    assert entry["result"] == f"skipped: {why}"
    client.close()


def test_the_writable_client_sends_its_two_patches_and_nothing_else(
        cluster: KubernetesCluster, admin: Admin) -> None:
    ns = admin.namespace()
    spec = KubernetesTarget(type="kubernetes", kubeconfig=str(cluster.kubeconfig),
                            namespaces=[ns.ns])
    client = KubernetesClient("cluster", spec, 5, writable=True)
    from kubernetes.client import AppsV1Api, CoreV1Api

    apps, core = AppsV1Api(client.api), CoreV1Api(client.api)
    since = len(audit_events(cluster))
    for attempt in (
        lambda: apps.patch_namespaced_deployment(APP, ns.ns, {"spec": {"template": {"spec": {
            "containers": [{"name": "api", "image": "evil:latest"}]}}}}),
        lambda: apps.patch_namespaced_deployment(APP, ns.ns, {"spec": {"paused": True}}),
        lambda: apps.patch_namespaced_deployment_scale(APP, ns.ns, {"spec": {"replicas": "3"}}),
        lambda: apps.delete_namespaced_deployment(APP, ns.ns),
        lambda: core.delete_namespaced_pod(pods_of(ns)[0], ns.ns),
        lambda: apps.patch_namespaced_deployment_status(APP, ns.ns, {"status": {}}),
    ):
        with pytest.raises(WriteRefused, match="a remediation sends only its own PATCHes"):
            attempt()
    assert writes_by_checks(cluster, since) == []
    assert client.scale_deployment(spec.ref(APP), 4) == 4
    assert deployment(ns)["spec"]["replicas"] == 4
    client.close()


# -- (5) over --max-actions: refused whole -------------------------------------------------
def test_a_plan_over_max_actions_is_refused_with_nothing_touched(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    ns = admin.namespace("deployment-degraded")
    add_unavailable(ns, "tekutoko-worker")
    since = len(audit_events(cluster))
    text = env(cluster, ns, RESTART_SETTINGS, [APP, "tekutoko-worker"])
    result, checks = run(project, text, "-m", "destructive", "--allow-destructive=kube",
                         "--max-actions=1", "-k", "rollout")
    assert result.returncode == 1, result.output
    message = checks[RESTART]["message"]
    assert message.startswith("cluster: rollout_restart: refused whole, nothing changed: plan ")
    assert "lists 2 items, over --max-actions=1" in message
    result, checks = run(project, text, "-m", "destructive", "--allow-destructive=kube",
                         "--max-percent=60", "-k", "rollout")
    assert "100 % of 2, over --max-percent=60" in checks[RESTART]["message"]
    assert writes_by_checks(cluster, since) == []
    assert audit(project) == []
    assert deployment(ns)["metadata"]["generation"] == 1


# -- (6) a failure part-way -----------------------------------------------------------------
@pytest.fixture
def frozen(admin: Admin) -> Iterator[Any]:
    """Freezes a deployment with a ValidatingAdmissionPolicy (the server's own refusal,
    no webhook): every update of it is denied."""
    made: list[str] = []

    def freeze(ns: Cluster, name: str) -> None:
        policy = f"freeze-{ns.ns}"
        admin.api.create(VAP, {"apiVersion": "admissionregistration.k8s.io/v1",
                               "kind": "ValidatingAdmissionPolicy", "metadata": {"name": policy},
                               "spec": {"failurePolicy": "Fail", "matchConstraints": {
                                   "resourceRules": [{"apiGroups": ["apps"],
                                                      "apiVersions": ["v1"],
                                                      "operations": ["UPDATE"],
                                                      "resources": ["deployments"]}]},
                                   "validations": [{
                                       "expression": f"!(object.metadata.namespace == '{ns.ns}'"
                                                     f" && object.metadata.name == '{name}')",
                                       "message": "change freeze OPS-42"}]}})
        admin.api.create(VAP.replace("policies", "policybindings"), {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
            "spec": {"policyName": policy, "validationActions": ["Deny"]}})
        made.append(policy)

    yield freeze
    for policy in made:
        admin.api.session.delete(admin.api.url + VAP.replace("policies", "policybindings")
                                 + f"/{policy}", timeout=10)
        admin.api.session.delete(admin.api.url + VAP + f"/{policy}", timeout=10)


def test_a_failure_part_way_reports_what_was_and_was_not_done(
        cluster: KubernetesCluster, admin: Admin, frozen: Any, project: Project) -> None:
    ns = admin.namespace()
    for name in ("tekutoko-broken", "tekutoko-later"):
        add_unavailable(ns, name)
    frozen(ns, "tekutoko-broken")
    uids = {n: deployment(ns, n)["metadata"]["uid"][:8]
            for n in (APP, "tekutoko-broken", "tekutoko-later")}
    settings = {"rollout_restart": {"select": "all", "wait_s": 1}}
    result, checks = run(project, env(cluster, ns, settings,
                                      [APP, "tekutoko-broken", "tekutoko-later"]),
                         "-m", "destructive", "--allow-destructive=kube", "-k", "rollout")
    assert result.returncode == 1, result.output
    message = checks[RESTART]["message"]
    assert message.startswith("cluster: rollout_restart stopped at a failure: applied 1 of 3 "
                              "(plan "), message
    assert f"applied: deployment {ns.ns}/{APP} (uid {uids[APP]}) -> restartedAt " in message
    assert (f"failed: deployment {ns.ns}/tekutoko-broken (uid {uids['tekutoko-broken']}): "
            f"PATCH deployment {ns.ns}/tekutoko-broken: API server answered 422 Unprocessable "
            "Entity: deployments.apps \"tekutoko-broken\" is forbidden: "
            f"ValidatingAdmissionPolicy 'freeze-{ns.ns}' with binding 'freeze-{ns.ns}' denied "
            "request: change freeze OPS-42") in message
    assert message.endswith(f"not attempted: deployment {ns.ns}/tekutoko-later "
                            f"(uid {uids['tekutoko-later']})")
    assert deployment(ns)["metadata"]["generation"] == 2
    assert deployment(ns, "tekutoko-later")["metadata"]["generation"] == 1, "went on"
    assert [(e["identity"].split()[1], e["result"].split(":")[0]) for e in audit(project)] == [
        (f"{ns.ns}/{APP}", "applied"), (f"{ns.ns}/tekutoko-broken", "failed"),
        (f"{ns.ns}/tekutoko-later", "not attempted")]


# -- scale -------------------------------------------------------------------------------------
def test_scale_plans_applies_through_the_subresource_and_rechecks(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    ns = admin.namespace()
    add_unavailable(ns, "tekutoko-worker")
    ns.api.patch(ns.path("apps/v1", "deployments", "tekutoko-worker") + "/status", {"status": {
        "readyReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 0}})
    settings = {"scale": {"replicas": {APP: 5, "tekutoko-worker": 3}, "wait_s": 15}}
    text = env(cluster, ns, settings, [APP, "tekutoko-worker"])
    uid = deployment(ns)["metadata"]["uid"][:8]
    result, checks = run(project, text, "-m", "destructive", "--allow-destructive=kube",
                         "--plan", "-k", "scale")
    assert checks[SCALE]["outcome"] == "PLAN", result.output
    [planned] = checks[SCALE]["plan"]
    assert planned.startswith(f"cluster: scale deployment {ns.ns}/{APP} (uid {uid}) to 5 "
                              "replicas (spec.replicas 3, generation 1"), planned
    assert deployment(ns)["spec"]["replicas"] == 3
    since = len(audit_events(cluster))
    with RolloutController(ns):
        result, checks = run(project, text, "-m", "destructive", "--allow-destructive=kube",
                             "-k", "scale")
    assert result.returncode == 0, result.output
    assert deployment(ns)["spec"]["replicas"] == 5
    assert deployment(ns, "tekutoko-worker")["metadata"]["generation"] == 1, "not planned"
    [entry] = audit(project)
    assert (entry["action"], entry["identity"], entry["after"]) == (
        "scale", f"deployment {ns.ns}/{APP} (uid {uid}) to 5 replicas",
        "spec.replicas 3 → 5 (read back)")
    assert writes_by_checks(cluster, since) == [
        ("patch", f"/apis/apps/v1/namespaces/{ns.ns}/deployments/{APP}/scale"
                  "?fieldManager=opsverify")]
    evidence = notes(checks[SCALE])
    assert (evidence[f"{APP} spec.replicas"], evidence[f"{APP} readyReplicas"]) == (5, 5)
    assert evidence["tekutoko-worker spec.replicas"] == 3
