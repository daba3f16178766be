"""The kubernetes target type: schema, kubeconfig, the read-only client, and every health and
backup check PASS/FAIL/WARN/SKIP/ERROR against a real kube-apiserver (and its etcd).

The sandbox's API server is started once for the module; each test writes its own state into
namespaces of its own (seeded healthy as the sandbox seeds ``tekutoko``, then broken as a
fault or the test says), as the sandbox's administrator, never as the checks' user. The
read-only proof reads the API server's audit log: the checks' user sent only get, list and
watch.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.kubernetes import USER, KubernetesCluster, binaries
from opsverify.sandbox.kubernetes_state import (
    APP,
    BACKUP,
    HASH,
    POD_SUFFIXES,
    ApiWriter,
    Cluster,
    inject,
    seed,
)
from opsverify.sandbox.process import free_port
from opsverify.sandbox.spec import KubernetesComponent
from opsverify.secrets import SECRETS
from opsverify.targets.base import api_time
from opsverify.targets.kubernetes import KubernetesClient, KubernetesTarget
from opsverify.targets.kubernetes_access import read_kubeconfig
from opsverify.targets.kubernetes_model import image_tag_problem
from tests.conftest import HungServer, Project, Result, running


def _installed() -> bool:
    try:
        binaries()
    except FileNotFoundError:
        return False
    return True


needs_kubernetes = pytest.mark.skipif(
    not _installed(), reason="kube-apiserver and etcd are built by ./ops setup")
HEALTH = "checks/health/test_kubernetes.py"
BACKUP_CHECKS = "checks/backup/test_kubernetes.py"
SECURITY = "checks/security/test_kubernetes.py"
REMEDIATION = "checks/remediation/test_kubernetes.py"


# -- shared with tests/test_security_kubernetes.py and tests/test_remediation_kubernetes.py --
def start_cluster() -> Iterator[KubernetesCluster]:
    """The sandbox's API server on its own, in a fresh directory, for a module fixture."""
    workdir = Path(tempfile.mkdtemp(prefix="opsverify-k8s-"))
    try:
        yield from running(KubernetesCluster(
            KubernetesComponent(), SandboxContext(workdir, secrets.token_urlsafe(12),
                                                  frozenset())))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class Admin:
    """The sandbox's administrator (``sandbox-admin``, not the checks' user): makes
    namespaces of TekuToko's healthy state and breaks them."""

    def __init__(self, cluster: KubernetesCluster) -> None:
        self.cluster = cluster
        self.api = ApiWriter(cluster.session(), cluster.url)

    def namespace(self, *faults: str) -> Cluster:
        """A new namespace seeded as the sandbox seeds ``tekutoko``, with ``faults`` injected."""
        name = f"t-{secrets.token_hex(4)}"
        seed(self.api, name)
        if faults:
            inject(self.api, name, frozenset(faults))
        return Cluster(self.api, name)

    def close(self) -> None:
        self.api.session.close()


def pods_of(ns: Cluster) -> list[str]:
    return [f"{APP}-{HASH}-{s}" for s in POD_SUFFIXES[:3]]


def environment(cluster: KubernetesCluster, targets: dict[str, dict[str, Any]],
                timeout_s: float = 5) -> str:
    """An environment of kubernetes targets on ``cluster`` (the checks' kubeconfig)."""
    body = {name: {"type": "kubernetes", "kubeconfig": str(cluster.kubeconfig), **spec}
            for name, spec in targets.items()}
    return yaml.safe_dump({"settings": {"timeout_s": timeout_s}, "targets": body},
                          sort_keys=False)


def tekutoko(namespace: str, **extra: Any) -> dict[str, Any]:
    """The TekuToko target section, looking in ``namespace``."""
    return {"namespaces": [namespace], "deployments": [APP], "hpas": [APP],
            "cronjobs": {BACKUP: {"max_age_hours": 26}}, **extra}


