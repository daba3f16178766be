"""The ssh side of host targets: our own ``ssh_config``, the master connection, file copies.

Only :class:`~opsverify.targets.host.HostClient` builds these; nothing else reaches
testinfra's SSH backend (its ``_build_ssh_command`` is private and used here alone).
Host keys are verified (``StrictHostKeyChecking yes`` against ``known_hosts``; an unknown or
changed key is an ERROR, never accepted); ssh's own failures become one readable line.

For the security checks, what any client can see of a server without logging in: the
algorithms its key exchange offers (:func:`server_offer`, the first packet it sends) and the
authentication methods it accepts (:meth:`SshSession.auth_methods`, an authentication with
the ``none`` method, which fails and names the others).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from testinfra.backend.ssh import SshBackend

from opsverify.errors import OpsverifyError, TargetUnavailable

SSH_MSG_KEXINIT = 20
MAX_PREAMBLE = 8192  # RFC 4253 §4.2: lines before the banner, each at most 255 bytes
MAX_PACKET = 35000  # RFC 4253 §6.1
CONTROL_PERSIST_S = 30  # an ssh master we lost track of (the run was killed) ends by itself

FetchFailure = Literal["ssh", "timeout", "failed"]


class FetchFailed(TargetUnavailable):
    """A copy from the host did not complete. ``cause`` says why for an operator; ``kind``
    (ssh could not connect, the deadline passed, the copy failed) and ``detail`` (the
    copy's own last error line) let a caller say it in its own terms."""

    def __init__(self, target: str, address: str, cause: str, *, kind: FetchFailure,
                 detail: str = "") -> None:
        super().__init__(target, address, cause)
        self.kind = kind
        self.detail = detail


class FetchTooLarge(OpsverifyError):
    """The file holds more than ``max_bytes``: what reached ``dest`` is cut short."""

    def __init__(self, path: str, max_bytes: int) -> None:
        super().__init__(f"{path} holds more than {max_bytes} bytes")
        self.path = path
        self.max_bytes = max_bytes


class BoundedSshBackend(SshBackend):  # type: ignore[misc]  # testinfra is untyped
    """testinfra's OpenSSH backend; commands also run under ``timeout`` on the host.

    ``host.py`` puts its whole-operation deadline (``run_local``) in front of this class.
    """

    NAME = "ssh"
    target = ""
    where = ""
    remote_timeout_s = 1

    def get_command(self, command: str, *args: str) -> str:
        inner = super().get_command(command, *args)
        return f"timeout -k 1 {self.remote_timeout_s} sh -c {shlex.quote(inner)}"

    def run_ssh(self, command: str) -> Any:
        cmd, cmd_args = self._build_ssh_command(command)
        out = self.run_local(" ".join(cmd), *cmd_args)
        if out.rc == 255 and _ssh_failed(out.stderr):
            raise TargetUnavailable(self.target, self.where, ssh_cause(out.stderr, self))
        return out


class SshSession:
    """One host client's ssh: a control directory holding our ``ssh_config``, the master
    connection every later command multiplexes over, and file copies through it."""

    def __init__(self, name: str, where: str, url: str, *, identity_file: str | None,
                 known_hosts: str | None, timeout_s: float,
                 backend_class: type[BoundedSshBackend]) -> None:
        self.name = name
        self.where = where
        self.identity_file = identity_file
        self.known_hosts = known_hosts
        self.timeout_s = timeout_s
        self.connect_timeout_s = max(1, math.ceil(timeout_s))
        self.env = environment_snapshot()  # of every ssh we start (see there)
        self.master: subprocess.Popen[bytes] | None = None
        # The control socket's path must fit a sockaddr_un (about 100 bytes).
        base = tempfile.gettempdir() if len(tempfile.gettempdir()) <= 40 else "/tmp"  # noqa: S108
        self.control_dir: Path | None = Path(tempfile.mkdtemp(prefix="opsverify-ssh-", dir=base))
        parts = urlsplit(url)
        user = f"{parts.username}@" if parts.username else ""
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        self.backend = backend_class(
            f"{user}{host}:{parts.port or 22}",
            ssh_config=str(self._write_config()),
            ssh_identity_file=identity_file,
            timeout=self.connect_timeout_s,
            controlpersist=0,  # the master is ours: started in open_master(), ended in close()
        )
        self.backend.remote_timeout_s = self.connect_timeout_s

    def check_local_files(self) -> None:
        for key, path in (("ssh_identity_file", self.identity_file),
                          ("known_hosts", self.known_hosts)):
            if path and not os.access(path, os.R_OK):
                raise self._unavailable(f"{key} {path} is not a readable file")

    def open_master(self) -> None:
        """One authenticated, verified connection that later commands multiplex over."""
        assert self.control_dir is not None
        cmd, cmd_args = self.backend._build_ssh_command("true")
        # testinfra's line ends with "<host> <command>": a master runs no command (-N).
        line = self.backend.quote(" ".join(cmd[:-1]), *cmd_args[:-2])
        parts = [*shlex.split(line), "-N", "-o", "ControlMaster=yes",
                 "-o", "ControlPersist=no", cmd_args[-2]]
        wrapper = ["setpriv", "--pdeathsig=SIGTERM"] if shutil.which("setpriv") else []
        log = self.control_dir / "master.log"
        with log.open("wb") as err:
            self.master = subprocess.Popen(
                [*wrapper, *parts], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True, env=self.env)
        control = self.control_dir
        deadline = time.monotonic() + self.connect_timeout_s + self.timeout_s
        while time.monotonic() < deadline:
            if self.master.poll() is not None:
                stderr = log.read_text(errors="replace")
                self.master = None
                raise self._unavailable(ssh_cause(stderr, self.backend))
            if any(p.is_socket() for p in control.iterdir()):  # the master is listening
                return
            time.sleep(0.01)
        self.close()
        raise self._unavailable(f"no SSH session within {self.connect_timeout_s} s "
                                "(the server accepted the connection but did not complete "
                                "the handshake)")

    def fetch(self, path: str, dest: Path, max_bytes: int, timeout_s: float) -> None:
        """``head -c`` streamed through the verified connection into ``dest``; killed
        locally at the deadline, and by ``timeout`` on the host."""
        limit = max(1, math.ceil(timeout_s))
        remote = f"timeout -k 1 {limit} head -c {int(max_bytes) + 1} -- {shlex.quote(path)}"
        # testinfra's own ssh command line: our ssh_config, identity, known_hosts, master.
        cmd, cmd_args = self.backend._build_ssh_command(remote)
        line = self.backend.quote(" ".join(cmd), *cmd_args)
        late = f"copying {path} took more than {timeout_s:g} s"
        with dest.open("wb") as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(line, shell=True, stdin=subprocess.DEVNULL,  # noqa: S602 - quoted by testinfra
                                    stdout=out, stderr=err, start_new_session=True,
                                    env=self.env)
            try:
                proc.wait(timeout=timeout_s + 2)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                raise FetchFailed(self.name, self.where, late, kind="timeout") from None
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if proc.returncode == 255:
            raise FetchFailed(self.name, self.where, ssh_cause(stderr, self.backend), kind="ssh")
        if proc.returncode in (124, 137):
            raise FetchFailed(self.name, self.where, late, kind="timeout")
        if proc.returncode != 0:
            detail = last_line(stderr)
            raise FetchFailed(self.name, self.where, f"cannot copy {path}: {detail}",
                              kind="failed", detail=detail)
        if dest.stat().st_size > max_bytes:
            raise FetchTooLarge(path, max_bytes)

    def auth_methods(self, timeout_s: float) -> tuple[str, ...] | None:
        """The authentication methods the server offers, as a login with the ``none`` method
        learns them (it fails, and the server names the methods that can continue), on a
        connection of its own, with the host key verified; ``None`` when ssh says nothing
        about them. Nothing is authenticated: no key or password is offered."""
        cmd, cmd_args = self.backend._build_ssh_command("true")
        line = self.backend.quote(" ".join(cmd[:-1]), *cmd_args[:-2])
        parts = [*shlex.split(line), "-o", "ControlPath=none", "-o", "ControlMaster=no",
                 "-o", "PreferredAuthentications=none", cmd_args[-2], "true"]
        try:
            proc = subprocess.run(parts, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=self.connect_timeout_s + timeout_s,
                                  env=self.env, check=False)
        except subprocess.TimeoutExpired:
            raise self._unavailable("no answer to an authentication with the none method "
                                    f"within {self.connect_timeout_s + timeout_s:g} s") from None
        if proc.returncode == 0:
            return ("none",)  # the server let us in without authenticating at all
        match = re.search(r"Permission denied \(([^)]*)\)", proc.stderr)
        if match:
            return tuple(m for m in match.group(1).split(",") if m)
        if _ssh_failed(proc.stderr):
            raise self._unavailable(ssh_cause(proc.stderr, self.backend))
        return None

    def close(self) -> None:
        if self.master is not None:
            kill_group(self.master, signal.SIGTERM)
            self.master = None
        if self.control_dir is not None:
            shutil.rmtree(self.control_dir, ignore_errors=True)
            self.control_dir = None

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.where, cause)

    def _write_config(self) -> Path:
        """Every option we rely on, in a file of our own: ``~/.ssh/config`` and
        ``/etc/ssh/ssh_config`` are not read, so nothing there can weaken verification."""
        assert self.control_dir is not None
        lines = [
            "Host *",
            "  BatchMode yes",  # never prompt: no password, no 'accept this key?'
            "  StrictHostKeyChecking yes",
            "  UpdateHostKeys no",
            "  PasswordAuthentication no",
            "  KbdInteractiveAuthentication no",
            f"  ConnectTimeout {self.connect_timeout_s}",
            f"  ServerAliveInterval {self.connect_timeout_s}",
            "  ServerAliveCountMax 2",
            "  ControlMaster no",
            f'  ControlPath "{self.control_dir}/%C"',
            "  ForwardAgent no",
            "  ForwardX11 no",
            "  ClearAllForwardings yes",
            "  RequestTTY no",
            "  LogLevel ERROR",
        ]
        if self.known_hosts:
            lines += [f'  UserKnownHostsFile "{self.known_hosts}"',
                      "  GlobalKnownHostsFile /dev/null"]
        if self.identity_file:
            lines.append("  IdentitiesOnly yes")
        path = self.control_dir / "ssh_config"
        path.write_text("\n".join(lines) + "\n")
        return path


