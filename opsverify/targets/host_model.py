"""What a ``host`` target declares (services, processes, ports, files, commands, security
settings) and what reading a host returns; split from :mod:`opsverify.targets.host`, whose
``HostTarget`` holds these and whose client reads them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from testinfra.modules.socket import parse_socketspec

from opsverify.targets.base import DeclaredCheck, Section


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
        if value is None:
            return None
        if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value):
            raise ValueError("expected an octal mode such as '0640'")
        return f"{int(value, 8):04o}"

    @property
    def label(self) -> str:
        return self.name or self.path


class CommandCheck(DeclaredCheck):
    """A runbook read command whose exit status (and output) must be as declared.

    The command runs through ``sh -c`` on the host, under the target's deadline. It must
    only read: opsverify runs it as written.
    """

    command: str = Field(min_length=1)
    expect_exit: int = Field(default=0, ge=0, le=255)
    expect_output: str | None = Field(default=None, description="regex searched in stdout")

    @field_validator("expect_output")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _compiles(value)


RootLogin = Literal["no", "forced-commands-only", "prohibit-password"]


class HostSecurity(Section):
    """``security:`` of a host target (dev-sec ssh-baseline and linux-baseline): every check
    of ``checks/security/test_host.py`` applies; ``<check>: false`` opts the target out.

    The sshd checked is the one listening on ``sshd_port`` (default: an ``ssh://`` URL's
    port, else 22); ``permit_root_login`` relaxes what ``PermitRootLogin`` may allow;
    ``no_world_writable`` names the trees that must hold no world-writable file.
    """

    ssh_root_login: bool = True  # PermitRootLogin no
    ssh_password_auth: bool = True  # PasswordAuthentication no
    ssh_ciphers: bool = True  # no CBC cipher offered
    ssh_macs: bool = True  # no SHA-1 (or MD5) MAC offered
    shadow: bool = True  # /etc/shadow not readable by others
    permit_root_login: RootLogin = "no"
    sshd_port: int | None = Field(default=None, ge=1, le=65535)
    no_world_writable: list[str] = Field(default_factory=list)

    @field_validator("no_world_writable")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"{path!r}: expected an absolute path")
        return value


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


@dataclass(frozen=True)
class WorldWritable:
    """World-writable files (and world-writable directories without the sticky bit) under
    one declared path, as ``find -xdev -perm -0002`` lists them."""

    path: str
    exists: bool
    entries: tuple[str, ...] = ()
    truncated: bool = False  # more than MAX_WORLD_WRITABLE were found
    unreadable: tuple[str, ...] = ()  # directories find could not enter


MAX_WORLD_WRITABLE = 100


def _compiles(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
    return pattern