def run_checks(project: Project, env: str, *args: str, checks: tuple[str, ...] = (
        HEALTH, BACKUP_CHECKS), name: str = "kube") -> tuple[Result, dict[str, Any]]:
    for check in checks:
        project.copy_check(check)
    return project.run_checks(name, env, *args, timeout=150)


def failing(check: dict[str, Any], verdict: str = "FAIL") -> list[str]:
    return sorted(f"{m['name']} = {m['value']}" for m in check["evidence"]
                  if m["verdict"] == verdict)


def notes(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"]}


def measurement(check: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in check["evidence"] if m["name"] == name)


def audit_events(cluster: KubernetesCluster) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cluster.audit_log.read_text().splitlines() if line]


# -- schema and kubeconfig ---------------------------------------------------------------------
def test_schema_defaults_forms_and_one_way_in(tmp_path: Path) -> None:
    spec = KubernetesTarget(type="kubernetes", kubeconfig="/k", deployments=["a", "ns2/b"],
                            cronjobs=["backup"])
    assert spec.cronjobs["backup"].max_age_hours == 26
    assert spec.events.window_minutes == 60
    assert spec.security.privileged
    assert spec.security.latest_tag
    assert [(r.namespace, r.name, r.label) for r in map(spec.ref, spec.deployments)] == [
        ("", "a", "a"), ("ns2", "b", "ns2/b")]
    assert spec.secrets() == []
    assert spec.address() == "kubeconfig /k"  # unreadable: where it was to be read
    assert KubernetesTarget(type="kubernetes", in_cluster=True).namespaces == []


@pytest.mark.parametrize(("keys", "error"), [
    ({}, "give kubeconfig: .a path. or in_cluster: true"),
    ({"kubeconfig": "/k", "in_cluster": True}, "not both"),
    ({"in_cluster": True, "context": "x"}, "in_cluster: true has none"),
    ({"kubeconfig": "/k", "namespaces": ["a", "b"], "deployments": ["api"]},
     "several namespaces are declared; write namespace/name .e.g. a/api."),
    ({"kubeconfig": "/k", "deployments": ["Bad_Name"]}, "is not an object name"),
    ({"kubeconfig": "/k", "namespaces": ["a/b"]}, "is not a namespace name"),
    ({"kubeconfig": "/k", "cronjobs": {"b": {"max_age_hour": 2}}}, "Extra inputs"),
    ({"kubeconfig": "/k", "security": {"privileges": False}}, "Extra inputs"),
    ({"kubeconfig": "/k", "remediation": {"scale": {"replicas": {"a": -1}}}},
     "greater than or equal to 0"),
    ({"kubeconfig": "/k", "namespaces": ["a", "b"],
      "remediation": {"scale": {"replicas": {"api": 2}}}}, "write namespace/name"),
])
def test_schema_rejects(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        KubernetesTarget(type="kubernetes", **keys)


def test_kubeconfig_context_address_and_tokens_registered(tmp_path: Path) -> None:
    token, other = "tok-" + secrets.token_hex(12), "pw-" + secrets.token_hex(12)
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({
        "current-context": "a",
        "clusters": [{"name": "c1", "cluster": {"server": "https://10.9.8.7:6443/"}},
                     {"name": "c2", "cluster": {"server": "https://kube.example"}}],
        "users": [{"name": "u", "user": {"token": token}},
                  {"name": "v", "user": {"username": "x", "password": other}}],
        "contexts": [{"name": "a", "context": {"cluster": "c1", "user": "u"}},
                     {"name": "b", "context": {"cluster": "c2", "user": "v",
                                               "namespace": "prod"}}]}))
    view = read_kubeconfig(str(path), None)
    assert (view.context, view.server, view.namespace) == ("a", "https://10.9.8.7:6443/", None)
    assert token in SECRETS.values
    assert other in SECRETS.values
    assert read_kubeconfig(str(path), "b").namespace == "prod"
    spec = KubernetesTarget(type="kubernetes", kubeconfig=str(path), context="b")
    assert spec.address() == "kube.example:443"
    assert KubernetesTarget(type="kubernetes", kubeconfig=str(path)).address() == \
        "10.9.8.7:6443"
    with pytest.raises(ValueError, match=r"no context 'c'; contexts: a, b"):
        read_kubeconfig(str(path), "c")
    with pytest.raises(ValueError, match="No such file or directory"):
        read_kubeconfig(str(tmp_path / "nothing"), None)


