"""Host targets: the ``host`` section and a read-only client built on testinfra's backends.

``url: local`` reads the machine the suite runs on; ``url: ssh://user@host:port`` reads a
remote one through OpenSSH, with host-key verification on (``StrictHostKeyChecking yes``
against ``known_hosts``; an unknown or changed key is an ERROR, never accepted). Every
command carries two deadlines: the whole operation is killed locally, and the remote side
runs under ``timeout`` so nothing is left running there.

The client only inspects (``stat``, ``ss``, ``ps``, the init system's status). Declared
``command_checks`` run as written: they are the runbook's own read commands and must not
change the host; opsverify cannot tell a read from a write in a shell command.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import testinfra.host
from pydantic import Field, field_validator, model_validator
from testinfra.backend.local import LocalBackend
from testinfra.backend.ssh import SshBackend
from testinfra.modules.socket import parse_socketspec

from opsverify.errors import TargetUnavailable
from opsverify.targets.base import Section, TargetSpec
from opsverify.targets.postgres import Cadence, Category

# Our own probe, as it shows in ``ps`` while it runs: never a match for a declared process.
PS_PROBE = "ps -Aww -o"
CONTROL_PERSIST_S = 30  # an ssh master we lost track of (the run was killed) ends by itself


class ServiceCheck(Section):
    """A service that must be running, as the host's init system sees it.

    ``process`` is a regular expression over command lines, used only where no init system
    manages the service (a container, a host without systemd); the evidence then says the
    verdict came from a process match.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9@._:-]+$")
    process: str | None = None

    @field_validator("process")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _compiles(value)


class ProcessCheck(Section):
    """Processes that must be present: by executable name (``comm``, as ``ps`` shows it,
    at most 15 characters) and/or a regular expression over the whole command line."""

    name: str = Field(pattern=r"^[A-Za-z0-9@._:/-]+$")
    comm: str | None = Field(default=None, max_length=15)
    args: str | None = None
    user: str | None = None
    min_count: int = Field(default=1, ge=1)

    @field_validator("args")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _compiles(value)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value, "comm": value[:15]} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _something(self) -> ProcessCheck:
        if self.comm is None and self.args is None:
            raise ValueError("give comm (the executable's name) or args (a regex)")
        return self


class PortCheck(Section):
    """A socket that must be listening: ``tcp://127.0.0.1:5432``, ``udp://53``,
    ``unix:///run/app.sock``; written as that string alone, or with a ``name`` for reports
    (a socket taken from a variable is a secret, masked wherever it would show)."""

    listen: str
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9@._:/-]+$")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"listen": value} if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _socket(cls, value: str) -> str:
        try:
            parse_socketspec(value)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{value!r}: {exc} (e.g. tcp://127.0.0.1:5432)") from None
        return value

    @property
    def label(self) -> str:
        return self.name or self.listen


class FileCheck(Section):
    """A path that must exist, optionally of a kind, mode and ownership; ``name`` labels it
    in reports (a path taken from a variable is a secret, masked wherever it would show)."""

    path: str
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9@._:/-]+$")
    kind: Literal["file", "directory"] | None = None
    mode: str | None = Field(default=None, description="octal, quoted: '0640'")
    owner: str | None = None
    group: str | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected an absolute path")
        return value

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        if isinstance(value, int):
            raise ValueError("give the mode as a quoted octal string, e.g. mode: '0640' "
                             "(YAML reads an unquoted 0640 as the number 416)")
        if isinstance(value, str) and not re.fullmatch(r"0?[0-7]{3,4}", value):
            raise ValueError("expected an octal mode such as '0640'")
        return None if value is None else f"{int(value, 8):04o}"

    @property
    def label(self) -> str:
        return self.name or self.path


