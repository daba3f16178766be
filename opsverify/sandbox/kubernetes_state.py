"""TekuToko's workloads in the sandbox's API server, written as its controllers would.

No kubelet or controller manager runs in the sandbox, so what they would report is written
through the API, status subresources included (as kwok and envtest users do): a deployment
``tekutoko-api`` of three ready pods with pinned images and limits, its HPA, the nightly
database backup CronJob, and the Normal events of a healthy rollout. Each fault then
rewrites that state the way a broken cluster reports it, and nothing else.
"""

from __future__ import annotations

import copy
import datetime as dt
import secrets
from typing import Any

import requests

from opsverify.sandbox.faults import (
    BACKUP,
    CRASH_RESTARTS,
    HPA_MAX,
    KUBERNETES_STATE,
    MISSED_DAYS,
    NEXT_IMAGE,
)
from opsverify.sandbox.faults import KUBERNETES_APP as APP

IMAGE = "registry.example/tekutoko-api:1.8.2"
HASH, NEXT_HASH = "6d4cf56db6", "7f9b8c6d5"  # pod-template-hash of the two ReplicaSets
POD_SUFFIXES = ("2xk9p", "8hvqd", "tq7mz", "b5w2c", "f9r4x", "h3m8n", "k7p2q", "m4t6v",
                "r8x3z", "w2c9j")
REPLICAS, HPA_MIN = 3, 2
BACKUP_IMAGE = "registry.example/tekutoko-db-backup:2.3.0"

# What inject() writes: every kubernetes fault but kubernetes-down (no server to write to).
FAULTS: dict[str, str] = KUBERNETES_STATE


def stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiWriter:
    """JSON over the API server's REST paths, as the sandbox's administrator."""

    def __init__(self, session: requests.Session, url: str) -> None:
        self.session = session
        self.url = url

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch of the object (``path`` may end in ``/status``)."""
        return self._send("PATCH", path, body, "application/merge-patch+json")

    def get(self, path: str) -> dict[str, Any]:
        return self._send("GET", path, None)

    def _send(self, method: str, path: str, body: dict[str, Any] | None,
              content_type: str = "application/json") -> dict[str, Any]:
        answer = self.session.request(method, self.url + path, json=body, timeout=30,
                                      headers={"Content-Type": content_type})
        if answer.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        out: dict[str, Any] = answer.json()
        return out


class Cluster:
    """Paths and objects of one namespace."""

    def __init__(self, api: ApiWriter, namespace: str) -> None:
        self.api = api
        self.ns = namespace
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def path(self, group: str, kind: str, name: str = "") -> str:
        base = "/api/v1" if group == "" else f"/apis/{group}"
        return f"{base}/namespaces/{self.ns}/{kind}" + (f"/{name}" if name else "")

    # -- objects -----------------------------------------------------------------------
    def pod_template(self, image: str, template_hash: str) -> dict[str, Any]:
        return {
            "metadata": {"labels": {"app": APP, "pod-template-hash": template_hash}},
            "spec": {"containers": [{
                "name": "api", "image": image, "ports": [{"containerPort": 8080}],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                              "limits": {"cpu": "1", "memory": "512Mi"}},
                "readinessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                   "periodSeconds": 10},
                "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                    "runAsUser": 10001, "readOnlyRootFilesystem": True},
            }]},
        }

    def deployment(self) -> dict[str, Any]:
        template = self.pod_template(IMAGE, HASH)
        del template["metadata"]["labels"]["pod-template-hash"]
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": APP, "labels": {"app": APP}},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": APP}},
                     "progressDeadlineSeconds": 600,
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": template},
        }

    def deployment_status(self, *, ready: int, updated: int, replicas: int | None = None,
                          desired: int = REPLICAS, progressing: tuple[str, str, str] | None
                          = None) -> None:
        """What the deployment controller would write: counts and conditions."""
        current = self.api.get(self.path("apps/v1", "deployments", APP))
        replicas = desired if replicas is None else replicas
        at = stamp(self.now)
        available = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability."
                     ) if ready >= desired else (
            "False", "MinimumReplicasUnavailable", "Deployment does not have minimum "
            "availability.")
        progressing = progressing or ("True", "NewReplicaSetAvailable",
                                      f'ReplicaSet "{APP}-{HASH}" has successfully progressed.')
        self.api.patch(self.path("apps/v1", "deployments", APP) + "/status", {"status": {
            "observedGeneration": current["metadata"]["generation"],
            "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": max(0, replicas - ready),
            "conditions": [
                {"type": "Available", "status": available[0], "reason": available[1],
                 "message": available[2], "lastUpdateTime": at, "lastTransitionTime": at},
                {"type": "Progressing", "status": progressing[0], "reason": progressing[1],
                 "message": progressing[2], "lastUpdateTime": at, "lastTransitionTime": at},
            ]}})

    def pod(self, index: int, image: str = IMAGE, template_hash: str = HASH) -> str:
        """Create a pod of the deployment, bound to a node; its name."""
        name = f"{APP}-{template_hash}-{POD_SUFFIXES[index]}"
        body = copy.deepcopy(self.pod_template(image, template_hash))
        body["metadata"]["name"] = name
        body["spec"]["nodeName"] = f"gke-tekutoko-pool-{index % 3 + 1}"
        self.api.create(self.path("", "pods"), {"apiVersion": "v1", "kind": "Pod", **body})
        return name

    def pod_status(self, name: str, *, ready: bool = True, restarts: int = 0,
                   waiting: tuple[str, str] | None = None, image: str = IMAGE) -> None:
        """What the kubelet would report of a running pod (``waiting``: reason, message)."""
        started = stamp(self.now - dt.timedelta(hours=20))
        state: dict[str, Any] = {"running": {"startedAt": started}}
        last: dict[str, Any] = {}
        if waiting is not None:
            state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
            last = {"terminated": {"exitCode": 1, "reason": "Error",
                                   "startedAt": stamp(self.now - dt.timedelta(seconds=75)),
                                   "finishedAt": stamp(self.now - dt.timedelta(seconds=70))}}
        flag = "True" if ready else "False"
        self.api.patch(self.path("", "pods", name) + "/status", {"status": {
            "phase": "Running", "startTime": started,
            "conditions": [{"type": t, "status": s, "lastTransitionTime": started} for t, s in
                           (("PodScheduled", "True"), ("Initialized", "True"),
                            ("ContainersReady", flag), ("Ready", flag))],
            "containerStatuses": [{
                "name": "api", "image": image, "imageID": f"{image.split(':')[0]}@sha256:"
                + "5b1f" * 16, "ready": ready, "started": waiting is None,
                "restartCount": restarts, "state": state, "lastState": last}],
        }})

    def event(self, kind: str, name: str, reason: str, message: str, *,
              warning: bool = False, count: int = 1, ago_s: int = 30,
              component: str = "kubelet") -> None:
        when = stamp(self.now - dt.timedelta(seconds=ago_s))
        group = {"Deployment": "apps/v1", "HorizontalPodAutoscaler": "autoscaling/v2",
                 "CronJob": "batch/v1"}.get(kind, "v1")
        self.api.create(self.path("", "events"), {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name}.{secrets.token_hex(8)}"},
            "involvedObject": {"kind": kind, "name": name, "namespace": self.ns,
                               "apiVersion": group},
            "reason": reason, "message": message, "type": "Warning" if warning else "Normal",
            "count": count, "firstTimestamp": stamp(self.now - dt.timedelta(hours=20)),
            "lastTimestamp": when, "source": {"component": component}})

    def hpa_status(self, current: int, cpu_pct: int, *, limited: bool = False) -> None:
        at = stamp(self.now)
        conditions = [
            {"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale",
             "message": "recommended size matches current size", "lastTransitionTime": at},
            {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound",
             "message": "the HPA was able to successfully calculate a replica count from cpu "
                        "resource utilization (percentage of request)",
             "lastTransitionTime": at},
            {"type": "ScalingLimited", "status": "True" if limited else "False",
             "reason": "TooManyReplicas" if limited else "DesiredWithinRange",
             "message": "the desired replica count is more than the maximum replica count"
             if limited else "the desired count is within the acceptable range",
             "lastTransitionTime": at}]
        self.api.patch(self.path("autoscaling/v2", "horizontalpodautoscalers", APP) + "/status",
                       {"status": {"currentReplicas": current, "desiredReplicas": current,
                                   "currentMetrics": [{"type": "Resource", "resource": {
                                       "name": "cpu", "current": {
                                           "averageUtilization": cpu_pct}}}],
                                   "conditions": conditions}})

    def backup_status(self, last_run: dt.datetime) -> None:
        self.api.patch(self.path("batch/v1", "cronjobs", BACKUP) + "/status", {"status": {
            "lastScheduleTime": stamp(last_run),
            "lastSuccessfulTime": stamp(last_run + dt.timedelta(minutes=4))}})

    def last_backup_slot(self) -> dt.datetime:
        """The most recent 03:00 UTC: when the nightly backup last ran."""
        slot = self.now.replace(hour=3, minute=0, second=0)
        return slot if slot <= self.now else slot - dt.timedelta(days=1)


def seed(api: ApiWriter, namespace: str) -> None:
    """A healthy TekuToko namespace."""
    c = Cluster(api, namespace)
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": namespace}})
    api.create(c.path("apps/v1", "deployments"), c.deployment())
    c.deployment_status(ready=REPLICAS, updated=REPLICAS)
    for i in range(REPLICAS):
        c.pod_status(c.pod(i))
        c.event("Pod", f"{APP}-{HASH}-{POD_SUFFIXES[i]}", "Started", "Started container api",
                ago_s=20 * 3600)
    c.event("Deployment", APP, "ScalingReplicaSet",
            f"Scaled up replica set {APP}-{HASH} to {REPLICAS}", ago_s=20 * 3600,
            component="deployment-controller")
    api.create(c.path("autoscaling/v2", "horizontalpodautoscalers"), {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": APP},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
                 "minReplicas": HPA_MIN, "maxReplicas": HPA_MAX,
                 "metrics": [{"type": "Resource", "resource": {
                     "name": "cpu", "target": {"type": "Utilization",
                                               "averageUtilization": 70}}}]}})
    c.hpa_status(REPLICAS, 41)
    api.create(c.path("batch/v1", "cronjobs"), {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": BACKUP},
        "spec": {"schedule": "0 3 * * *", "timeZone": "Etc/UTC",
                 "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 3,
                 "jobTemplate": {"spec": {"backoffLimit": 2, "template": {"spec": {
                     "restartPolicy": "OnFailure",
                     "containers": [{
                         "name": "backup", "image": BACKUP_IMAGE,
                         "args": ["--database", "tekutoko", "--keep-days", "30"],
                         "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                       "limits": {"cpu": "500m", "memory": "256Mi"}},
                         "securityContext": {"allowPrivilegeEscalation": False,
                                             "runAsNonRoot": True, "runAsUser": 10001}}]}}}}}})
    c.backup_status(c.last_backup_slot())


def inject(api: ApiWriter, namespace: str, faults: frozenset[str]) -> None:
    """Rewrite the seeded state as each fault would leave it."""
    c = Cluster(api, namespace)
    pods = [f"{APP}-{HASH}-{s}" for s in POD_SUFFIXES[:REPLICAS]]
    if "pod-crashloop" in faults:
        message = f"back-off 5m0s restarting failed container=api pod={pods[2]}"
        c.pod_status(pods[2], ready=False, restarts=CRASH_RESTARTS,
                     waiting=("CrashLoopBackOff", message))
        c.deployment_status(ready=REPLICAS - 1, updated=REPLICAS)
        c.event("Pod", pods[2], "BackOff", "Back-off restarting failed container api in pod "
                f"{pods[2]}_{namespace}", warning=True, count=31)
    if "deployment-degraded" in faults:
        for name in pods[1:]:
            c.pod_status(name, ready=False)
            c.event("Pod", name, "Unhealthy", "Readiness probe failed: HTTP probe failed with "
                    "statuscode: 503", warning=True, count=18, ago_s=15)
        c.deployment_status(ready=1, updated=REPLICAS)
    if "rollout-stuck" in faults:
        api.patch(c.path("apps/v1", "deployments", APP), {"spec": {"template": {"spec": {
            "containers": [{"name": "api", "image": NEXT_IMAGE}]}}}})
        new = c.pod(3, NEXT_IMAGE, NEXT_HASH)
        c.event("Pod", new, "FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu. "
                "preemption: 0/3 nodes are available: 3 No preemption victims found for "
                "incoming pod.", warning=True, count=12, component="default-scheduler")
        c.deployment_status(ready=REPLICAS, updated=1, replicas=REPLICAS + 1, progressing=(
            "False", "ProgressDeadlineExceeded",
            f'ReplicaSet "{APP}-{NEXT_HASH}" has timed out progressing.'))
    if "hpa-maxed" in faults:
        api.patch(c.path("apps/v1", "deployments", APP), {"spec": {"replicas": HPA_MAX}})
        for i in range(REPLICAS, HPA_MAX):
            c.pod_status(c.pod(i))
        c.deployment_status(ready=HPA_MAX, updated=HPA_MAX, desired=HPA_MAX)
        c.hpa_status(HPA_MAX, 96, limited=True)
        c.event("HorizontalPodAutoscaler", APP, "SuccessfulRescale", f"New size: {HPA_MAX}; "
                "reason: cpu resource utilization (percentage of request) above target",
                ago_s=600, component="horizontal-pod-autoscaler")
    if "cronjob-missed" in faults:
        c.backup_status(c.last_backup_slot() - dt.timedelta(days=MISSED_DAYS))
