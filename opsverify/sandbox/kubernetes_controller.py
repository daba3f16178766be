"""The sandbox's stand-in for the deployment controller and the kubelet.

No controller manager or kubelet runs in the sandbox, so nothing rolls out by itself; a
fix such as ``rollout_restart`` would wait for a rollout that never comes. This thread
plays both for one namespace, as envtest users do: when a deployment's generation is ahead
of its ``status.observedGeneration`` (its template or replicas changed), it reports the
deployment's pods replaced, running and ready, and writes the deployment's status
subresource with every replica updated, ready and available. It starts after the faults
are injected, so what they wrote stays as written until something changes a deployment.
"""

from __future__ import annotations

import threading
from typing import Any

from opsverify.sandbox.kubernetes_state import Cluster

POLL_S = 0.25


class RolloutController:
    """Rolls out, at once and successfully, every changed deployment of ``ns``'s namespace."""

    def __init__(self, ns: Cluster) -> None:
        self.ns = ns
        self.rolled: list[tuple[str, int]] = []  # (deployment, generation) rolled out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opsverify-sandbox-rollouts",
                                        daemon=True)

    def __enter__(self) -> RolloutController:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                deployments = self.ns.api.get(self.ns.path("apps/v1", "deployments"))["items"]
                for deployment in deployments:
                    self._reconcile(deployment)
            except Exception:  # noqa: BLE001, S112 - the server stopping under us ends nothing
                continue

    def _reconcile(self, deployment: dict[str, Any]) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        if meta["generation"] <= (deployment.get("status") or {}).get("observedGeneration", 0):
            return
        labels = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())
        image = spec["template"]["spec"]["containers"][0]["image"]
        for pod in self.ns.api.get(self.ns.path("", "pods") + f"?labelSelector={labels}")["items"]:
            self.ns.pod_status(pod["metadata"]["name"], image=image)  # replaced: running, ready
        n = spec["replicas"]
        self.ns.api.patch(self.ns.path("apps/v1", "deployments", meta["name"]) + "/status", {
            "status": {"observedGeneration": meta["generation"], "replicas": n,
                       "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n,
                       "unavailableReplicas": 0,
                       "conditions": [{"type": "Available", "status": "True",
                                       "reason": "MinimumReplicasAvailable"},
                                      {"type": "Progressing", "status": "True",
                                       "reason": "NewReplicaSetAvailable"}]}})
        self.rolled.append((meta["name"], meta["generation"]))
