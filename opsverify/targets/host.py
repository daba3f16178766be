"""Host targets: the ``host`` section and a read-only client built on testinfra's backends.

``url: local`` reads the machine the suite runs on; ``url: ssh://user@host:port`` reads a
remote one through OpenSSH, with host-key verification on (``StrictHostKeyChecking yes``
against ``known_hosts``; an unknown or changed key is an ERROR, never accepted; the ssh
machinery is in :mod:`opsverify.targets.ssh`); ``url: docker://[user@]container`` reads a
running container through ``docker exec`` (testinfra's docker backend), on the engine named
by ``docker_host`` (given to the docker CLI in its own environment only). Every
command carries two deadlines: the whole operation is killed locally, and the remote side
runs under ``timeout`` so nothing is left running there.

The client only inspects (``stat``, ``ss``, ``ps``, ``df``, ``du``, ``/proc/meminfo``, the init
system's status; for the security checks ``sshd -T``, ``find -perm``, and what the host's
sshd offers before anyone logs in). Declared
``command_checks`` run as written: they are the runbook's own read commands and must not
change the host; opsverify cannot tell a read from a write in a shell command.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import testinfra.host
from pydantic import Field, field_validator, model_validator

from opsverify.errors import TargetUnavailable
from opsverify.remediation.host import HostRemediation
from opsverify.targets import host_backends as backends
from opsverify.targets import sshd
from opsverify.targets.base import TargetSpec
from opsverify.targets.host_capacity import (
    DeclaredPath,
    DiskUsage,
    MemoryUsage,
    parse_df,
    parse_meminfo,
    unique_labels,
)

# What the section declares and what reading returns (opsverify/targets/host_model.py),
# re-exported: checks and tests import them from here.
from opsverify.targets.host_model import MAX_WORLD_WRITABLE as MAX_WORLD_WRITABLE
from opsverify.targets.host_model import CommandCheck as CommandCheck
from opsverify.targets.host_model import CommandOutcome as CommandOutcome
from opsverify.targets.host_model import FileCheck as FileCheck
from opsverify.targets.host_model import FileState as FileState
from opsverify.targets.host_model import HostSecurity as HostSecurity
from opsverify.targets.host_model import PortCheck as PortCheck
from opsverify.targets.host_model import ProcessCheck as ProcessCheck
from opsverify.targets.host_model import ProcessInfo as ProcessInfo
from opsverify.targets.host_model import RootLogin as RootLogin
from opsverify.targets.host_model import ServiceCheck as ServiceCheck
from opsverify.targets.host_model import ServiceState as ServiceState
from opsverify.targets.host_model import WorldWritable as WorldWritable

# Re-exported: what HostClient.fetch raises, for its callers.
from opsverify.targets.ssh import FetchFailed as FetchFailed
from opsverify.targets.ssh import FetchTooLarge as FetchTooLarge
from opsverify.targets.ssh import (
    SshSession,
    environment_snapshot,
    last_line,
)
from opsverify.targets.sshd import ROOT_LOGIN_ORDER as ROOT_LOGIN_ORDER
from opsverify.targets.sshd import SshdConfig as SshdConfig

# Our own probe, as it shows in ``ps`` while it runs: never a match for a declared process.
PS_PROBE = "ps -Aww -o"
BUSYBOX_PS = "ps -o pid,user,comm,args"
FETCH_CHUNK = 1024 * 1024
# What `docker exec` accepts as a container name (and testinfra's optional user@).
CONTAINER = re.compile(r"^(?:[A-Za-z0-9_.-]+@)?[A-Za-z0-9][A-Za-z0-9_.-]*$")
DOCKER_HOST_SCHEMES = ("unix", "tcp", "ssh", "fd", "npipe")


class HostTarget(TargetSpec):
    type: Literal["host"]
    url: str  # "local", ssh://user@host[:port] or docker://[user@]container
    ssh_identity_file: str | None = None
    known_hosts: str | None = Field(
        default=None, description="the only known_hosts consulted; default: ~/.ssh/known_hosts")
    docker_host: str | None = Field(
        default=None, description="the engine of a docker:// target, as DOCKER_HOST: "
                                  "unix:///run/docker.sock; default: the docker CLI's own")
    services: list[ServiceCheck] = Field(default_factory=list)
    ports: list[PortCheck] = Field(default_factory=list)
    processes: list[ProcessCheck] = Field(default_factory=list)
    files: list[FileCheck] = Field(default_factory=list)
    command_checks: list[CommandCheck] = Field(default_factory=list)
    filesystems: list[str] = Field(
        default_factory=list, description="paths whose file system's use is checked (df)")
    memory: bool = Field(default=False, description="check memory use (/proc/meminfo)")
    # Opt-in as memory is: in a container both are the whole machine's, not the container's.
    load: bool = Field(default=False, description="check load per core (/proc/loadavg)")
    paths: list[DeclaredPath] = Field(
        default_factory=list, description="globs whose total size is checked (du -s)")
    security: HostSecurity = Field(default_factory=HostSecurity)
    # Fixes checks/remediation/ may apply here (each also needs -m destructive and
    # --allow-destructive): delete_old_files: {path, pattern, older_than_days}.
    remediation: HostRemediation = Field(default_factory=HostRemediation)

    @field_validator("url")
    @classmethod
    def _host_url(cls, value: str) -> str:
        if value == "local":
            return value
        if value.startswith("docker://"):
            if not CONTAINER.match(value.removeprefix("docker://")):
                raise ValueError("expected docker://container or docker://user@container")
            return value
        parts = urlsplit(value)
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError("expected 'local', ssh://user@host:port or docker://container")
        if parts.password is not None:
            raise ValueError("a password in an ssh:// URL is not supported: authenticate "
                             "with ssh_identity_file")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("expected ssh://user@host:port, without a path or query")
        _ = parts.port  # raises ValueError for a port that is not a number
        return value

    @field_validator("docker_host")
    @classmethod
    def _engine(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in DOCKER_HOST_SCHEMES:
            raise ValueError("expected an engine address as DOCKER_HOST takes it: "
                             "unix:///path/docker.sock, tcp://host:2376, ssh://user@host")
        return value

    @field_validator("filesystems")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"{path!r}: expected an absolute path")
        if len(set(value)) != len(value):
            raise ValueError("a path is listed twice")
        return value

    @field_validator("paths")
    @classmethod
    def _path_labels(cls, value: list[DeclaredPath]) -> list[DeclaredPath]:
        return unique_labels(value)

    @field_validator("services", mode="before")
    @classmethod
    def _service_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _ssh_keys_only_for_ssh(self) -> HostTarget:
        if self.kind != "ssh" and (self.ssh_identity_file or self.known_hosts):
            raise ValueError("ssh_identity_file and known_hosts apply to ssh:// targets only")
        if self.kind != "docker" and self.docker_host:
            raise ValueError("docker_host applies to docker:// targets only")
        return self

    @property
    def kind(self) -> Literal["local", "ssh", "docker"]:
        if self.url == "local":
            return "local"
        return "docker" if self.url.startswith("docker://") else "ssh"

    @property
    def is_local(self) -> bool:
        return self.url == "local"

    @property
    def sshd_port(self) -> int:
        """The port of the sshd the security checks judge."""
        if self.security.sshd_port is not None:
            return self.security.sshd_port
        return (urlsplit(self.url).port or 22) if self.kind == "ssh" else 22

    @property
    def container(self) -> str:
        """A docker:// target's ``[user@]container``."""
        return self.url.removeprefix("docker://")

    def address(self) -> str:
        if self.is_local:
            return "local"
        if self.kind == "docker":
            return self.container
        parts = urlsplit(self.url)
        user = f"{unquote(parts.username)}@" if parts.username else ""
        return f"{user}{parts.hostname}:{parts.port or 22}"


