"""A private Docker engine running gogooku3-like containers, all inside the work directory.

dockerd gets its own socket, data root, exec root, containerd namespace and an empty
configuration file, no bridge and no iptables rules; containers have no network at all.
The only image is imported from a root file system made of busybox-static: nothing is
pulled. The containers are secure by default (docker-bench-security §5): not privileged,
no host mounts or namespaces, an unprivileged user, a read-only root file system with a
tmpfs /tmp, no secrets in their environment. Faults break a container the way production
ones break: a failing HEALTHCHECK, a crash loop under a restart policy, an exited process,
a privileged debugging container left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import struct
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import DOCKER_APP as APP
from opsverify.sandbox.faults import DOCKER_DEBUG as DEBUG
from opsverify.sandbox.faults import DOCKER_SCHEDULER as SCHEDULER
from opsverify.sandbox.faults import DOCKER_WORKER as WORKER
from opsverify.sandbox.faults import FAULTS_OF
from opsverify.sandbox.process import spawn, stop, wait_until

if TYPE_CHECKING:  # the docker library loads only when the engine is started
    import docker
    from docker.models.containers import Container
from opsverify.sandbox.spec import DockerComponent

IMAGE = "opsverify/busybox"
TAG = "sandbox"
# nobody: the image has no /etc/passwd, so the ids, not a name.
USER = "65534:65534"
STATE_DIR = "/var/lib/gogooku3"  # the scheduler's state: a volume, kept across its restarts
# PID 1 ignores signals it has no handler for: trap TERM so `docker stop` is immediate.
IDLE = 'trap "exit 0" TERM; while :; do sleep 1 & wait $!; done'
HEALTH_FILE = "/tmp/healthy"  # noqa: S108 - a path inside the container
CRASH_FILE = f"{STATE_DIR}/crash"
CRASHES_WHEN_TOLD = (
    f'trap "exit 0" TERM; while :; do [ -e {CRASH_FILE} ] && {{ echo "scheduler: fatal: '
    f'bad configuration" >&2; exit 3; }}; sleep 1 & wait $!; done')
HEALTH_SCRIPT = f"""#!/bin/sh
# The app's health probe: healthy while its readiness file exists.
if [ -f {HEALTH_FILE} ]; then echo "ok: {HEALTH_FILE} present"; exit 0; fi
echo "health probe failed: {HEALTH_FILE} is missing (the app is not ready)"
exit 1
"""
UNHEALTHY_STREAK = 3  # failed probes the container-unhealthy fault waits for
CRASH_LOOPS = 4  # restarts the crash-loop fault waits for: past any sandbox threshold
NS = 1_000_000_000
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; containerd adds its own names below exec


class DockerEngine:
    """dockerd, the image, three containers; everything removed again by ``stop``."""

    name: ClassVar[str] = "docker"
    install_hint: ClassVar[str] = "apt-get install docker.io busybox-static"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["docker"]

    def __init__(self, spec: DockerComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.root = ctx.workdir / "docker"
        self.socket = self.root / "docker.sock"
        self.log = ctx.workdir / "docker.log"
        # No TCP port: the Engine API is served on a unix socket only (a TCP listener without
        # TLS would hand root on this machine to every local user).
        self.port = 0
        # Its own containerd namespace, in case dockerd joins a system containerd.
        self.namespace = f"opsverify-{secrets.token_hex(4)}"
        self.process: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_DOCKER_URL": self.url}

    # -- start ------------------------------------------------------------------------
    def prepare(self) -> None:
        if shutil.which("dockerd") is None:
            raise FileNotFoundError("dockerd not found (apt-get install docker.io)")
        if os.geteuid() != 0:
            # Skipped like a missing binary: a rootful engine is what this machine lacks.
            raise FileNotFoundError("a private dockerd needs root; run the suite as root "
                                    "(rootless Docker is not supported by the sandbox)")
        busybox = static_busybox()
        if busybox is None:
            raise FileNotFoundError("a statically linked busybox not found "
                                    "(apt-get install busybox-static)")
        longest = self.root / "exec" / "containerd" / "containerd-debug.sock"
        if len(str(longest)) > SOCKET_PATH_MAX:
            raise RuntimeError(f"work directory {self.root.parent} is too long for the engine's "
                               "unix sockets; choose a shorter OPSVERIFY_SANDBOX_DIR")
        self.root.mkdir(mode=0o700)
        (self.root / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json
        (self.root / "rootfs.tar").write_bytes(rootfs_tar(busybox))

    def launch(self) -> None:
        dockerd = shutil.which("dockerd")
        assert dockerd is not None
        self.process = spawn(
            [dockerd, "--host", self.url, "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"),
             "--config-file", str(self.root / "daemon.json"),
             "--containerd-namespace", self.namespace,
             "--containerd-plugins-namespace", f"{self.namespace}-plugins",
             # vfs works wherever the work directory is (overlay2 fails on some container
             # file systems); the image is 2 MB, so copying it per container costs nothing.
             "--storage-driver", "vfs",
             "--bridge", "none", "--iptables=false", "--ip6tables=false",
             "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false",
             "--shutdown-timeout", "2", "--log-level", "warn"],
            log=self.log,
        )

    def ready(self) -> None:
        wait_until(self._answers, timeout_s=30, what="dockerd", process=self.process,
                   log=self.log)
        client = self.client()
        client.api.import_image_from_data(
            (self.root / "rootfs.tar").read_bytes(), repository=IMAGE, tag=TAG,
            changes=['CMD ["/bin/sh"]'])
        healthcheck = {"test": ["CMD", "/usr/local/bin/healthcheck"], "interval": NS,
                       "timeout": NS, "retries": 1, "start_period": 0}
        runs: list[tuple[str, str, str, dict[str, Any]]] = [
            (APP, f"touch {HEALTH_FILE}; {IDLE}", "unless-stopped", {"healthcheck": healthcheck}),
            (WORKER, IDLE, "unless-stopped", {}),
            (SCHEDULER, CRASHES_WHEN_TOLD, "always",
             {"volumes": {f"{SCHEDULER}-state": {"bind": STATE_DIR, "mode": "rw"}}}),
        ]
        # The engine does the work; creating them side by side saves a second.
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            for future in [pool.submit(self._run, name, command=command, restart=restart,
                                       **options) for name, command, restart, options in runs]:
                future.result()
        self._wait(APP, lambda c: _health(c) == "healthy", "healthy")
        for name in (WORKER, SCHEDULER):
            self._wait(name, lambda c: c.status == "running", "running")

    # -- faults -----------------------------------------------------------------------
    def inject(self, faults: frozenset[str]) -> None:
        client = self.client()
        if "container-privileged" in faults:
            # As secure as the others but for --privileged: only that check may catch it.
            self._run(DEBUG, command=IDLE, restart="no", privileged=True)
            self._wait(DEBUG, lambda c: c.status == "running", "running")
        if "container-unhealthy" in faults:
            client.containers.get(APP).exec_run(["rm", "-f", HEALTH_FILE])
            # Unhealthy for a while (the sandbox restarts containers unhealthy over 1 s):
            # a probe a second, the first failure turned it.
            self._wait(APP, lambda c: _health(c) == "unhealthy"
                       and _failing_streak(c) >= UNHEALTHY_STREAK,
                       f"unhealthy for {UNHEALTHY_STREAK} probes")
        if "container-stopped" in faults:
            client.containers.get(WORKER).stop(timeout=2)
            self._wait(WORKER, lambda c: c.status == "exited", "exited")
        if "container-restarting" in faults:
            # It exits within a second, and at every start after that: a crash loop.
            client.containers.get(SCHEDULER).exec_run(["touch", CRASH_FILE])
            self._wait(SCHEDULER,
                       lambda c: int(c.attrs.get("RestartCount") or 0) >= CRASH_LOOPS,
                       f"restarted {CRASH_LOOPS} times")

    # -- stop -------------------------------------------------------------------------
    def stop(self) -> None:
        from docker.errors import DockerException

        if self._client is not None:
            try:
                for container in self._client.containers.list(all=True):
                    container.remove(force=True)
            except DockerException:
                pass  # the engine is gone already; what is left is reaped below
            self._client.close()
            self._client = None
        if self.process is not None:
            stop(self.process, signal.SIGTERM, grace_s=15)
        # Shims outlive dockerd by design; nothing of ours may outlive the sandbox.
        for pid in processes_under(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        unmount_under(self.root)

    # -- internals --------------------------------------------------------------------
    def client(self) -> docker.DockerClient:
        """The sandbox's own, write-capable client (checks never get this one)."""
        import docker

        if self._client is None:
            self._client = docker.DockerClient(base_url=self.url, version="auto", timeout=30)
        return self._client

    def _answers(self) -> bool:
        import docker
        from docker.errors import DockerException

        if not self.socket.exists():
            return False
        try:
            return bool(docker.APIClient(base_url=self.url, version="auto", timeout=2).ping())
        except DockerException:
            return False

    def _run(self, name: str, *, command: str, restart: str, **options: Any) -> None:
        self.client().containers.run(
            f"{IMAGE}:{TAG}", ["/bin/sh", "-c", command], name=name, detach=True,
            network_mode="none", labels={"com.docker.compose.project": "gogooku3"},
            restart_policy={"Name": restart}, user=USER, read_only=True,
            tmpfs={"/tmp": "mode=1777"}, **options)  # noqa: S108 - in the container

    def _wait(self, name: str, reached: Any, what: str) -> None:
        container = self.client().containers.get(name)

        def check() -> bool:
            container.reload()
            return bool(reached(container))

        wait_until(check, timeout_s=30, what=f"sandbox container {name} {what}", log=self.log)