# -- what a server offers before anyone logs in ---------------------------------------------
@dataclass(frozen=True)
class ServerOffer:
    """A server's banner and the algorithms of its first key-exchange packet (KEXINIT)."""

    banner: str
    kex: tuple[str, ...]
    host_keys: tuple[str, ...]
    ciphers: tuple[str, ...]  # client-to-server, then any only offered server-to-client
    macs: tuple[str, ...]


class OfferUnreadable(OpsverifyError):
    """The server did not send an SSH banner and KEXINIT packet that could be read."""


def server_offer(host: str, port: int, timeout_s: float) -> ServerOffer:
    """Connect, exchange banners and read the server's KEXINIT, then hang up: what
    ssh-audit reads, without a key exchange or any authentication. The whole exchange is
    bounded by ``timeout_s``. Raises ``OSError`` (refused, timed out) or
    :class:`OfferUnreadable`."""
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(b"SSH-2.0-opsverify_security_check\r\n")
        buffer = b""

        def need(size: int) -> bytes:
            nonlocal buffer
            while len(buffer) < size:
                remaining = deadline - time.monotonic()
                late = TimeoutError(f"no KEXINIT within {timeout_s:g} s")
                if remaining <= 0:
                    raise late
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    raise late from None
                if not chunk:
                    raise OfferUnreadable("the server closed the connection before its "
                                          "key exchange")
                buffer += chunk
            taken, buffer = buffer[:size], buffer[size:]
            return taken

        banner = ""
        while not banner:
            line = b""
            while not line.endswith(b"\n"):
                line += need(1)
                if len(line) > MAX_PREAMBLE:
                    raise OfferUnreadable("no SSH banner (the port does not speak SSH)")
            if line.startswith(b"SSH-"):
                banner = line.decode("ascii", "replace").strip()
        if not banner.startswith(("SSH-2.0-", "SSH-1.99-")):
            raise OfferUnreadable(f"not an SSH 2 server: {banner[:60]!r}")
        length, padding = struct.unpack(">IB", need(5))
        if not 12 <= length <= MAX_PACKET or padding >= length:
            raise OfferUnreadable(f"a first packet of {length} bytes is not a KEXINIT")
        payload = need(length - 1)[: length - 1 - padding]
    return _parse_kexinit(banner, payload)


