"""Each Kubernetes fault turns exactly the checks that should catch it red, with evidence
saying why: ``pytest -m "daily or weekly or monthly" --sandbox-fault NAME`` against the
sandbox's real API server, and TekuToko's example environment against the same server."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, sandbox_subset

CHECKS = ["checks/health/test_kubernetes.py", "checks/backup/test_kubernetes.py",
          "checks/security/test_kubernetes.py"]
HEALTH = "checks/health/test_kubernetes.py::"
AVAILABLE = HEALTH + "test_deployment_available[cluster:tekutoko-api]"
ROLLOUT = HEALTH + "test_deployment_rollout_complete[cluster:tekutoko-api]"
PODS = HEALTH + "test_pods_healthy[cluster]"
HPA = HEALTH + "test_hpa_not_at_max[cluster:tekutoko-api]"
EVENTS = HEALTH + "test_no_recent_warning_events[cluster]"
BACKUP = ("checks/backup/test_kubernetes.py::"
          "test_cronjob_last_success_recent[cluster:tekutoko-db-backup]")
Judge = Callable[[Any], bool]

# fault -> {check that FAILs: {failing measurement: what its value must satisfy}}
CAUGHT: dict[str, dict[str, dict[str, Judge]]] = {
    "none": {},
    "pod-crashloop": {
        PODS: {"kubernetes.restart_count": lambda v: v == 7,
               "containers stuck waiting": lambda v: v == 1},
        AVAILABLE: {"tekutoko-api readyReplicas": lambda v: v == 2},
        EVENTS: {"kubernetes.warning_events": lambda v: v == 31}},
    "deployment-degraded": {
        AVAILABLE: {"tekutoko-api readyReplicas": lambda v: v == 1,
                    "tekutoko-api availableReplicas": lambda v: v == 1},
        EVENTS: {"kubernetes.warning_events": lambda v: v == 36}},
    "rollout-stuck": {
        ROLLOUT: {"tekutoko-api updatedReplicas": lambda v: v == 1,
                  "tekutoko-api condition Progressing":
                      lambda v: "ProgressDeadlineExceeded" in v},
        EVENTS: {"kubernetes.warning_events": lambda v: v == 12}},
    "hpa-maxed": {HPA: {"tekutoko-api currentReplicas": lambda v: v == 10}},
    "cronjob-missed": {BACKUP: {"tekutoko-db-backup last success age": lambda v: v > 72}},
}


def cluster_environment() -> dict[str, Any]:
    data = sandbox_subset({"kubernetes"})
    assert set(data["targets"]) == {"cluster"}
    return data


def run(project: Any, data: dict[str, Any], marks: str, *faults: str) -> Any:
    """The Kubernetes checks against ``data`` in one process, with ``faults`` injected."""
    for check in CHECKS:
        project.copy_check(check)
    project.write_env(data)
    args = [a for f in faults if f != "none" for a in ("--sandbox-fault", f)]
    return project.run("-m", marks, "-p", "no:xdist", *args)


def summary(project: Any, env: str = "sandbox") -> dict[str, dict[str, Any]]:
    data = json.loads((project.latest(env) / "summary.json").read_text())
    return {c["nodeid"]: c for c in data["checks"]}


@pytest.mark.parametrize("fault", list(CAUGHT))
def test_a_kubernetes_fault_turns_exactly_its_checks_red(project: Any, fault: str) -> None:
    result = run(project, cluster_environment(), "daily or weekly or monthly", fault)
    checks = summary(project)
    assert len(checks) >= 9, sorted(checks)
    red = {n for n, c in checks.items() if c["outcome"] in ("FAIL", "ERROR")}
    assert red == set(CAUGHT[fault]), {n: checks[n]["outcome"] for n in red}
    assert result.returncode == (1 if red else 0), result.output
    for nodeid, judges in CAUGHT[fault].items():
        check = checks[nodeid]
        assert check["outcome"] == "FAIL", check
        failing = {m["name"]: m for m in check["evidence"] if m["verdict"] == "FAIL"}
        for name, judge in judges.items():
            assert name in failing, (name, sorted(failing))
            assert judge(failing[name]["value"]), failing[name]
        assert f"FAIL  {nodeid}: " in result.stdout


def test_kubernetes_down_is_one_error_line_per_check(project: Any) -> None:
    result = run(project, cluster_environment(), "daily", "kubernetes-down")
    checks = summary(project)
    assert checks
    for nodeid, check in checks.items():
        assert check["outcome"] == "ERROR", check
        assert re.fullmatch(r"cluster \(kubernetes 127\.0\.0\.1:\d+\): connection refused",
                            check["message"]), check["message"]
        assert f"ERROR {nodeid}: {check['message']}" in result.stdout
    assert "Traceback" not in result.output


def tekutoko_gke() -> dict[str, Any]:
    """The example's ``gke`` target, its kubeconfig and context the sandbox's (what its
    users set TEKUTOKO_KUBECONFIG and TEKUTOKO_KUBE_CONTEXT to), the rest as written."""
    example = yaml.safe_load((ROOT / "environments/examples/tekutoko.yaml").read_text())
    gke = example["targets"]["gke"]
    assert (gke["kubeconfig"], gke["context"]) == ("${TEKUTOKO_KUBECONFIG}",
                                                   "${TEKUTOKO_KUBE_CONTEXT}")
    gke.update(kubeconfig="${SANDBOX_KUBECONFIG}", context="${SANDBOX_KUBE_CONTEXT}")
    data = cluster_environment()
    data["targets"] = {"gke": gke}
    return data


@pytest.mark.parametrize("fault", ["none", "cronjob-missed"])
def test_the_tekutoko_example_runs_against_the_sandbox_cluster(project: Any,
                                                               fault: str) -> None:
    result = run(project, tekutoko_gke(), "daily", fault)
    checks = summary(project)
    outcomes = {n.split("::")[1]: c["outcome"] for n, c in checks.items()}
    want_red = {"test_cronjob_last_success_recent[gke:tekutoko-db-backup]"} \
        if fault == "cronjob-missed" else set()
    assert {n for n, o in outcomes.items() if o != "PASS"} == want_red, outcomes
    assert len(outcomes) == 6, outcomes
    assert result.returncode == (1 if want_red else 0), result.output


def test_every_kubernetes_fault_is_in_the_matrix() -> None:
    from opsverify.sandbox.kubernetes import KubernetesCluster

    assert set(KubernetesCluster.faults) == {*CAUGHT, "kubernetes-down"} - {"none"}
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{fault}`" in readme for fault in KubernetesCluster.faults)


def test_rollout_restart_repairs_pod_crashloop_in_the_sandbox(project: Any) -> None:
    """``-m destructive --allow-destructive=sandbox --sandbox-fault pod-crashloop``: the
    crash-looping deployment is restarted, the sandbox's stand-in controller rolls it out,
    and the re-check reads it back healthy."""
    project.copy_check("checks/remediation/test_kubernetes.py")
    project.write_env(cluster_environment())
    result = project.run("-m", "destructive", "--allow-destructive=sandbox", "-p", "no:xdist",
                         "--sandbox-fault", "pod-crashloop")
    checks = summary(project)
    restart = checks["checks/remediation/test_kubernetes.py::test_rollout_restart[cluster]"]
    assert restart["outcome"] == "PASS", result.output
    after = {m["name"]: m["value"] for m in restart["evidence"]}
    assert after["tekutoko-api readyReplicas"] == 3
    assert after["tekutoko-api pods in CrashLoopBackOff"] == 0
    assert "rollout_restart deployment tekutoko/tekutoko-api" in result.stdout
    audit = [json.loads(line) for line in (project.path / "reports/audit.jsonl").read_text()
             .splitlines()]
    assert [(a["action"], a["result"]) for a in audit] == [("rollout_restart", "applied")]