# -- the client -------------------------------------------------------------------------
class HostClient:
    """Reads one host through testinfra, local or over ssh, every command under a deadline.

    testinfra's modules are reached only here, through explicit, typed methods. Used from
    several threads, a client reads one thing at a time (``self._lock``): a process listing
    must not count our own commands running beside it, and testinfra's lazily built modules
    and our own findings about the host (systemd, busybox) are not guarded otherwise.
    Copies (:meth:`fetch`) run beside the reads: each is its own process, and long.
    """

    def __init__(self, name: str, spec: HostTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.where = "local" if spec.is_local else f"{spec.kind} {spec.address()}"
        self.connect_timeout_s = max(1, math.ceil(timeout_s))
        self._ssh: SshSession | None = None
        self._systemd: bool | None = None
        self._busybox: bool | None = None  # /bin/ps is busybox's
        self._lock = threading.RLock()
        self.backend: Any
        env = environment_snapshot()
        if spec.is_local:
            self.backend = backends.Local()
            self.backend.deadline_s = timeout_s
            self.backend.env = env
        elif spec.kind == "docker":
            self.backend = backends.Docker(spec.container)
            self.backend.remote_timeout_s = self.connect_timeout_s
            # The exec's own start-up, the container's `timeout` and its kill grace.
            self.backend.deadline_s = self.connect_timeout_s + 2
            self.backend._encoding = "utf-8"  # testinfra would ask python in the container
            self.backend.env = env
            if spec.docker_host:
                # The engine for this command only: os.environ is not touched, and a
                # DOCKER_CONTEXT of ours would conflict with DOCKER_HOST.
                env = {k: v for k, v in env.items() if k != "DOCKER_CONTEXT"}
                self.backend.env = env | {"DOCKER_HOST": spec.docker_host}
        else:
            # Our ssh_config and master (started in connect(), ended in close()).
            self._ssh = SshSession(name, self.where, spec.url,
                                   identity_file=spec.ssh_identity_file,
                                   known_hosts=spec.known_hosts, timeout_s=timeout_s,
                                   backend_class=backends.Ssh)
            self.backend = self._ssh.backend
            self.backend.env = self._ssh.env
            # The connection through the master, the remote `timeout` and its kill grace.
            self.backend.deadline_s = self.connect_timeout_s + timeout_s + 2
        self.backend.target = name
        self.backend.where = self.where
        self.host: Any = testinfra.host.Host(self.backend)
        self.backend.set_host(self.host)

    # -- connection -------------------------------------------------------------------
    def connect(self) -> None:
        """Prove the host answers a command; over ssh, open the one verified session that
        every later command shares. Raises :class:`TargetUnavailable` within the deadline."""
        with self._lock:
            if self._ssh is not None:
                self._ssh.check_local_files()
                self._ssh.open_master()
            if self.spec.kind == "docker" and shutil.which("docker") is None:
                raise self._unavailable("the docker CLI is not installed here "
                                        "(apt-get install docker.io, or docker-ce-cli)")
            result = self.run("true")
            if result.exit_status != 0:
                raise self._unavailable(f"'true' exited with {result.exit_status}: "
                                        f"{last_line(result.stderr)}")

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()

    # -- reading ----------------------------------------------------------------------
    def run(self, command: str) -> CommandOutcome:
        """Run one shell command; over ssh it also runs under ``timeout`` on the host."""
        with self._lock:
            result = self.backend.run(command)
        elapsed = float(getattr(result, "elapsed_s", 0.0))
        # 124/137: coreutils' timeout; 143: busybox's, which reports the TERM it sent.
        if (not self.spec.is_local and result.rc in (124, 137, 143)
                and elapsed >= self.backend.remote_timeout_s):
            raise self._unavailable(
                f"command did not finish within {self.backend.remote_timeout_s} s on the "
                f"host ({backends.short(command)})")
        return CommandOutcome(command, int(result.rc), result.stdout, result.stderr, elapsed)

    def file(self, path: str) -> FileState:
        """What ``stat`` says about ``path``, in one round trip (testinfra's File module
        would take one per attribute)."""
        # LC_ALL=C: stat names kinds and errors in the host's language otherwise.
        with self._lock:
            result = self.backend.run("LC_ALL=C stat -L -c %s -- %s", "%F|%a|%U|%G", path)
        if result.rc != 0:
            if "No such file or directory" in result.stderr:
                return FileState(path, exists=False)
            raise self._unavailable(f"cannot stat {path}: {last_line(result.stderr)}")
        kind, mode, owner, group = result.stdout.strip().split("|", 3)
        kind = {"regular file": "file", "regular empty file": "file"}.get(kind, kind)
        return FileState(path, True, kind, f"{int(mode, 8):04o}", owner, group)

    def disk_usage(self, path: str) -> DiskUsage | None:
        """``df -P`` (KiB blocks, then inodes) for the file system holding ``path``, in one
        round trip; ``None`` when ``path`` does not exist."""
        # Asked first: busybox's df says "can't find mount point" for a missing path.
        with self._lock:
            result = self.backend.run("test -e %s || exit 99; LC_ALL=C df -P -k -- %s && "
                                      "LC_ALL=C df -P -i -- %s", path, path, path)
        if result.rc != 0:
            if result.rc == 99 and not result.stdout:
                return None
            raise self._unavailable(f"cannot read df {path}: "
                                    f"{last_line(result.stderr) or f'exit status {result.rc}'}")
        try:
            return parse_df(path, result.stdout)
        except ValueError as exc:
            raise self._unavailable(f"cannot read df {path}: {exc}") from None

    def memory(self) -> MemoryUsage:
        """Memory in use, from ``/proc/meminfo``'s MemTotal and MemAvailable."""
        result = self.run("cat /proc/meminfo")
        if result.exit_status != 0:
            raise self._unavailable(f"cannot read /proc/meminfo: {last_line(result.stderr)}")
        try:
            return parse_meminfo(result.stdout)
        except ValueError as exc:
            raise self._unavailable(f"cannot read /proc/meminfo: {exc}") from None

    def listening(self, socketspec: str) -> bool:
        """Whether ``tcp://host:port``, ``udp://…`` or ``unix:///path`` is listening (ss)."""
        with self._lock, self._probe(f"listening sockets ({socketspec})"):
            return bool(self.host.socket(socketspec).is_listening)

    def processes(self, *, comm: str | None = None, args: str | None = None,
                  user: str | None = None) -> list[ProcessInfo]:
        """Processes by exact executable name and user, and a regex over the command line."""
        filters = {k: v for k, v in (("comm", comm), ("user", user)) if v is not None}
        with self._lock:
            if self._busybox is None:
                self._busybox = self.backend.run("readlink -f /bin/ps").stdout.strip(
                    ).endswith("/busybox")
            if self._busybox:
                rows = self._busybox_processes(comm=comm, user=user)
            else:
                with self._probe("process list"):
                    found = self.host.process.filter(**filters)
                    rows = [ProcessInfo(int(p["pid"]), str(p["comm"]), str(p["args"]))
                            for p in found]
        pattern = re.compile(args) if args else None
        return [p for p in rows if PS_PROBE not in p.args
                and (pattern is None or pattern.search(p.args))]

    def _busybox_processes(self, *, comm: str | None, user: str | None) -> list[ProcessInfo]:
        """busybox's ``ps`` (containers): testinfra asks it for a ``time`` column that
        Debian's busybox does not have."""
        result = self.backend.run(BUSYBOX_PS)
        if result.rc != 0:
            raise self._unavailable(f"cannot read process list: {last_line(result.stderr)}")
        # Ours: the ps, and busybox timeout's watchers (they outlive our commands briefly).
        ours = (BUSYBOX_PS, f"timeout -k 1 {getattr(self.backend, 'remote_timeout_s', 0)} ")
        rows = []
        for line in result.stdout.splitlines()[1:]:
            parts = line.split(None, 3)
            if len(parts) < 3 or not parts[0].isdigit():
                raise self._unavailable(f"cannot read process list: unexpected line {line!r}")
            args = parts[3] if len(parts) > 3 else ""
            if any(mark in args for mark in ours) or (comm and parts[2] != comm) or (
                    user and parts[1] != user):
                continue
            rows.append(ProcessInfo(int(parts[0]), parts[2], args))
        return rows

    def service(self, check: ServiceCheck) -> ServiceState:
        """Whether a service runs, asked of the init system that manages it; where none
        does and the check gives ``process``, by process match, and the state says so."""
        name = check.name
        with self._lock, self._probe(f"service {name}"):
            if self._systemd is None:  # sd_booted(): systemd is PID 1
                self._systemd = self._test("-d", "/run/systemd/system")
            systemd = self._systemd
            if systemd and self.host.service(name).exists:
                return ServiceState(name, bool(self.host.service(name).is_running), True,
                                    "systemd")
            script = f"/etc/init.d/{name}"
            if not systemd and self._test("-f", script):
                running = bool(self.host.service(name).is_running)
                return ServiceState(name, running, True, f"sysv init script ({script} status)")
        why = (f"no systemd unit {name}" if systemd else
               f"systemd is not PID 1 here and there is no {script}")
        if check.process is not None:
            found = self.processes(args=check.process)
            return ServiceState(name, bool(found), True,
                                f"process match {check.process!r} ({why})",
                                tuple(p.pid for p in found))
        if systemd:
            return ServiceState(name, False, False, "systemd")
        raise self._unavailable(f"cannot tell whether service {name} runs: {why}; declare "
                                "process: for it to be judged by process match")

    def sshd_config(self) -> SshdConfig:
        """The sshd on the target's ``sshd_port`` (:func:`opsverify.targets.sshd.read`)."""
        return sshd.read(self)

    def auth_methods(self) -> tuple[str, ...] | None:
        """What an ssh:// target's server accepts for this login, host key verified;
        ``None`` elsewhere."""
        return self._ssh.auth_methods(self.timeout_s) if self._ssh is not None else None

    def unavailable(self, cause: str) -> TargetUnavailable:
        return self._unavailable(cause)

    def world_writable(self, path: str) -> WorldWritable:
        """``find PATH -xdev -perm -0002``: world-writable files, and world-writable
        directories without the sticky bit (anyone may replace what is in them); symbolic
        links are always 0777 and are not counted."""
        command = (f"test -e {shlex.quote(path)} || exit 99; LC_ALL=C find {shlex.quote(path)} "
                   "-xdev \\( \\( -type f -perm -0002 \\) -o \\( -type d -perm -0002 ! "
                   f"-perm -1000 \\) \\) -print | head -n {MAX_WORLD_WRITABLE + 1}")
        with self._lock:
            result = self.backend.run(command)
        if result.rc == 99:
            return WorldWritable(path, exists=False)
        entries = tuple(line for line in result.stdout.splitlines() if line)
        unreadable = tuple(
            m.group(1) for m in re.finditer(r"find: [‘'`]?(.+?)[’']?: Permission denied",
                                            result.stderr))
        if result.rc != 0 and not entries and not unreadable:
            raise self._unavailable(f"cannot list world-writable files under {path}: "
                                    f"{last_line(result.stderr) or f'exit {result.rc}'}")
        return WorldWritable(path, True, entries[:MAX_WORLD_WRITABLE],
                             len(entries) > MAX_WORLD_WRITABLE, unreadable)

    def fetch(self, path: str, dest: Path, *, max_bytes: int, timeout_s: float) -> None:
        """Copy the host's file ``path`` to the local ``dest``: over ssh through the verified
        connection (``head -c``, killed locally at the deadline and by ``timeout`` on the
        host), locally by reading it. Raises :class:`FetchTooLarge` past ``max_bytes`` (what
        reached ``dest`` is cut short) and :class:`FetchFailed` (a ``TargetUnavailable``)
        when the copy fails or takes more than ``timeout_s``."""
        if self._ssh is not None:
            self._ssh.fetch(path, dest, max_bytes, timeout_s)
            return
        if not self.spec.is_local:
            raise FetchFailed(self.name, self.where, f"cannot copy {path}: copying from "
                              f"{self.spec.kind}:// hosts is not supported", kind="failed")
        late = f"copying {path} took more than {timeout_s:g} s"
        deadline = time.monotonic() + timeout_s
        copied = 0
        try:
            with open(path, "rb") as src, dest.open("wb") as out:
                while chunk := src.read(FETCH_CHUNK):
                    copied += len(chunk)
                    if copied > max_bytes:
                        raise FetchTooLarge(path, max_bytes)
                    out.write(chunk)
                    if time.monotonic() > deadline:
                        raise FetchFailed(self.name, self.where, late, kind="timeout")
        except OSError as exc:
            detail = exc.strerror or type(exc).__name__
            raise FetchFailed(self.name, self.where, f"cannot copy {path}: {detail}",
                              kind="failed", detail=detail) from None

    # -- internals --------------------------------------------------------------------
    def _test(self, flag: str, path: str) -> bool:
        return int(self.backend.run("test %s %s", flag, path).rc) == 0

    def _probe(self, what: str) -> _Probe:
        return _Probe(self, what)

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.where, cause)


class _Probe:
    """Turns testinfra's ways of saying "could not run that" into one ERROR line."""

    def __init__(self, client: HostClient, what: str) -> None:
        self.client = client
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> Literal[False]:
        if exc is None or isinstance(exc, TargetUnavailable):
            return False
        if isinstance(exc, AssertionError | RuntimeError | ValueError | NotImplementedError):
            text = str(exc)
            status = re.match(r"Unexpected exit code (\d+)", text)
            cause = (f"exit status {status.group(1)}" if status else
                     backends.short(last_line(text), 160) or type(exc).__name__)
            raise self.client._unavailable(f"cannot read {self.what}: {cause}") from None
        return False