def _parse_kexinit(banner: str, payload: bytes) -> ServerOffer:
    """RFC 4253 §7.1: the message number, a 16-byte cookie, then ten name-lists."""
    if not payload or payload[0] != SSH_MSG_KEXINIT:
        raise OfferUnreadable(f"the first packet is message {payload[:1].hex()}, not KEXINIT")
    offset = 17
    lists: list[tuple[str, ...]] = []
    for _ in range(6):  # kex, host keys, ciphers c2s/s2c, MACs c2s/s2c
        if offset + 4 > len(payload):
            raise OfferUnreadable("a KEXINIT cut short")
        (size,) = struct.unpack_from(">I", payload, offset)
        text = payload[offset + 4: offset + 4 + size]
        if len(text) != size:
            raise OfferUnreadable("a KEXINIT cut short")
        lists.append(tuple(n for n in text.decode("ascii", "replace").split(",") if n))
        offset += 4 + size
    kex, host_keys, c2s, s2c, mac_c2s, mac_s2c = lists
    return ServerOffer(banner, kex, host_keys, _union(c2s, s2c), _union(mac_c2s, mac_s2c))


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(n for n in second if n not in first)


# -- ssh's messages, in one line ---------------------------------------------------------
_SSH_ERRORS = (
    "Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "Permission denied", "Connection refused", "timed out", "Could not resolve hostname",
    "Connection closed", "Connection reset", "kex_exchange_identification", "No route to host",
    "Network is unreachable", "Bad configuration option", "Too many authentication failures",
    "ssh: connect to host", "Could not open", "not accessible", "banner exchange",
)


