"""What docker-bench-security's section 5 reads of a container, from its inspect data:
privileged mode, host namespaces, sensitive and engine-socket bind mounts, secret-looking
environment variables. Split from :mod:`opsverify.targets.docker`, whose client inspects the
containers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from opsverify.secrets import SECRETS

# Host paths whose bind mount hands the container the host (docker-bench 5.5), and the
# engine sockets whose mount hands it every other container (5.31).
SENSITIVE_HOST_PATHS = frozenset({"/", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr"})
ENGINE_SOCKETS = ("docker.sock", "containerd.sock", "podman.sock")
HOST_NAMESPACES = ("network", "pid", "ipc", "uts")
# A variable's name that says it holds a credential (DB_PASSWORD, API_TOKEN, AWS_SECRET_…)…
SECRET_NAME = re.compile(
    r"(?:^|_)(?:PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|"
    r"CREDENTIALS?)(?:_|$)", re.IGNORECASE)
# …unless it names where the secret is kept (Docker secrets' FOO_PASSWORD_FILE=/run/secrets/…).
REFERENCE_NAME = re.compile(r"_(?:FILE|PATH|DIR|URL_FILE)$", re.IGNORECASE)
# Values that are credentials whatever the variable is called.
SECRET_VALUES = (
    (re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@", re.IGNORECASE),
     "a URL with a password"),
    (re.compile(r"(?:^|[^A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?:$|[^A-Z0-9])"),
     "an AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"^(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})$"),
     "a GitHub token"),
    (re.compile(r"^xox[abposr]-[A-Za-z0-9-]{10,}$"), "a Slack token"),
    (re.compile(r"^(?:sk|rk)_live_[A-Za-z0-9]{16,}$"), "a Stripe key"),
)
# Values that are clearly not the secret itself: empty, masked, a placeholder, a switch, a
# path to where it is kept.
NOT_A_SECRET = re.compile(r"^(?:|\*+|<[^>]*>|\$\{[^}]*\}|true|false|yes|no|on|off|0|1|"
                          r"/run/secrets/.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class HostMount:
    """A bind mount of the host's ``source`` at ``destination`` in the container."""

    source: str
    destination: str
    writable: bool


@dataclass(frozen=True)
class SecretEnv:
    """An ``Env`` entry whose value looks like a secret: its name and why, never the value
    (registered with :data:`~opsverify.secrets.SECRETS` when it was read)."""

    name: str
    why: str


@dataclass(frozen=True)
class ContainerSecurity:
    """What ``docker inspect`` says of one container that the security checks judge."""

    name: str
    status: str
    image: str
    privileged: bool
    binds: tuple[HostMount, ...]
    namespaces: tuple[tuple[str, str], ...]  # (network|pid|ipc|uts, mode) as inspected
    user: str  # Config.User; "" is the image's default, root for most images
    read_only_rootfs: bool
    secret_env: tuple[SecretEnv, ...]

    @classmethod
    def from_inspect(cls, data: dict[str, Any]) -> ContainerSecurity:
        config = data.get("Config") or {}
        host = data.get("HostConfig") or {}
        binds = tuple(
            HostMount(str(m.get("Source") or ""), str(m.get("Destination") or ""),
                      bool(m.get("RW", True)))
            for m in data.get("Mounts") or [] if m.get("Type") == "bind")
        modes = {"network": host.get("NetworkMode"), "pid": host.get("PidMode"),
                 "ipc": host.get("IpcMode"), "uts": host.get("UTSMode")}
        return cls(
            name=str(data.get("Name", "")).lstrip("/"),
            status=str((data.get("State") or {}).get("Status", "unknown")),
            image=str(config.get("Image", "")),
            privileged=bool(host.get("Privileged")),
            binds=binds,
            namespaces=tuple((k, str(v or "")) for k, v in modes.items()),
            user=str(config.get("User") or ""),
            read_only_rootfs=bool(host.get("ReadonlyRootfs")),
            secret_env=secret_env(config.get("Env") or []),
        )

    @property
    def runs_as_root(self) -> bool:
        """No user, or root by name or id (a named user cannot be resolved from outside the
        container: anything but root is taken for what it says)."""
        return self.user.split(":", 1)[0] in ("", "root", "0")

    def sensitive_binds(self) -> list[tuple[HostMount, str]]:
        """Bind mounts of an engine socket or a sensitive host directory, and which."""
        found = []
        for mount in self.binds:
            source = "/" + mount.source.strip("/") if mount.source.strip("/") else "/"
            if source.rsplit("/", 1)[-1] in ENGINE_SOCKETS:
                found.append((mount, "the container engine's socket"))
            elif source in SENSITIVE_HOST_PATHS:
                found.append((mount, f"the host's {source}"))
        return found

    def host_namespaces(self) -> list[str]:
        """The namespaces it shares with the host: ``network``, ``pid``…"""
        return [kind for kind, mode in self.namespaces if kind in HOST_NAMESPACES
                and mode == "host"]


def secret_env(entries: list[str]) -> tuple[SecretEnv, ...]:
    """The ``NAME=value`` entries whose value looks like a secret. Each such value is
    registered as a secret here, before anything else can see it; only names go on."""
    found = []
    for entry in entries:
        name, _, value = str(entry).partition("=")
        why = secret_looking(name, value)
        if why is not None:
            SECRETS.add(value)
            found.append(SecretEnv(name, why))
    return tuple(found)


def secret_looking(name: str, value: str) -> str | None:
    """Why ``name=value`` looks like a plain secret, or ``None``."""
    if NOT_A_SECRET.match(value.strip()):
        return None
    for pattern, what in SECRET_VALUES:
        if pattern.search(value):
            return f"the value looks like {what}"
    if SECRET_NAME.search(name) and not REFERENCE_NAME.search(name) and name != "PWD":
        return "the name says it holds a credential"
    return None
