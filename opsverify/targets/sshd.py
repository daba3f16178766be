"""How the security checks read a host's sshd: its effective configuration from ``sshd -T``
where we are root on the host (given the daemon's own ``-f``/``-o`` options), otherwise what
any client is shown: the handshake's KEXINIT and the authentication methods it accepts.

Split from :mod:`opsverify.targets.host`, whose client it reads through (:class:`SshdHost`).
"""

from __future__ import annotations

import contextlib
import getopt
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from opsverify.errors import TargetUnavailable
from opsverify.targets.ssh import OfferUnreadable, ServerOffer, last_line, server_offer

if TYPE_CHECKING:
    from opsverify.targets.host import CommandOutcome, HostTarget


class SshdHost(Protocol):
    """What reading an sshd needs of a host client (``HostClient``)."""

    spec: HostTarget
    timeout_s: float

    def run(self, command: str) -> CommandOutcome: ...

    def auth_methods(self) -> tuple[str, ...] | None: ...

    def unavailable(self, cause: str) -> TargetUnavailable: ...


# How permissive each PermitRootLogin value is (sshd -T says without-password for
# prohibit-password).
ROOT_LOGIN_ORDER = {"no": 0, "forced-commands-only": 1, "prohibit-password": 2,
                    "without-password": 2, "yes": 3}
# sshd's own options (OpenSSH 9): those that take an argument are followed by a colon.
SSHD_OPTIONS = "C:E:b:c:f:g:h:k:o:p:u:46DGQRTdeiqrtV"
# What sshd -T must be given of the daemon's own command line to read what it runs with.
SSHD_CONFIG_OPTIONS = ("-f", "-o", "-h", "-c")
DEFAULT_SSHD_CONFIG = "/etc/ssh/sshd_config"


@dataclass(frozen=True)
class SshdConfig:
    """What the security checks know of the sshd on a host's ``port``.

    With ``sshd -T`` (root on the host) ``settings`` holds its whole effective configuration;
    otherwise ``offer`` is what the server showed in its handshake and ``auth_methods`` what
    it accepts (``None`` when unknown) and ``why_partial`` says why that is all.
    """

    port: int
    found: bool
    source: str  # how it was read: "sshd -T -f /etc/ssh/sshd_config (pid 812)", "handshake…"
    why_not_found: str = ""
    settings: tuple[tuple[str, str], ...] = ()
    offer: ServerOffer | None = None
    auth_methods: tuple[str, ...] | None = None
    why_partial: str = ""
    needs_root: bool = False  # sshd -T would tell, run as root

    def setting(self, key: str) -> str | None:
        """One setting as ``sshd -T`` prints it (lower-case keyword, first value)."""
        key = key.lower()
        return next((v for k, v in self.settings if k == key), None)

    @property
    def ciphers(self) -> tuple[str, ...]:
        if self.settings:
            return tuple(n for n in (self.setting("ciphers") or "").split(",") if n)
        return self.offer.ciphers if self.offer else ()

    @property
    def macs(self) -> tuple[str, ...]:
        if self.settings:
            return tuple(n for n in (self.setting("macs") or "").split(",") if n)
        return self.offer.macs if self.offer else ()


def read(host: SshdHost) -> SshdConfig:
    """The sshd on the target's ``sshd_port``: its effective configuration from
    ``sshd -T``, given the daemon's own ``-f``/``-o`` options, where we are root on the
    host; otherwise what its handshake offers."""
    port = host.spec.sshd_port
    listener = _listener(host, port)
    if not listener.get("listening") and host.spec.kind != "ssh":
        return SshdConfig(port, False, "", why_not_found=f"nothing listens on port {port}")
    pid, comm = listener.get("pid", ""), listener.get("comm", "")
    if pid and comm != "sshd":
        return SshdConfig(port, False, "", why_not_found=f"port {port} is served by "
                          f"{comm or 'an unknown process'} (pid {pid}), not sshd")
    root = listener.get("uid") == "0"
    why = ""
    if root and pid:
        config, command = _sshd_test_command(listener)
        result = host.run(command)
        if result.exit_status == 0:
            settings = tuple(
                (k.lower(), v.strip()) for k, _, v in
                (line.partition(" ") for line in result.stdout.splitlines()) if k)
            return SshdConfig(port, True, f"sshd -T -f {config} (pid {pid})",
                              settings=settings)
        why = f"sshd -T failed: {last_line(result.stderr) or f'exit {result.exit_status}'}"
    elif not root:
        why = "sshd -T needs root on the host"
    else:
        why = f"no listening process found for port {port}"
    return _handshake(host, port, why, needs_root=not root)