def _ssh_failed(stderr: str) -> bool:
    """Exit status 255 is ssh's own failure only if ssh said so (a command may exit 255)."""
    return stderr.startswith("ssh: ") or any(marker in stderr for marker in _SSH_ERRORS)


def ssh_cause(stderr: str, backend: Any = None) -> str:
    """What went wrong with ssh, said for an operator, from ssh's own stderr."""
    timeout = getattr(backend, "timeout", None)
    known = re.search(r"Add correct host key in (\S+)", stderr)
    offered = re.search(r"The fingerprint for the (\S+) key sent by the remote host is\s*"
                        r"\n?\s*(\S+?)\.?\s*$", stderr, re.M)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        what = f" ({offered.group(1)} {offered.group(2)})" if offered else ""
        where = f" in {known.group(1)}" if known else ""
        return (f"host key verification failed: the server's key{what} does not match the "
                f"one recorded{where}; not connecting (man-in-the-middle, or the host was "
                "rebuilt: verify the new key out of band, then update known_hosts)")
    if "host key is known" in stderr or "Host key verification failed" in stderr:
        return ("host key verification failed: no key for this host in known_hosts "
                "(StrictHostKeyChecking=yes; add the verified key, never accept it blindly)")
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        match = re.search(r"Permission denied \(([^)]*)\)", stderr)
        return "authentication failed" + (f" (server accepts: {match.group(1)})" if match else
                                          "") + "; check ssh_identity_file and the user"
    if "Connection refused" in stderr:
        return "connection refused"
    if "banner exchange" in stderr:
        return f"no SSH banner within {timeout} s (the port accepts but does not speak SSH)"
    if "timed out" in stderr:
        return f"connect timed out after {timeout} s"
    if "Could not resolve hostname" in stderr:
        return "cannot resolve the host name"
    if "Connection closed" in stderr or "Connection reset" in stderr or (
            "kex_exchange_identification" in stderr):
        return "the server closed the connection during the SSH handshake"
    return last_line(stderr) or "ssh failed without saying why (exit status 255)"


# -- helpers, shared with host.py ---------------------------------------------------------
def environment_snapshot() -> dict[str, str]:
    """This process's environment, copied for the commands a client starts.

    Copied once, when the client is made, and passed to every command: commands start on
    probe threads while pytest rewrites ``os.environ`` on the main thread
    (``PYTEST_CURRENT_TEST``, at every phase of every check), and a child started with
    ``env=None`` reads the C ``environ`` while it is rewritten (``execve`` then fails with
    EFAULT, "Bad address"); the client is made on the main thread, between those rewrites.
    """
    return dict(os.environ)


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """End a process started with ``start_new_session=True``, its children too."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ValueError:  # no pipes to drain
        proc.wait()


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
