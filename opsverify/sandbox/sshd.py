"""Debian's sshd on 127.0.0.1, with a host key that is verified, and a tiny service to check.

The host key and a client key are generated fresh for every sandbox; the host key's public
half goes into a ``known_hosts`` file of the work directory, so the ``host`` target's ssh
checks verify the server for real (``StrictHostKeyChecking yes``), never trusting on first
use. The server accepts that client key only (no passwords), for the user running the suite,
with modern algorithms only (no CBC cipher, no SHA-1 MAC) and no root login — but by key,
when the suite runs as root: its own ssh checks log in as that user.

Beside it runs ``forecast-worker``: ``sleep`` under that name, a stand-in for the runbook's
long-running worker, so that the host checks have a service and a process to find, and the
``service-stopped`` fault has something to stop.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path
from typing import ClassVar

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import FAULTS_OF
from opsverify.sandbox.faults import SSHD_WORKER as WORKER
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.sandbox.spec import SshdComponent

# sshd's compiled-in privilege separation directory; Debian's ssh.service creates it at boot.
PRIVSEP_DIR = Path("/run/sshd")


class SshServer:
    name: ClassVar[str] = "sshd"
    install_hint: ClassVar[str] = "apt-get install openssh-server openssh-client"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["sshd"]

    def __init__(self, spec: SshdComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.port = free_port()
        self.dir = ctx.workdir / "sshd"
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self.config = self.dir / "sshd_config"
        self.worker_path = self.dir / "bin" / WORKER
        self.log = ctx.workdir / "sshd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def variables(self) -> dict[str, str]:
        out = {
            "SANDBOX_SSH_URL": self.url,
            "SANDBOX_SSH_PORT": str(self.port),
            "SANDBOX_SSH_KEY": str(self.client_key),
            "SANDBOX_SSH_KNOWN_HOSTS": str(self.known_hosts),
            "SANDBOX_SSH_HOST_KEY": str(self.host_key),
            "SANDBOX_SSHD_CONFIG": str(self.config),
            # The worker's path tells this sandbox's worker from another sandbox's.
            "SANDBOX_WORKER": str(self.worker_path),
        }
        return out

    # -- start ------------------------------------------------------------------------
    def prepare(self) -> None:
        sshd = _sshd()
        for tool in ("ssh-keygen", "ssh", "sleep"):
            if shutil.which(tool) is None:
                raise FileNotFoundError(f"{tool} not found ({self.install_hint})")
        if sshd is None:
            raise FileNotFoundError(f"sshd not found ({self.install_hint})")
        self.dir.mkdir(mode=0o700)
        _keygen(self.host_key, "opsverify-sandbox-host")
        _keygen(self.client_key, "opsverify-sandbox-client")
        # `restrict`: commands only, no pty, no forwarding of any kind.
        (self.dir / "authorized_keys").write_text(
            "restrict " + (self.dir / "id_ed25519.pub").read_text())
        self.write_known_hosts(self.host_key)
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755)
        self.write_config(self.root_login)
        (self.dir / "bin").mkdir()
        sleep = shutil.which("sleep")
        assert sleep is not None
        self.worker_path.symlink_to(sleep)
        check = subprocess.run([str(sshd), "-t", "-f", str(self.config)],
                               capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t: {check.stderr.strip()}")

    def launch(self) -> None:
        sshd = _sshd()
        assert sshd is not None
        # -D: foreground, so the sandbox owns it; -e: its log goes to sshd.log.
        self.process = spawn([str(sshd), "-D", "-e", "-f", str(self.config)], log=self.log)
        self.worker = spawn([str(self.worker_path), "infinity"],
                            log=self.ctx.workdir / f"{WORKER}.log")

    def ready(self) -> None:
        wait_until(lambda: port_open(self.port), timeout_s=15, what="sshd",
                   process=self.process, log=self.log)
        if self.worker is not None and self.worker.poll() is not None:
            raise RuntimeError(f"{WORKER} exited with code {self.worker.returncode}")

    # -- faults -----------------------------------------------------------------------
    def inject(self, faults: frozenset[str]) -> None:
        if "service-stopped" in faults and self.worker is not None:
            stop(self.worker)
        if "ssh-hostkey-changed" in faults:
            impostor = self.dir / "other_host_key"
            _keygen(impostor, "not-the-sandbox-host")
            self.write_known_hosts(impostor)
        if "ssh-root-login" in faults:
            self.write_config("yes")
            self.reload()

    @property
    def root_login(self) -> str:
        """The least PermitRootLogin that lets the suite's own user in."""
        return "prohibit-password" if self.user == "root" else "no"

    def write_config(self, root_login: str) -> None:
        self.config.write_text(CONFIG.format(port=self.port, host_key=self.host_key,
                                             dir=self.dir, user=self.user,
                                             root_login=root_login))

    def reload(self) -> None:
        """SIGHUP, as ``systemctl reload ssh`` does: sshd re-executes itself, reads its
        configuration again and listens anew (the log says so)."""
        assert self.process is not None
        listening = self.log.read_text(errors="replace").count("Server listening on")
        self.process.send_signal(signal.SIGHUP)
        wait_until(lambda: self.log.read_text(errors="replace").count("Server listening on")
                   > listening and port_open(self.port), timeout_s=15, what="sshd reloaded",
                   process=self.process, log=self.log)

    def write_known_hosts(self, key: Path) -> None:
        """Record ``key`` as this server's host key."""
        kind, blob = key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {kind} {blob}\n")

    # -- stop -------------------------------------------------------------------------
    def stop(self) -> None:
        if self.process is not None:
            # Each connection's sshd is a session leader of its own: end them too.
            sessions = _children(self.process.pid)
            stop(self.process)
            for pid in sessions:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        if self.worker is not None:
            stop(self.worker)


CONFIG = """\
# opsverify sandbox sshd: loopback only, one key, one user, no passwords.
ListenAddress 127.0.0.1:{port}
HostKey {host_key}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
AllowUsers {user}
# No root login: by key only where the suite itself runs as root and logs in as root.
PermitRootLogin {root_login}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The work directory lives under /tmp, which is world-writable: StrictModes would refuse
# the authorized_keys file for that alone.
StrictModes no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
PermitUserEnvironment no
PrintMotd no
UseDNS no
MaxSessions 32
LogLevel INFO
# Modern algorithms only (dev-sec ssh-baseline): AEAD or CTR ciphers, SHA-2 and UMAC-128
# encrypt-then-MAC, curve25519 and its post-quantum hybrid.
Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr
MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com
KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org
"""


def _sshd() -> Path | None:
    # sshd must be started by its absolute path (it re-executes itself).
    found = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/usr/local/sbin")
    return Path(found) if found else None


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment,
                    "-f", str(path)], check=True, capture_output=True, timeout=30)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found