@pytest.mark.parametrize(("image", "problem"), [
    ("registry.example/tekutoko-api:1.8.2", None),
    ("registry.example:5000/team/api:2", None),
    ("nginx@sha256:" + "a" * 64, None),
    ("nginx:latest@sha256:" + "a" * 64, None),
    ("nginx:latest", "the :latest tag"),
    ("registry.example:5000/team/api", "no tag (pulls :latest)"),
    ("busybox", "no tag (pulls :latest)"),
])
def test_what_an_unpinned_image_is(image: str, problem: str | None) -> None:
    assert image_tag_problem(image) == problem


def test_times_as_the_api_writes_them() -> None:
    assert api_time("2026-12-01T03:04:00Z") == dt.datetime(2026, 12, 1, 3, 4, tzinfo=dt.UTC)
    assert api_time("2026-12-01T03:04:00.123456789Z") == dt.datetime(
        2026, 12, 1, 3, 4, 0, 123456, tzinfo=dt.UTC)
    assert api_time("2026-12-01T12:04:00+09:00") == dt.datetime(2026, 12, 1, 3, 4,
                                                                 tzinfo=dt.UTC)
    assert api_time(None) is None
    assert api_time("yesterday") is None
    assert api_time("0001-01-01T00:00:00Z") is None  # Go's zero time: never


# -- a real API server ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster() -> Iterator[KubernetesCluster]:
    if not _installed():
        pytest.skip("kube-apiserver and etcd are built by ./ops setup")
    yield from start_cluster()


@pytest.fixture
def admin(cluster: KubernetesCluster) -> Iterator[Admin]:
    found = Admin(cluster)
    yield found
    found.close()


def client_for(cluster: KubernetesCluster, timeout_s: float = 5, **keys: Any) -> KubernetesClient:
    spec = KubernetesTarget(type="kubernetes", kubeconfig=str(cluster.kubeconfig), **keys)
    return KubernetesClient("cluster", spec, timeout_s)


@needs_kubernetes
def test_client_reads_and_refuses_every_write_before_it_is_sent(
        cluster: KubernetesCluster, admin: Admin) -> None:
    ns = admin.namespace()
    client = client_for(cluster, namespaces=[ns.ns])
    assert client.ping() == "v1.37.2"
    spec = client.spec
    found = client.deployment(spec.ref(APP))
    assert found.state is not None
    assert (found.state.replicas, found.state.ready, found.state.selector) == (
        3, 3, f"app={APP}")
    assert client.deployment(spec.ref("nothing")).others == (APP,)
    assert len(client.pods().pods) == 3
    from kubernetes.client import AppsV1Api, CoreV1Api

    apps, core = AppsV1Api(client.api), CoreV1Api(client.api)
    before = len(audit_events(cluster))
    for verb, attempt in (
        ("PATCH", lambda: apps.patch_namespaced_deployment_scale(
            APP, ns.ns, {"spec": {"replicas": 0}})),
        ("DELETE", lambda: core.delete_namespaced_pod(pods_of(ns)[0], ns.ns)),
        ("POST", lambda: core.create_namespace({"metadata": {"name": "opsverify-was-here"}})),
        ("PUT", lambda: core.replace_namespaced_config_map("x", ns.ns, {"data": {}})),
    ):
        with pytest.raises(WriteRefused, match=f"refusing Kubernetes API {verb} /"):
            attempt()
    with pytest.raises(WriteRefused, match="from a read-only client"):
        client.restart_deployment(spec.ref(APP), "2026-12-01T00:00:00Z")
    client.close()
    time.sleep(0.2)
    # Refused before it was sent: the API server never saw it.
    sent = [e for e in audit_events(cluster)[before:] if e["user"].get("username") == USER]
    assert [e["verb"] for e in sent if e["verb"] not in ("get", "list", "watch")] == []
    assert admin.api.get(ns.path("apps/v1", "deployments", APP))["spec"]["replicas"] == 3


