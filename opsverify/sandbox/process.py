"""Starting local servers that cannot outlive the process that started them."""

from __future__ import annotations

import os
import pwd
import random
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Ports handed out are claimed with a file each, across processes (xdist workers, parallel
# runs): a port chosen by one and not yet bound by its server is never handed to another.
# One place for every process, whatever its TMPDIR: /tmp where there is one.
_SHARED_TMP = Path("/tmp")  # noqa: S108 - shared on purpose: a claim holds only a pid
PORT_CLAIMS = (_SHARED_TMP if _SHARED_TMP.is_dir() else Path(tempfile.gettempdir())
               ) / "opsverify-ports"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and that no other running opsverify
    process was handed. Chosen below the kernel's ephemeral range, so that no client
    socket's local port can take it between now and the server's bind."""
    low = _ephemeral_low()
    PORT_CLAIMS.mkdir(exist_ok=True)
    for _ in range(500):
        port = random.randrange(10000, low)
        if _claim(port) and _bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all claimed: the kernel's
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, 12000)


def _claim(port: int) -> bool:
    claim = PORT_CLAIMS / str(port)
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _stale(claim):
                return False
            claim.unlink(missing_ok=True)
            continue
        except OSError:
            return True  # no shared directory to claim in: the bind test alone decides
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def _stale(claim: Path) -> bool:
    """A claim of a process that is gone."""
    try:
        owner = int(claim.read_text() or "0")
    except (OSError, ValueError):
        return True
    if owner == os.getpid():
        return False
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def unprivileged_user() -> str | None:
    """Servers such as PostgreSQL refuse to run as root; run them as ``postgres``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    user: str | None = None,
    on_parent_death: signal.Signals = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start a server in its own session (Ctrl-C reaches us, and we stop it in order).

    util-linux's ``setpriv`` drops to ``user`` and sets the parent-death signal after the
    uid change, so that if we are killed outright the kernel still stops the server.
    """
    wrapper = ["setpriv", f"--pdeathsig={on_parent_death.name}"]
    if user:
        wrapper += [f"--reuid={user}", f"--regid={user}", "--init-groups"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*wrapper, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``ready`` until it holds; fail with the server's last log line otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}{_tail(log)}")
        time.sleep(0.02)
    raise RuntimeError(f"{what} not ready after {timeout_s:g} s{_tail(log)}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace_s: float = 5) -> None:
    """Signal the server's whole session, then kill what is left after ``grace_s``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    # The line that says why (PostgreSQL's FATAL, a traceback's last line), not the last
    # one ("database system is shut down"), when there is one.
    why = [ln for ln in lines if re.search(r"\b(FATAL|PANIC|ERROR|Error)\b", ln)]
    return f": {(why or lines)[-1].strip()}" if lines else ""
