"""The sandbox's Kubernetes: a real kube-apiserver (and etcd) built by ./ops from the Go
module proxy, on 127.0.0.1, with TekuToko's workloads written through the API and each
fault rewriting exactly the state it names."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from opsverify.sandbox import kubernetes as component
from opsverify.sandbox.kubernetes import KubernetesCluster
from opsverify.sandbox.kubernetes_state import APP, BACKUP, FAULTS, HPA_MAX, NEXT_IMAGE
from tests.conftest import kubernetes_cluster, processes_matching

ROOT = Path(__file__).resolve().parent.parent
NS = "/namespaces/tekutoko"


@pytest.fixture(scope="module")
def cluster() -> Iterator[KubernetesCluster]:
    yield from kubernetes_cluster()


def read(cluster: KubernetesCluster, path: str) -> dict[str, Any]:
    session = cluster.session()
    try:
        answer = session.get(cluster.url + path, timeout=10)
        answer.raise_for_status()
        out: dict[str, Any] = answer.json()
        return out
    finally:
        session.close()


def test_the_built_versions_are_what_ops_builds() -> None:
    ops = (ROOT / "ops").read_text()
    assert f"KUBERNETES_VERSION={component.KUBERNETES_VERSION}\n" in ops
    assert f"ETCD_VERSION={component.ETCD_VERSION}\n" in ops
    assert (f"k8s.io/kubernetes {component.KUBERNETES_VERSION}"
            in (ROOT / "tools/kube-apiserver/go.mod").read_text())
    assert (f"go.etcd.io/etcd/server/v3 {component.ETCD_VERSION}"
            in (ROOT / "tools/etcd/go.mod").read_text())


def test_it_is_the_real_server_on_loopback_with_tokens_only(cluster: KubernetesCluster) -> None:
    assert read(cluster, "/version")["gitVersion"] == component.KUBERNETES_VERSION
    line = next(p for p in processes_matching("kube-apiserver") if str(cluster.dir) in p)
    assert "--bind-address=127.0.0.1" in line
    assert f"--etcd-servers=http://127.0.0.1:{cluster.etcd_port}" in line
    assert cluster.token not in line  # tokens are in a file, not argv
    # Anonymous requests are refused; a user RBAC allows nothing is forbidden.
    anonymous = requests.get(cluster.url + "/version", verify=str(cluster.tls.ca), timeout=5)
    assert anonymous.status_code == 401
    nobody = requests.get(cluster.url + f"/api/v1{NS}/pods", verify=str(cluster.tls.ca),
                          headers={"Authorization": f"Bearer {cluster.unprivileged_token}"},
                          timeout=5)
    assert nobody.status_code == 403
    assert "opsverify-nobody" in nobody.json()["message"]


def test_the_kubeconfig_verifies_the_sandbox_ca_and_has_both_users(
        cluster: KubernetesCluster) -> None:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    assert config["current-context"] == "sandbox"
    (entry,) = config["clusters"]
    assert entry["cluster"] == {"server": cluster.url,
                                "certificate-authority": str(cluster.tls.ca)}
    assert {c["name"] for c in config["contexts"]} == {"sandbox", "sandbox-unprivileged"}
    assert oct(cluster.kubeconfig.stat().st_mode & 0o777) == "0o600"


def test_the_seeded_namespace_is_healthy(cluster: KubernetesCluster) -> None:
    deployment = read(cluster, f"/apis/apps/v1{NS}/deployments/{APP}")
    status = deployment["status"]
    assert status["observedGeneration"] == deployment["metadata"]["generation"]
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"],
            status["availableReplicas"]) == (3, 3, 3, 3)
    pods = read(cluster, f"/api/v1{NS}/pods")["items"]
    assert len(pods) == 3
    for pod in pods:
        (container,) = pod["status"]["containerStatuses"]
        assert pod["status"]["phase"] == "Running"
        assert container["ready"] is True
        assert container["restartCount"] == 0
        assert not container["image"].endswith(":latest")
        assert pod["spec"]["containers"][0]["resources"]["limits"]
    # Read through autoscaling/v1, as the checks do.
    hpa = read(cluster, f"/apis/autoscaling/v1{NS}/horizontalpodautoscalers/{APP}")
    assert (hpa["spec"]["maxReplicas"], hpa["status"]["currentReplicas"]) == (HPA_MAX, 3)
    cron = read(cluster, f"/apis/batch/v1{NS}/cronjobs/{BACKUP}")
    success = dt.datetime.fromisoformat(cron["status"]["lastSuccessfulTime"])
    assert dt.datetime.now(dt.UTC) - success < dt.timedelta(hours=24)
    events = read(cluster, f"/api/v1{NS}/events")["items"]
    assert events
    assert {e["type"] for e in events} == {"Normal"}


def test_the_audit_log_names_who_wrote_the_seed(cluster: KubernetesCluster) -> None:
    entries = [json.loads(line) for line in cluster.audit_log.read_text().splitlines()]
    writes = [e for e in entries if e["verb"] in ("create", "patch", "update", "delete")
              and e["objectRef"].get("namespace") == "tekutoko"]
    assert writes
    # The server's own bookkeeping is system:apiserver's; the workloads are the seed's.
    assert {e["user"]["username"] for e in writes} == {component.ADMIN_USER}
    assert any(e["objectRef"].get("subresource") == "status" for e in writes)


def test_the_ci_cronjob_example_passes_the_servers_strict_validation(
        cluster: KubernetesCluster) -> None:
    """examples/ci/kubernetes-cronjob.yaml as `kubectl apply --dry-run=server` sends it:
    validated and defaulted by the real API server, unknown fields refused, nothing kept."""
    cron = yaml.safe_load((ROOT / "examples/ci/kubernetes-cronjob.yaml").read_text())
    session = cluster.session()
    try:
        answer = session.post(
            cluster.url + f"/apis/batch/v1{NS}/cronjobs?dryRun=All&fieldValidation=Strict",
            json=cron, timeout=10)
        assert answer.status_code == 201, answer.text
        assert "Warning" not in answer.headers
        assert answer.json()["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]
        kept = session.get(cluster.url + f"/apis/batch/v1{NS}/cronjobs/opsverify-daily",
                           timeout=10)
        assert kept.status_code == 404
        # The same validation refuses what it should: a field the API does not have.
        cron["spec"]["jobTemplate"]["spec"]["retries"] = 3
        wrong = session.post(
            cluster.url + f"/apis/batch/v1{NS}/cronjobs?dryRun=All&fieldValidation=Strict",
            json=cron, timeout=10)
        assert wrong.status_code == 400
        assert 'unknown field "spec.jobTemplate.spec.retries"' in wrong.json()["message"]
    finally:
        session.close()


def broken(fault: str) -> Iterator[KubernetesCluster]:
    yield from kubernetes_cluster(frozenset({fault}))


@pytest.fixture(scope="module", params=sorted(FAULTS))
def faulty(request: pytest.FixtureRequest) -> Iterator[tuple[str, KubernetesCluster]]:
    for box in broken(request.param):
        yield request.param, box


def test_each_fault_writes_the_state_it_names(faulty: tuple[str, KubernetesCluster]) -> None:
    fault, cluster = faulty
    deployment = read(cluster, f"/apis/apps/v1{NS}/deployments/{APP}")
    status = deployment["status"]
    pods = read(cluster, f"/api/v1{NS}/pods")["items"]
    waiting = [c["state"]["waiting"]["reason"] for p in pods
               for c in p["status"].get("containerStatuses", []) if "waiting" in c["state"]]
    hpa = read(cluster, f"/apis/autoscaling/v1{NS}/horizontalpodautoscalers/{APP}")
    cron = read(cluster, f"/apis/batch/v1{NS}/cronjobs/{BACKUP}")
    success = dt.datetime.fromisoformat(cron["status"]["lastSuccessfulTime"])
    warnings = [e["reason"] for e in read(cluster, f"/api/v1{NS}/events")["items"]
                if e["type"] == "Warning"]
    if fault == "pod-crashloop":
        assert waiting == ["CrashLoopBackOff"]
        assert max(c["restartCount"] for p in pods for c in p["status"]["containerStatuses"]) == 7
        assert status["readyReplicas"] == 2
        assert warnings == ["BackOff"]
    elif fault == "deployment-degraded":
        assert (status["readyReplicas"], status["availableReplicas"]) == (1, 1)
        assert not waiting
        assert warnings == ["Unhealthy", "Unhealthy"]
    elif fault == "rollout-stuck":
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == NEXT_IMAGE
        assert status["observedGeneration"] == deployment["metadata"]["generation"] == 2
        assert (status["updatedReplicas"], status["readyReplicas"]) == (1, 3)
        progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
        assert progressing["reason"] == "ProgressDeadlineExceeded"
        assert warnings == ["FailedScheduling"]
    elif fault == "hpa-maxed":
        assert hpa["status"]["currentReplicas"] == hpa["spec"]["maxReplicas"] == HPA_MAX
        assert status["readyReplicas"] == HPA_MAX
        assert len(pods) == HPA_MAX
        assert not warnings
    elif fault == "cronjob-missed":
        assert dt.datetime.now(dt.UTC) - success > dt.timedelta(days=3)
        assert not warnings
    else:
        pytest.fail(f"no expectation for {fault}")
    # What a fault does not name stays as seeded.
    if fault != "cronjob-missed":
        assert dt.datetime.now(dt.UTC) - success < dt.timedelta(hours=24)
    if fault != "hpa-maxed":
        assert hpa["status"]["currentReplicas"] == 3


def test_kubernetes_down_starts_nothing() -> None:
    for cluster in kubernetes_cluster(frozenset({"kubernetes-down"})):
        assert not cluster.processes
        assert not any(str(cluster.dir) in p for p in processes_matching("kube-apiserver"))


def test_stopping_leaves_no_server(tmp_path: Path) -> None:
    for cluster in kubernetes_cluster():
        workdir = str(cluster.dir)
        assert any(workdir in p for p in processes_matching("kube-apiserver"))
    assert not any(workdir in p for p in processes_matching("kube-apiserver"))
    assert not any(re.search(rf"etcd .*{re.escape(workdir)}", p)
                   for p in processes_matching("etcd"))