@needs_kubernetes
def test_in_cluster_the_service_account_token_ca_and_namespace(
        cluster: KubernetesCluster, admin: Admin, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``in_cluster: true`` as in a pod: the server from KUBERNETES_SERVICE_HOST/PORT, the
    token, CA and namespace from the service account's mount (here a directory of ours
    with the same three files), the token registered as a secret when it is read."""
    import kubernetes.config.incluster_config as incluster

    import opsverify.targets.kubernetes as target

    ns = admin.namespace()
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "token").write_text(cluster.token)
    (mount / "ca.crt").write_text(cluster.tls.ca.read_text())
    (mount / "namespace").write_text(ns.ns)
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(mount / "token"))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(mount / "ca.crt"))
    monkeypatch.setattr(target, "SERVICE_ACCOUNT", mount)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(cluster.port))
    spec = KubernetesTarget(type="kubernetes", in_cluster=True, deployments=[APP])
    assert spec.address() == f"127.0.0.1:{cluster.port}"
    client = KubernetesClient("cluster", spec, 5)
    assert client.ping() == "v1.37.2"
    assert client.namespaces() == (ns.ns,)
    found = client.deployment(spec.ref(APP))
    assert found.state is not None
    assert found.state.namespace == ns.ns
    assert cluster.token in SECRETS.values
    client.close()


@needs_kubernetes
def test_unreachable_hung_and_refused_servers_are_one_line(
        cluster: KubernetesCluster, tmp_path: Path, hung_server: HungServer) -> None:
    config = json.loads(cluster.kubeconfig.read_text())

    def kubeconfig(name: str, server: str | None = None, token: str | None = None) -> str:
        data = json.loads(json.dumps(config))
        if server:
            data["clusters"][0]["cluster"]["server"] = server
        if token:
            data["users"][0]["user"]["token"] = token
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return str(path)

    bad_token = "not-a-token-" + secrets.token_hex(8)
    refused = free_port()
    cases = {  # kubeconfig: (deadline, cause)
        kubeconfig("refused", f"https://127.0.0.1:{refused}"): (3, "connection refused"),
        kubeconfig("hung", f"https://127.0.0.1:{hung_server.port}"): (
            0.5, "no answer within 0.5 s"),
        kubeconfig("token", token=bad_token): (
            3, "API server answered 401 Unauthorized: the credentials were refused"),
        str(tmp_path / "missing"): (3, f"kubeconfig {tmp_path / 'missing'}: No such file or "
                                       "directory"),
    }
    for path, (deadline, cause) in cases.items():
        client = KubernetesClient("cluster", KubernetesTarget(type="kubernetes",
                                                              kubeconfig=path), deadline)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable) as raised:
            client.ping()
        assert time.monotonic() - started < deadline + 1, path
        assert raised.value.cause == cause, path
        assert "\n" not in str(raised.value)
        assert str(raised.value).startswith("cluster (kubernetes ")
        assert bad_token not in str(raised.value)
        client.close()
    untrusted = json.loads(json.dumps(config))
    del untrusted["clusters"][0]["cluster"]["certificate-authority"]
    (tmp_path / "untrusted").write_text(json.dumps(untrusted))
    client = KubernetesClient("cluster", KubernetesTarget(
        type="kubernetes", kubeconfig=str(tmp_path / "untrusted")), 3)
    with pytest.raises(TargetUnavailable, match="TLS certificate not trusted"):
        client.ping()


@needs_kubernetes
def test_checks_pass_on_a_healthy_namespace(cluster: KubernetesCluster, admin: Admin,
                                            project: Project) -> None:
    ns = admin.namespace()
    result, checks = run_checks(project, environment(cluster, {"cluster": tekutoko(ns.ns)}),
                                "-m", "daily")
    assert result.returncode == 0, result.output
    assert {k: c["outcome"] for k, c in checks.items()} == {
        "test_deployment_available[cluster:tekutoko-api]": "PASS",
        "test_deployment_rollout_complete[cluster:tekutoko-api]": "PASS",
        "test_pods_healthy[cluster]": "PASS",
        "test_hpa_not_at_max[cluster:tekutoko-api]": "PASS",
        "test_no_recent_warning_events[cluster]": "PASS",
        "test_cronjob_last_success_recent[cluster:tekutoko-db-backup]": "PASS",
    }
    available = notes(checks["test_deployment_available[cluster:tekutoko-api]"])
    assert (available["tekutoko-api readyReplicas"],
            available["tekutoko-api availableReplicas"]) == (3, 3)
    pods = checks["test_pods_healthy[cluster]"]
    assert notes(pods)["pods inspected"] == 3
    restarts = measurement(pods, "kubernetes.restart_count")
    assert (restarts["value"], restarts["expected"], restarts["source"]) == (
        0, "≤ 5 restarts", "crit from check default")
    hpa = notes(checks["test_hpa_not_at_max[cluster:tekutoko-api]"])
    assert (hpa["tekutoko-api currentReplicas"], hpa["tekutoko-api CPU utilization"]) == (3, 41)
    assert hpa["tekutoko-api scales"] == "Deployment/tekutoko-api between 2 and 10"
    backup = checks["test_cronjob_last_success_recent[cluster:tekutoko-db-backup]"]
    age = measurement(backup, "tekutoko-db-backup last success age")
    assert 0 <= age["value"] < 24
    assert age["expected"] == "≤ 26 h"
    assert age["source"].startswith("environments/kube.yaml:")
    assert notes(backup)["tekutoko-db-backup schedule"] == "0 3 * * *"
    assert measurement(checks["test_no_recent_warning_events[cluster]"],
                       "kubernetes.warning_events")["value"] == 0


@needs_kubernetes
def test_each_fault_turns_its_checks_red_for_the_right_reason(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    faults = ("pod-crashloop", "deployment-degraded", "rollout-stuck", "hpa-maxed",
              "cronjob-missed")
    spaces = {fault: admin.namespace(fault) for fault in faults}
    env = environment(cluster, {f: tekutoko(ns.ns) for f, ns in spaces.items()})
    result, checks = run_checks(project, env, "-m", "daily")
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    red = {k for k, c in checks.items() if c["outcome"] != "PASS"}
    # Every fault also leaves its Warning events, but hpa-maxed (a Normal rescale) and
    # cronjob-missed (a job that did not run says nothing).
    assert red == {
        "test_pods_healthy[pod-crashloop]", "test_deployment_available[pod-crashloop:tekutoko-api]",
        "test_no_recent_warning_events[pod-crashloop]",
        "test_deployment_available[deployment-degraded:tekutoko-api]",
        "test_no_recent_warning_events[deployment-degraded]",
        "test_deployment_rollout_complete[rollout-stuck:tekutoko-api]",
        "test_no_recent_warning_events[rollout-stuck]",
        "test_hpa_not_at_max[hpa-maxed:tekutoko-api]",
        "test_cronjob_last_success_recent[cronjob-missed:tekutoko-db-backup]",
    }, result.output

    crash = checks["test_pods_healthy[pod-crashloop]"]
    pod = f"{spaces['pod-crashloop'].ns}/{pods_of(spaces['pod-crashloop'])[2]}"
    assert failing(crash) == sorted([
        f"{pod} container api restartCount = 7",
        f"{pod} container api waiting = CrashLoopBackOff: back-off 5m0s restarting failed "
        f"container=api pod={pods_of(spaces['pod-crashloop'])[2]}",
        "containers stuck waiting = 1", "kubernetes.restart_count = 7"])
    assert notes(crash)[f"{pod} container api last exit"] == "Error (exit code 1)"
    assert failing(checks["test_deployment_available[pod-crashloop:tekutoko-api]"]) == [
        "tekutoko-api availableReplicas = 2", "tekutoko-api readyReplicas = 2"]
    events = checks["test_no_recent_warning_events[pod-crashloop]"]
    assert measurement(events, "kubernetes.warning_events")["value"] == 31
    looping = pods_of(spaces["pod-crashloop"])[2]
    [counted, listed] = failing(events)
    assert counted == "kubernetes.warning_events = 31"
    assert listed.startswith(f"{spaces['pod-crashloop'].ns}/Pod/{looping} BackOff = 31×, last ")
    assert listed.endswith(f": Back-off restarting failed container api in pod {looping}_"
                           f"{spaces['pod-crashloop'].ns}")
    assert notes(events)["reasons"] == "BackOff 31×"

    degraded = checks["test_deployment_available[deployment-degraded:tekutoko-api]"]
    assert failing(degraded) == ["tekutoko-api availableReplicas = 1",
                                 "tekutoko-api readyReplicas = 1"]
    assert notes(degraded)["tekutoko-api condition Available"] == (
        "Available=False (MinimumReplicasUnavailable): Deployment does not have minimum "
        "availability.")
    assert notes(checks["test_no_recent_warning_events[deployment-degraded]"])["reasons"] == \
        "Unhealthy 36×"

    stuck = checks["test_deployment_rollout_complete[rollout-stuck:tekutoko-api]"]
    assert failing(stuck) == [
        "tekutoko-api condition Progressing = Progressing=False (ProgressDeadlineExceeded): "
        'ReplicaSet "tekutoko-api-7f9b8c6d5" has timed out progressing.',
        "tekutoko-api old replicas left = 3", "tekutoko-api updatedReplicas = 1"]
    assert checks["test_deployment_available[rollout-stuck:tekutoko-api]"]["outcome"] == "PASS"

    maxed = checks["test_hpa_not_at_max[hpa-maxed:tekutoko-api]"]
    assert failing(maxed) == ["tekutoko-api currentReplicas = 10",
                              "tekutoko-api desiredReplicas = 10"]
    assert measurement(maxed, "tekutoko-api currentReplicas")["expected"] == \
        "≤ 9 replicas (maxReplicas 10)"
    assert notes(maxed)["tekutoko-api CPU utilization"] == 96

    missed = checks["test_cronjob_last_success_recent[cronjob-missed:tekutoko-db-backup]"]
    [line] = failing(missed)
    assert line.startswith("tekutoko-db-backup last success age = ")
    age = measurement(missed, "tekutoko-db-backup last success age")["value"]
    assert 72 < age < 72 + 24
    assert checks["test_no_recent_warning_events[cronjob-missed]"]["outcome"] == "PASS"


@needs_kubernetes
def test_missing_suspended_and_never_run_objects_and_warn_levels(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    ns = admin.namespace()
    c = ns
    # A second backup job that never ran, the first one suspended.
    job = c.api.get(c.path("batch/v1", "cronjobs", BACKUP))
    job["metadata"] = {"name": "tekutoko-exports"}
    job.pop("status", None)
    c.api.create(c.path("batch/v1", "cronjobs"), job)
    c.api.patch(c.path("batch/v1", "cronjobs", BACKUP), {"spec": {"suspend": True}})
    # One pod restarted 4 times (past warn 3, not crit 5); one cannot pull its image.
    pods = pods_of(c)
    c.pod_status(pods[0], restarts=4)
    c.pod_status(pods[1], ready=False, waiting=("ImagePullBackOff", 'Back-off pulling image '
                                                '"registry.example/tekutoko-api:1.8.2"'))
    # An old Warning event: outside the default window, inside a three-hour one.
    c.event("Pod", pods[0], "Unhealthy", "Liveness probe failed", warning=True, count=2,
            ago_s=2 * 3600)
    # An HPA that cannot scale: min = max.
    hpa = c.api.get(c.path("autoscaling/v2", "horizontalpodautoscalers", APP))
    hpa["metadata"] = {"name": "fixed"}
    hpa["spec"]["minReplicas"] = hpa["spec"]["maxReplicas"] = 4
    hpa.pop("status", None)
    c.api.create(c.path("autoscaling/v2", "horizontalpodautoscalers"), hpa)
    env = environment(cluster, {
        "cluster": tekutoko(ns.ns, deployments=[APP, "tekutoko-worker"], hpas=[APP, "fixed"],
                            cronjobs={BACKUP: None, "tekutoko-exports": {"max_age_hours": 2}}),
        "wide": {"namespaces": [ns.ns], "events": {"window_minutes": 180},
                 "thresholds": {"kubernetes.restart_count": {"warn": 5, "crit": 10}}},
    })
    result, checks = run_checks(project, env, "-m", "daily")
    assert result.returncode == 1, result.output

    for test in ("test_deployment_available", "test_deployment_rollout_complete"):
        missing = checks[f"{test}[cluster:tekutoko-worker]"]
        assert failing(missing) == [
            f"deployments named 'tekutoko-worker' in namespace {ns.ns} = 0"], missing
        assert notes(missing)[f"deployments in namespace {ns.ns}"] == APP
    suspended = checks["test_cronjob_last_success_recent[cluster:tekutoko-db-backup]"]
    assert failing(suspended) == ["tekutoko-db-backup spec.suspend = True"]
    assert measurement(suspended, "tekutoko-db-backup last success age")["source"] == \
        "check default"
    never = checks["test_cronjob_last_success_recent[cluster:tekutoko-exports]"]
    assert failing(never) == ["tekutoko-exports lastSuccessfulTime = never"]
    assert measurement(never, "tekutoko-exports lastSuccessfulTime")["expected"] == \
        "= 'within 2 h'"
    fixed = checks["test_hpa_not_at_max[cluster:fixed]"]
    assert fixed["outcome"] == "SKIP"
    assert "minReplicas = maxReplicas = 4, it cannot scale" in fixed["message"]

    pods_check = checks["test_pods_healthy[cluster]"]
    assert failing(pods_check) == sorted([
        f"{ns.ns}/{pods[1]} container api waiting = ImagePullBackOff: Back-off pulling image "
        '"registry.example/tekutoko-api:1.8.2"', "containers stuck waiting = 1"])
    assert failing(pods_check, "WARN") == ["kubernetes.restart_count = 4"]
    assert notes(pods_check)[f"{ns.ns}/{pods[0]} container api restartCount"] == 4
    # The wide target: its own thresholds allow 4 restarts; its window sees the old event.
    wide = checks["test_pods_healthy[wide]"]
    assert measurement(wide, "kubernetes.restart_count")["source"].startswith(
        "crit from environments/kube.yaml:")
    assert failing(wide, "WARN") == []
    assert checks["test_no_recent_warning_events[cluster]"]["outcome"] == "PASS"
    old = checks["test_no_recent_warning_events[wide]"]
    assert old["outcome"] == "FAIL"
    counted, listed = failing(old)
    assert counted == "kubernetes.warning_events = 2"
    assert listed.startswith(f"{ns.ns}/Pod/{pods[0]} Unhealthy = 2×, last ")
    assert listed.endswith(": Liveness probe failed")


@needs_kubernetes
def test_a_denied_read_is_a_skip_naming_the_grant(cluster: KubernetesCluster, admin: Admin,
                                                   project: Project) -> None:
    ns = admin.namespace()
    env = environment(cluster, {"nobody": tekutoko(ns.ns, context="sandbox-unprivileged")})
    result, checks = run_checks(project, env, "-m", "daily")
    assert result.returncode == 0, result.output
    assert {c["outcome"] for c in checks.values()} == {"SKIP"}, result.output
    pods = checks["test_pods_healthy[nobody]"]["message"]
    assert pods == (f"nobody: cannot read pods in namespace {ns.ns} without a privilege this "
                    f"account lacks; grant it: RBAC: list on pods in namespace {ns.ns} (e.g. "
                    f"kubectl create role opsverify-read --verb=get,list --resource=pods -n "
                    f"{ns.ns}, bound to the checks' account)")
    assert "get on deployments.apps" in \
        checks["test_deployment_available[nobody:tekutoko-api]"]["message"]


@needs_kubernetes
def test_server_down_is_one_error_line_per_check(cluster: KubernetesCluster,
                                                 project: Project, tmp_path: Path) -> None:
    data = json.loads(cluster.kubeconfig.read_text())
    data["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    down = tmp_path / "down"
    down.write_text(json.dumps(data))
    env = environment(cluster, {"cluster": tekutoko("tekutoko")}).replace(
        str(cluster.kubeconfig), str(down))
    result, checks = run_checks(project, env, "-m", "daily")
    assert result.returncode == 1
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}, result.output
    assert "connection refused" in result.output
    assert "Traceback" not in result.output


# -- the read-only proof --------------------------------------------------------------------
@needs_kubernetes
def test_a_non_destructive_run_sends_only_get_list_and_watch(
        cluster: KubernetesCluster, admin: Admin, project: Project) -> None:
    """Every stock non-destructive kubernetes check (daily and security) against a namespace
    with something to find, then the API server's audit log: the checks' user sent reads
    only, and sent them."""
    ns = admin.namespace("pod-crashloop", "hpa-maxed")
    before = len(audit_events(cluster))
    result, checks = run_checks(
        project, environment(cluster, {"cluster": tekutoko(ns.ns)}), "-m",
        "daily or security", checks=(HEALTH, BACKUP_CHECKS, SECURITY, REMEDIATION))
    assert result.returncode == 1, result.output  # it found the faults
    assert len(checks) == 9, sorted(checks)
    time.sleep(0.5)  # blocking audit mode: written before the answer; slack all the same
    mine = [e for e in audit_events(cluster)[before:] if e["user"].get("username") == USER]
    verbs = {e["verb"] for e in mine}
    assert verbs <= {"get", "list", "watch"}, [(e["verb"], e["requestURI"]) for e in mine
                                                if e["verb"] not in ("get", "list", "watch")]
    assert verbs == {"get", "list"}
    resources = {e.get("objectRef", {}).get("resource") for e in mine}
    assert {"deployments", "pods", "horizontalpodautoscalers", "cronjobs", "events"} <= resources
    assert all(e["userAgent"] == "opsverify (read-only)" for e in mine)
    # The health and security checks judged one listing of the pods.
    assert len([e for e in mine if e.get("objectRef", {}).get("resource") == "pods"]) == 1
    assert all(e["objectRef"]["namespace"] == ns.ns for e in mine if "objectRef" in e
               and "namespace" in e["objectRef"])
    # The whole log: nothing but reads, ever, from the checks' user in this module.
    assert {e["verb"] for e in audit_events(cluster) if e["user"].get("username") == USER} <= {
        "get", "list", "watch"}
    # And the token the kubeconfig holds is in no artifact of the run.
    token = json.loads(cluster.kubeconfig.read_text())["users"][0]["user"]["token"]
    assert token not in result.output
    for path in (p for p in project.reports.rglob("*") if p.is_file()):
        assert token not in path.read_text(errors="replace"), path


@needs_kubernetes
def test_the_kubernetes_package_loads_only_with_a_kubernetes_target(project: Project) -> None:
    project.write("checks/health/test_probe_import.py", '''
import sys

def test_loaded(evidence):
    evidence.note("loaded", "kubernetes" in sys.modules)
''')
    env = yaml.safe_dump({"targets": {"web": {"type": "http", "url": "http://127.0.0.1:9"}}})
    result, checks = project.run_checks("plain", env)
    assert notes(checks["test_loaded"])["loaded"] is False, result.output