def _listener(host: SshdHost, port: int) -> dict[str, str]:
    """Who listens on ``port``: ``ss -ltnp`` (pids only as root), or /proc/net/tcp."""
    script = LISTENER_SCRIPT.format(port=int(port), hex=f"{int(port):04X}")
    result = host.run(script)
    if result.exit_status != 0:
        raise host.unavailable(f"cannot tell what listens on port {port}: "
                                f"{last_line(result.stderr) or f'exit {result.exit_status}'}")
    found: dict[str, str] = {}
    args: list[str] = []
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key == "arg":
            args.append(value)
        elif key in ("uid", "pid", "comm", "exe"):
            found[key] = value.strip()
        elif key == "listening" and value.strip() == "yes":
            found["listening"] = "yes"
    found["args"] = "\0".join(args)
    return found

def _sshd_test_command(listener: dict[str, str]) -> tuple[str, str]:
    """``sshd -T`` with the configuration options the daemon was started with."""
    argv = [a for a in listener.get("args", "").split("\0") if a]
    if len(argv) == 1 and argv[0].startswith("sshd: "):
        # OpenSSH retitles its listener: "sshd: /usr/sbin/sshd -D -f /x [listener] 0 of
        # 10-100 startups", one string (a path with a space in it cannot be told apart).
        argv = re.sub(r"\s+\[listener\].*$", "", argv[0].removeprefix("sshd: ")).split()
    options: list[tuple[str, str]] = []
    # An sshd with options we do not know: its main configuration, as sshd -T reads it.
    with contextlib.suppress(getopt.GetoptError):
        options, _ = getopt.getopt(argv[1:], SSHD_OPTIONS)
    passed = [(flag, value) for flag, value in options if flag in SSHD_CONFIG_OPTIONS]
    config = next((v for f, v in passed if f == "-f"), DEFAULT_SSHD_CONFIG)
    exe = listener.get("exe") or (argv[0] if argv and argv[0].startswith("/") else "sshd")
    words = [exe, "-T"] + ([] if any(f == "-f" for f, _ in passed) else
                           ["-f", DEFAULT_SSHD_CONFIG])
    for flag, value in passed:
        words += [flag, value]
    return config, "LC_ALL=C " + " ".join(shlex.quote(w) for w in words)

def _handshake(host: SshdHost, port: int, why: str, *, needs_root: bool) -> SshdConfig:
    """What the server shows any client: its KEXINIT and, over ssh with its host key
    verified, the authentication methods it accepts."""
    if host.spec.kind == "docker":
        return SshdConfig(port, False, "", why_not_found=(
            f"an sshd listens on port {port} in the container, but {why} and a "
            "docker:// target's container cannot be reached over the network"))
    address = "127.0.0.1" if host.spec.is_local else (urlsplit(host.spec.url).hostname
                                                      or "")
    try:
        offer = server_offer(address, port, host.timeout_s)
    except (OSError, OfferUnreadable) as exc:
        if host.spec.is_local and isinstance(exc, ConnectionRefusedError):
            return SshdConfig(port, False, "", why_not_found=f"nothing listens on port "
                                                             f"{port}")
        cause = "timed out" if isinstance(exc, TimeoutError) else (
            exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
        raise host.unavailable(f"cannot read the SSH handshake of port {port}: "
                                f"{cause}") from None
    methods = None
    if host.spec.kind == "ssh" and port == (urlsplit(host.spec.url).port or 22):
        methods = host.auth_methods()
    return SshdConfig(port, True, f"the handshake with {address}:{port} ({offer.banner})",
                      offer=offer, auth_methods=methods, why_partial=why,
                      needs_root=needs_root)


# Who listens on a TCP port, in one round trip that any POSIX shell and busybox can run:
# ss where it is installed (it names the process only to root), /proc/net/tcp otherwise.
LISTENER_SCRIPT = """\
echo "uid=$(id -u)"
if command -v ss >/dev/null 2>&1; then
  line=$(ss -Hltnp '( sport = :{port} )' 2>/dev/null | head -n 1)
  [ -n "$line" ] && echo listening=yes
  pid=$(printf '%s\\n' "$line" | sed -n 's/.*pid=\\([0-9][0-9]*\\).*/\\1/p')
else
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == "0A" && $2 ~ /:{hex}$/ {{f=1}}
    END {{if (f) print "listening=yes"}}'
  pid=
fi
if [ -n "$pid" ]; then
  echo "pid=$pid"
  echo "comm=$(cat /proc/$pid/comm 2>/dev/null)"
  echo "exe=$(readlink /proc/$pid/exe 2>/dev/null)"
  tr '\\000' '\\n' < /proc/$pid/cmdline 2>/dev/null | sed 's/^/arg=/'
fi
true
"""
