"""A real Kubernetes API server (and its etcd) on 127.0.0.1, with TekuToko's workloads.

``./ops`` builds kube-apiserver and etcd from the Go module proxy into the user's cache
(``tools/kube-apiserver``, ``tools/etcd``). The server listens on 127.0.0.1 only, serves a
certificate of the sandbox's CA, knows users only from a token file made per run, signs
service-account tokens with a key made per run, and writes an audit log (every request's
verb, user and URI) that the read-only proof reads. No kubelet, scheduler or controller
manager runs: the workloads' state, status subresources included, is written through the
API as kwok and envtest users do (see :mod:`opsverify.sandbox.kubernetes_state`), faults
rewrite it the way a broken cluster would report it, and once they are in, a thread plays
the deployment controller for the sandbox's namespace (a changed deployment rolls out at
once: :mod:`opsverify.sandbox.kubernetes_controller`), so that a fix can be re-checked.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar

import requests

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import FAULTS_OF
from opsverify.sandbox.kubernetes_controller import RolloutController
from opsverify.sandbox.kubernetes_state import FAULTS, ApiWriter, Cluster, inject, seed
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.sandbox.spec import KubernetesComponent
from opsverify.sandbox.tls import TlsFiles, make_tls
from opsverify.secrets import SECRETS

# What ./ops builds (tools/kube-apiserver/go.mod, tools/etcd/go.mod say the same).
KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.3"
BUILD_HINT = "./ops setup builds it from the Go module proxy"
USER = "opsverify"  # the checks' identity, as the audit log names it
ADMIN_USER = "sandbox-admin"  # who seeds the state and injects faults: not the checks
UNPRIVILEGED_USER = "opsverify-nobody"  # authenticated, and allowed nothing
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
    "omitStages": ["RequestReceived"],  # one event per request, when its answer is known
    "rules": [{"level": "Metadata"}],
}
START_TIMEOUT_S = 120  # a cold kube-apiserver on two busy cores takes 10-40 s


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opsverify"


def binary(name: str, build: str) -> str:
    """``name`` from ``./ops``'s build of ``build`` (``etcd-v3.7.3``) in the user's cache,
    else from ``PATH``."""
    built = cache_dir() / build / "bin" / name
    if built.is_file() and os.access(built, os.X_OK):
        return str(built)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} {build.rsplit('-', 1)[-1]} not found ({BUILD_HINT})")
    return found


def binaries() -> tuple[str, str]:
    """etcd and kube-apiserver, as ./ops builds them; ``FileNotFoundError`` naming the
    build step when either is missing."""
    return (binary("etcd", f"etcd-{ETCD_VERSION}"),
            binary("kube-apiserver", f"kubernetes-{KUBERNETES_VERSION}"))


class KubernetesCluster:
    """etcd and kube-apiserver, a kubeconfig for the checks, the seeded workloads."""

    name: ClassVar[str] = "kubernetes"
    install_hint: ClassVar[str] = BUILD_HINT
    faults: ClassVar[dict[str, str]] = FAULTS_OF["kubernetes"]

    def __init__(self, spec: KubernetesComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.dir = ctx.workdir / "kubernetes"
        self.port = free_port()
        self.etcd_port = free_port()
        self.peer_port = free_port()
        self.token = secrets.token_urlsafe(24)
        self.admin_token = secrets.token_urlsafe(24)
        self.unprivileged_token = secrets.token_urlsafe(24)
        for token in (self.token, self.admin_token, self.unprivileged_token):
            SECRETS.add(token)
        self.tls = TlsFiles.under(self.dir / "tls")
        self.kubeconfig = self.dir / "kubeconfig"
        self.audit_log = self.dir / "audit.log"
        self.log = ctx.workdir / "kube-apiserver.log"
        self.etcd_log = ctx.workdir / "etcd.log"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.argv: dict[str, list[str]] = {}
        self.controller: RolloutController | None = None  # after the faults: see inject
        self.controller_session: requests.Session | None = None
        # Made with the plan, so that the kubeconfig exists even when kubernetes-down
        # starts no server: its clients then meet a refused connection, as in production.
        self.dir.mkdir(parents=True)
        make_tls(self.tls.ca.parent, names=("127.0.0.1", "localhost", "kubernetes.default.svc"))
        self.write_kubeconfig()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_KUBECONFIG": str(self.kubeconfig),
                "SANDBOX_KUBE_CONTEXT": "sandbox",
                "SANDBOX_KUBE_NAMESPACE": self.spec.namespace,
                "SANDBOX_KUBE_AUDIT_LOG": str(self.audit_log),
                "SANDBOX_KUBE_PORT": str(self.port)}

    # -- the three steps ------------------------------------------------------------------
    def prepare(self) -> None:
        # Here: every run imports the sandbox's components, most never start this one.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        etcd, apiserver = binaries()
        key = rsa.generate_private_key(65537, 2048)
        signing, public = self.dir / "sa.key", self.dir / "sa.pub"
        signing.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        signing.chmod(0o600)
        public.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        tokens = self.dir / "tokens.csv"  # token,user,uid,"groups"
        tokens.write_text(f'{self.token},{USER},1001,"system:masters"\n'
                          f'{self.admin_token},{ADMIN_USER},1000,"system:masters"\n'
                          f"{self.unprivileged_token},{UNPRIVILEGED_USER},1002\n")
        tokens.chmod(0o600)
        policy = self.dir / "audit-policy.json"
        policy.write_text(json.dumps(AUDIT_POLICY))
        self.argv["etcd"] = [
            etcd, "--name=sandbox", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{self.peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self.peer_port}",
            f"--initial-cluster=sandbox=http://127.0.0.1:{self.peer_port}",
            "--listen-metrics-urls=", "--unsafe-no-fsync", "--log-level=warn",
        ]
        self.argv["kube-apiserver"] = [
            apiserver,
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", f"--secure-port={self.port}",
            "--advertise-address=127.0.0.1",
            f"--cert-dir={self.dir / 'certs'}",
            f"--tls-cert-file={self.tls.cert}", f"--tls-private-key-file={self.tls.key}",
            f"--token-auth-file={tokens}", "--anonymous-auth=false",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={public}",
            f"--service-account-signing-key-file={signing}",
            # Addresses the server hands out to Services: allocated, never contacted.
            "--service-cluster-ip-range=10.96.0.0/24",
            # No token controller runs to make the default service account.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",  # so that a privileged pod can exist to be caught
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking",
            "--profiling=false", "--v=0",
        ]

    def write_kubeconfig(self) -> None:
        """Contexts ``sandbox`` (the checks' user) and ``sandbox-unprivileged`` (a user the
        server authenticates and RBAC allows nothing), both verifying the sandbox CA."""
        def context(name: str, user: str) -> dict[str, object]:
            return {"name": name, "context": {"cluster": "sandbox", "user": user,
                                              "namespace": self.spec.namespace}}
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "sandbox",
            "clusters": [{"name": "sandbox", "cluster": {
                "server": self.url, "certificate-authority": str(self.tls.ca)}}],
            "users": [{"name": USER, "user": {"token": self.token}},
                      {"name": UNPRIVILEGED_USER, "user": {"token": self.unprivileged_token}}],
            "contexts": [context("sandbox", USER),
                         context("sandbox-unprivileged", UNPRIVILEGED_USER)],
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.kubeconfig.chmod(0o600)

    def launch(self) -> None:
        self.processes.append(spawn(self.argv["etcd"], log=self.etcd_log))
        self.processes.append(spawn(self.argv["kube-apiserver"], log=self.log))

    def ready(self) -> None:
        session = self.session()
        try:
            def answers() -> bool:
                try:
                    return session.get(f"{self.url}/readyz", timeout=2).status_code == 200
                except requests.RequestException:
                    return False

            wait_until(lambda: port_open(self.etcd_port), timeout_s=30, what="etcd",
                       process=self.processes[0], log=self.etcd_log)
            wait_until(answers, timeout_s=START_TIMEOUT_S, what="kube-apiserver",
                       process=self.processes[1], log=self.log)
            seed(ApiWriter(session, self.url), self.spec.namespace)
        finally:
            session.close()

    def inject(self, faults: frozenset[str]) -> None:
        chosen = faults & FAULTS.keys()
        if chosen:
            session = self.session()
            try:
                inject(ApiWriter(session, self.url), self.spec.namespace, chosen)
            finally:
                session.close()
        # From now on a changed deployment rolls out, as a cluster's controllers would.
        session = self.controller_session = self.session()
        self.controller = RolloutController(
            Cluster(ApiWriter(session, self.url), self.spec.namespace))
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        if self.controller_session is not None:
            self.controller_session.close()
        for process in reversed(self.processes):
            stop(process)

    # -- helpers --------------------------------------------------------------------------
    def session(self) -> requests.Session:
        """An HTTP session as the sandbox's administrator (not the checks' user), for
        seeding and for tests that write a bad state."""
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.tls.ca)
        session.headers["Authorization"] = f"Bearer {self.admin_token}"
        session.headers["User-Agent"] = "opsverify-sandbox"
        return session