def _health(container: Container) -> str | None:
    health = container.attrs.get("State", {}).get("Health")
    return None if health is None else str(health.get("Status"))


def _failing_streak(container: Container) -> int:
    return int((container.attrs.get("State", {}).get("Health") or {}).get("FailingStreak") or 0)


def static_busybox() -> Path | None:
    """busybox-static's binary (a dynamically linked busybox cannot run in an empty image)."""
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and Path(candidate).is_file() and not _has_interpreter(Path(candidate)):
            return Path(candidate).resolve()
    return None


def _has_interpreter(binary: Path) -> bool:
    """Whether an ELF64 file asks for a dynamic loader (a PT_INTERP program header)."""
    with binary.open("rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:
            return True  # not something we know how to run in the image
        phoff, = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return any(struct.unpack_from("<I", table, i * phentsize)[0] == 3 for i in range(phnum))


def rootfs_tar(busybox: Path) -> bytes:
    """``busybox --install -s`` into an empty root, as a tar for ``docker import``."""
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                             check=True, timeout=10).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("tmp", 0o1777), ("etc", 0o755),
                                ("usr", 0o755), ("usr/local", 0o755), ("usr/local/bin", 0o755),
                                ("var", 0o755), ("var/lib", 0o755)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        # The scheduler's state directory, its user's: a new volume takes the ownership.
        state = tarfile.TarInfo(STATE_DIR.lstrip("/"))
        state.type, state.mode = tarfile.DIRTYPE, 0o755
        state.uid, state.gid = (int(i) for i in USER.split(":"))
        tar.addfile(state)
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        script = HEALTH_SCRIPT.encode()
        info = tarfile.TarInfo("usr/local/bin/healthcheck")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    return buffer.getvalue()


def processes_under(root: Path) -> list[int]:
    """PIDs of processes whose command line names ``root`` (containerd and its shims)."""
    needle = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def unmount_under(root: Path) -> None:
    """Lazily unmount what the engine left mounted below ``root``, deepest first."""
    prefix = str(root)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[4].replace("\\040", " ") for line in lines if len(line.split()) > 4]
    for point in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")},
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=10, check=False)
