"""Docker security: docker-bench-security's container runtime section, for every container
on every docker target's engine.

No container is privileged, mounts the engine's socket or the host's ``/``, ``/etc`` and
their like, or shares the host's network, pid, ipc or uts namespace; no ``Env`` value looks
like a plain secret (ts-forecast's "secrets in the environment": only the variable's name is
shown, its value is a secret of the run). Running as root and a writable root file system
are warnings. ``security: {<check>: false}`` on the target opts it out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.docker import ContainerSecurity, DockerClient

    Containers = tuple[ContainerSecurity, ...]


# One listing and one `docker inspect` per container, shared by every check of the engine.
@probe
def security_docker_containers(docker: DockerClient) -> Containers:
    return tuple(docker.security_inventory())


def _inspected(containers: Containers, evidence: EvidenceLog) -> None:
    evidence.note("containers inspected", len(containers), unit="containers")


@pytest.mark.monthly
@pytest.mark.security_check("privileged")
def test_no_privileged_container(security_docker_containers: Containers,
                                 evidence: EvidenceLog) -> None:
    """No container runs ``--privileged`` (every device, every capability: the host's root)."""
    _inspected(security_docker_containers, evidence)
    for c in security_docker_containers:
        if c.privileged:
            evidence.expect(f"{c.name} ({c.status}) HostConfig.Privileged", True, equals=False)
    evidence.expect("privileged containers",
                    sum(c.privileged for c in security_docker_containers), at_most=0,
                    unit="containers")


@pytest.mark.monthly
@pytest.mark.security_check("sensitive_mounts")
def test_no_sensitive_mount(security_docker_containers: Containers,
                            evidence: EvidenceLog) -> None:
    """No container has the engine's socket or a host system directory bind-mounted."""
    _inspected(security_docker_containers, evidence)
    count = 0
    for c in security_docker_containers:
        for mount, what in c.sensitive_binds():
            count += 1
            mode = "rw" if mount.writable else "ro"
            evidence.expect(f"{c.name} mounts {what}",
                            f"{mount.source} at {mount.destination} ({mode})", equals="nothing")
    evidence.expect("sensitive bind mounts", count, at_most=0, unit="mounts")


@pytest.mark.monthly
@pytest.mark.security_check("host_namespaces")
def test_no_host_namespace(security_docker_containers: Containers,
                           evidence: EvidenceLog) -> None:
    """No container shares the host's network, pid, ipc or uts namespace."""
    _inspected(security_docker_containers, evidence)
    count = 0
    for c in security_docker_containers:
        for kind in c.host_namespaces():
            count += 1
            evidence.expect(f"{c.name} {kind} namespace", "host", equals="its own")
    evidence.expect("host namespaces shared", count, at_most=0, unit="namespaces")


@pytest.mark.monthly
@pytest.mark.security_check("env_secrets")
def test_no_secret_in_env(security_docker_containers: Containers,
                          evidence: EvidenceLog) -> None:
    """No container's ``Env`` holds a plain secret-looking value: secrets belong in a secret
    store or a mounted file (``*_FILE``), where ``docker inspect`` does not show them."""
    _inspected(security_docker_containers, evidence)
    count = 0
    for c in security_docker_containers:
        for entry in c.secret_env:
            count += 1
            # The name and why only: the value was registered as a secret when it was read.
            evidence.expect(f"{c.name} Env {entry.name}", f"a plain value ({entry.why})",
                            equals="no plain secret")
    evidence.expect("secret-looking Env values", count, at_most=0, unit="variables")


@pytest.mark.monthly
@pytest.mark.security_check("root_user")
def test_not_running_as_root(security_docker_containers: Containers,
                             evidence: EvidenceLog) -> None:
    """Containers run as a user of their own, not root (a WARN: many images need work)."""
    _inspected(security_docker_containers, evidence)
    root = [c.name for c in security_docker_containers if c.runs_as_root]
    evidence.within("docker.root_containers", len(root), unit="containers",
                    default=Threshold(warn=0))
    if root:
        evidence.note("running as root", ", ".join(root))


@pytest.mark.monthly
@pytest.mark.security_check("read_only_rootfs")
def test_read_only_root_filesystem(security_docker_containers: Containers,
                                   evidence: EvidenceLog) -> None:
    """Containers run with a read-only root file system (``--read-only``; a WARN)."""
    _inspected(security_docker_containers, evidence)
    writable = [c.name for c in security_docker_containers if not c.read_only_rootfs]
    evidence.within("docker.writable_rootfs_containers", len(writable), unit="containers",
                    default=Threshold(warn=0))
    if writable:
        evidence.note("writable root file system", ", ".join(writable))