class CommandCheck(Section):
    """A runbook read command whose exit status (and output) must be as declared.

    The command runs through ``sh -c`` on the host, under the target's deadline. It must
    only read: opsverify runs it as written.
    """

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    command: str = Field(min_length=1)
    expect_exit: int = Field(default=0, ge=0, le=255)
    expect_output: str | None = Field(default=None, description="regex searched in stdout")
    cadence: list[Cadence] = Field(default_factory=lambda: list[Cadence](["daily"]))
    category: Category = "health"
    description: str = ""

    @field_validator("cadence", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("expect_output")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _compiles(value)


class HostTarget(TargetSpec):
    type: Literal["host"]
    url: str  # "local" or ssh://user@host[:port]
    ssh_identity_file: str | None = None
    known_hosts: str | None = Field(
        default=None, description="the only known_hosts consulted; default: ~/.ssh/known_hosts")
    services: list[ServiceCheck] = Field(default_factory=list)
    ports: list[PortCheck] = Field(default_factory=list)
    processes: list[ProcessCheck] = Field(default_factory=list)
    files: list[FileCheck] = Field(default_factory=list)
    command_checks: list[CommandCheck] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _host_url(cls, value: str) -> str:
        if value == "local":
            return value
        parts = urlsplit(value)
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError("expected 'local' or ssh://user@host:port")
        if parts.password is not None:
            raise ValueError("a password in an ssh:// URL is not supported: authenticate "
                             "with ssh_identity_file")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("expected ssh://user@host:port, without a path or query")
        _ = parts.port  # raises ValueError for a port that is not a number
        return value

    @field_validator("services", mode="before")
    @classmethod
    def _service_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _ssh_keys_only_for_ssh(self) -> HostTarget:
        if self.is_local and (self.ssh_identity_file or self.known_hosts):
            raise ValueError("ssh_identity_file and known_hosts apply to ssh:// targets only")
        return self

    @property
    def is_local(self) -> bool:
        return self.url == "local"

    def address(self) -> str:
        if self.is_local:
            return "local"
        parts = urlsplit(self.url)
        user = f"{unquote(parts.username)}@" if parts.username else ""
        return f"{user}{parts.hostname}:{parts.port or 22}"


# -- results ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CommandOutcome:
    """What one command did on the host."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    elapsed_s: float


@dataclass(frozen=True)
class FileState:
    path: str
    exists: bool
    kind: str = ""  # file, directory, or stat's word for anything else (socket, fifo)
    mode: str = ""  # four octal digits
    owner: str = ""
    group: str = ""


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    comm: str
    args: str


@dataclass(frozen=True)
class ServiceState:
    """Whether a service runs, and how that was decided."""

    name: str
    running: bool
    known: bool  # the init system (or, failing that, the process fallback) knows it
    judged_by: str  # "systemd", "sysv init script", "process match 'x' (why)"
    pids: tuple[int, ...] = ()


# -- testinfra backends with deadlines ----------------------------------------------------
class _Deadlines:
    """Mixed into testinfra's backends: a whole-operation deadline on every command.

    testinfra runs commands through ``subprocess.Popen(...).communicate()`` without a
    timeout; this replaces that one method and leaves the rest of testinfra as it is.
    """

    target = ""
    where = ""
    deadline_s = 0.0

    def run_local(self, command: str, *args: str) -> Any:
        line = self.quote(command, *args)  # type: ignore[attr-defined]
        started = time.monotonic()
        proc = subprocess.Popen(  # noqa: S602 - testinfra builds the line with shlex.quote
            line, shell=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,  # so that a deadline ends the whole command, children too
        )
        try:
            stdout, stderr = proc.communicate(timeout=self.deadline_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise TargetUnavailable(
                self.target, self.where,
                f"no answer within {self.deadline_s:g} s ({_short(line)})") from None
        result = self.result(proc.returncode, line.encode(), stdout, stderr)  # type: ignore[attr-defined]
        result.elapsed_s = time.monotonic() - started
        return result


class _LocalBackend(_Deadlines, LocalBackend):  # type: ignore[misc]  # testinfra is untyped
    NAME = "local"


class _SshBackend(_Deadlines, SshBackend):  # type: ignore[misc]  # testinfra is untyped
    """testinfra's OpenSSH backend; commands also run under ``timeout`` on the host."""

    NAME = "ssh"
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


# -- the client -------------------------------------------------------------------------
class HostClient:
    """Reads one host through testinfra, local or over ssh, every command under a deadline.

    testinfra's modules are reached only here, through explicit, typed methods.
    """

    def __init__(self, name: str, spec: HostTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.where = "local" if spec.is_local else f"ssh {spec.address()}"
        self.connect_timeout_s = max(1, math.ceil(timeout_s))
        self._control_dir: Path | None = None
        self._master: subprocess.Popen[bytes] | None = None
        self._systemd: bool | None = None
        self.backend: Any
        if spec.is_local:
            self.backend = _LocalBackend()
            self.backend.deadline_s = timeout_s
        else:
            # The control socket's path must fit a sockaddr_un (about 100 bytes).
            base = tempfile.gettempdir() if len(tempfile.gettempdir()) <= 40 else "/tmp"  # noqa: S108
            self._control_dir = Path(tempfile.mkdtemp(prefix="opsverify-ssh-", dir=base))
            parts = urlsplit(spec.url)
            user = f"{parts.username}@" if parts.username else ""
            host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
            self.backend = _SshBackend(
                f"{user}{host}:{parts.port or 22}",
                ssh_config=str(self._write_ssh_config()),
                ssh_identity_file=spec.ssh_identity_file,
                timeout=self.connect_timeout_s,
                controlpersist=0,  # the master is ours: started in connect(), ended in close()
            )
            self.backend.remote_timeout_s = self.connect_timeout_s
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
        if not self.spec.is_local:
            self._check_local_files()
            self._open_master()
        result = self.run("true")
        if result.exit_status != 0:
            raise self._unavailable(f"'true' exited with {result.exit_status}: "
                                    f"{_last_line(result.stderr)}")

    def close(self) -> None:
        if self._master is not None:
            _kill_group(self._master, signal.SIGTERM)
            self._master = None
        if self._control_dir is not None:
            shutil.rmtree(self._control_dir, ignore_errors=True)
            self._control_dir = None

    # -- reading ----------------------------------------------------------------------
    def run(self, command: str) -> CommandOutcome:
        """Run one shell command; over ssh it also runs under ``timeout`` on the host."""
        result = self.backend.run(command)
        elapsed = float(getattr(result, "elapsed_s", 0.0))
        if (not self.spec.is_local and result.rc in (124, 137)
                and elapsed >= self.backend.remote_timeout_s):
            raise self._unavailable(
                f"command did not finish within {self.backend.remote_timeout_s} s on the "
                f"host ({_short(command)})")
        return CommandOutcome(command, int(result.rc), result.stdout, result.stderr, elapsed)

    def file(self, path: str) -> FileState:
        """What ``stat`` says about ``path``, in one round trip (testinfra's File module
        would take one per attribute)."""
        # LC_ALL=C: stat names kinds and errors in the host's language otherwise.
        result = self.backend.run("LC_ALL=C stat -L -c %s -- %s", "%F|%a|%U|%G", path)
        if result.rc != 0:
            if "No such file or directory" in result.stderr:
                return FileState(path, exists=False)
            raise self._unavailable(f"cannot stat {path}: {_last_line(result.stderr)}")
        kind, mode, owner, group = result.stdout.strip().split("|", 3)
        kind = {"regular file": "file", "regular empty file": "file"}.get(kind, kind)
        return FileState(path, True, kind, f"{int(mode, 8):04o}", owner, group)

    def listening(self, socketspec: str) -> bool:
        """Whether ``tcp://host:port``, ``udp://…`` or ``unix:///path`` is listening (ss)."""
        with self._probe(f"listening sockets ({socketspec})"):
            return bool(self.host.socket(socketspec).is_listening)

    def processes(self, *, comm: str | None = None, args: str | None = None,
                  user: str | None = None) -> list[ProcessInfo]:
        """Processes by exact executable name and user, and a regex over the command line."""
        filters = {k: v for k, v in (("comm", comm), ("user", user)) if v is not None}
        with self._probe("process list"):
            found = self.host.process.filter(**filters)
            rows = [ProcessInfo(int(p["pid"]), str(p["comm"]), str(p["args"])) for p in found]
        pattern = re.compile(args) if args else None
        return [p for p in rows if PS_PROBE not in p.args
                and (pattern is None or pattern.search(p.args))]

    def service(self, check: ServiceCheck) -> ServiceState:
        """Whether a service runs, asked of the init system that manages it; where none
        does and the check gives ``process``, by process match, and the state says so."""
        name = check.name
        with self._probe(f"service {name}"):
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

    # -- internals --------------------------------------------------------------------
    def _test(self, flag: str, path: str) -> bool:
        return int(self.backend.run("test %s %s", flag, path).rc) == 0

    def _probe(self, what: str) -> _Probe:
        return _Probe(self, what)

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.where, cause)

    def _check_local_files(self) -> None:
        for key, path in (("ssh_identity_file", self.spec.ssh_identity_file),
                          ("known_hosts", self.spec.known_hosts)):
            if path and not os.access(path, os.R_OK):
                raise self._unavailable(f"{key} {path} is not a readable file")

    def _write_ssh_config(self) -> Path:
        """Every option we rely on, in a file of our own: ``~/.ssh/config`` and
        ``/etc/ssh/ssh_config`` are not read, so nothing there can weaken verification."""
        assert self._control_dir is not None
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
            f'  ControlPath "{self._control_dir}/%C"',
            "  ForwardAgent no",
            "  ForwardX11 no",
            "  ClearAllForwardings yes",
            "  RequestTTY no",
            "  LogLevel ERROR",
        ]
        if self.spec.known_hosts:
            lines += [f'  UserKnownHostsFile "{self.spec.known_hosts}"',
                      "  GlobalKnownHostsFile /dev/null"]
        if self.spec.ssh_identity_file:
            lines.append("  IdentitiesOnly yes")
        path = self._control_dir / "ssh_config"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _open_master(self) -> None:
        """One authenticated, verified connection that later commands multiplex over."""
        assert self._control_dir is not None
        cmd, cmd_args = self.backend._build_ssh_command("true")
        # testinfra's line ends with "<host> <command>": a master runs no command (-N).
        line = self.backend.quote(" ".join(cmd[:-1]), *cmd_args[:-2])
        parts = [*shlex.split(line), "-N", "-o", "ControlMaster=yes",
                 "-o", "ControlPersist=no", cmd_args[-2]]
        wrapper = ["setpriv", "--pdeathsig=SIGTERM"] if shutil.which("setpriv") else []
        log = self._control_dir / "master.log"
        with log.open("wb") as err:
            self._master = subprocess.Popen(
                [*wrapper, *parts], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, start_new_session=True)
        control = self._control_dir
        deadline = time.monotonic() + self.connect_timeout_s + self.timeout_s
        while time.monotonic() < deadline:
            if self._master.poll() is not None:
                stderr = log.read_text(errors="replace")
                self._master = None
                raise self._unavailable(ssh_cause(stderr, self.backend))
            if any(p.is_socket() for p in control.iterdir()):  # the master is listening
                return
            time.sleep(0.01)
        self.close()
        raise self._unavailable(f"no SSH session within {self.connect_timeout_s} s "
                                "(the server accepted the connection but did not complete "
                                "the handshake)")


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
                     _short(_last_line(text), 160) or type(exc).__name__)
            raise self.client._unavailable(f"cannot read {self.what}: {cause}") from None
        return False


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
    return _last_line(stderr) or "ssh failed without saying why (exit status 255)"


# -- helpers ----------------------------------------------------------------------------
def _compiles(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
    return pattern


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ValueError:  # no pipes to drain
        proc.wait()


def _short(command: str, limit: int = 60) -> str:
    command = " ".join(command.split())
    return command if len(command) <= limit else command[: limit - 1] + "…"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
