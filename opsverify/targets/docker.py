"""Docker targets: the ``docker`` section and a client that can only inspect the engine.

The runbook's ``docker ps``: declared containers exist, run, are healthy and do not keep
restarting. The client speaks the Engine API through the docker SDK; anything but GET and
HEAD is refused before it leaves the process, and every call is bounded by ``timeout_s``
as a whole (connect, read, and a watchdog for servers that answer too slowly).

The security checks (docker-bench-security §5) read what ``docker inspect`` says of every
container on the engine: privileged mode, bind mounts of the host's sensitive paths, host
namespaces, the user, a read-only root file system, and ``Env`` values that look like
secrets. Such a value is registered as a secret the moment it is read, and only its
variable's name leaves this module.

The docker SDK is imported when a client first talks to its engine: a run without a docker
target never loads it (the schema above is needed by every run, the SDK is not).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

import requests
from pydantic import Field, field_validator

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.remediation.docker import DockerRemediation
from opsverify.targets.base import (
    DeadlinePassed,
    Section,
    TargetSpec,
    api_time,
    names_or_mapping,
    run_within,
)

# What the security checks read (opsverify/targets/docker_security.py), re-exported.
from opsverify.targets.docker_security import ContainerSecurity as ContainerSecurity
from opsverify.targets.docker_security import HostMount as HostMount
from opsverify.targets.docker_security import SecretEnv as SecretEnv
from opsverify.targets.docker_security import secret_looking as secret_looking

READ_METHODS = frozenset({"GET", "HEAD"})
# The one write a write-capable client sends (restart_unhealthy): POST /containers/{id}/restart,
# with or without the API version prefix.
RESTART_PATH = re.compile(r"^(?:/v[0-9.]+)?/containers/[0-9a-f]{12,64}/restart$")
GLOB_CHARACTERS = frozenset("*?[")
HEALTH_OUTPUT_CHARS = 300
T = TypeVar("T")


class ContainerExpectation(Section):
    """What one declared container (or ``name-*`` pattern) must look like.

    ``health``: ``healthy`` requires a HEALTHCHECK that passes; ``none`` means the container
    has no HEALTHCHECK and its health is not checked; unset, a HEALTHCHECK must pass when the
    container has one. ``max_restarts`` overrides the ``docker.restart_count`` threshold.
    """

    health: Literal["healthy", "none"] | None = None
    max_restarts: int | None = Field(default=None, ge=0)


@dataclass(frozen=True)
class DeclaredContainer:
    """One entry of ``containers:``, as the checks receive it."""

    name: str
    health: Literal["healthy", "none"] | None
    max_restarts: int | None

    @property
    def is_pattern(self) -> bool:
        return bool(GLOB_CHARACTERS & set(self.name))


class DockerSecurity(Section):
    """``security:`` of a docker target: every check of ``checks/security/test_docker.py``
    applies to every container on the engine; ``<check>: false`` opts the target out."""

    privileged: bool = True  # no container runs --privileged
    sensitive_mounts: bool = True  # no bind mount of docker.sock, /, /etc and the like
    host_namespaces: bool = True  # no host network, pid, ipc or uts namespace
    env_secrets: bool = True  # no secret-looking plain Env value
    root_user: bool = True  # WARN: a container runs as root
    read_only_rootfs: bool = True  # WARN: a container's root file system is writable


class DockerTarget(TargetSpec):
    type: Literal["docker"]
    url: str  # unix:///var/run/docker.sock or tcp://127.0.0.1:2375
    containers: dict[str, ContainerExpectation] = Field(default_factory=dict)
    security: DockerSecurity = Field(default_factory=DockerSecurity)
    # Fixes checks/remediation/ may apply here (each also needs -m destructive and
    # --allow-destructive naming the environment).
    remediation: DockerRemediation = Field(default_factory=DockerRemediation)

    @field_validator("url")
    @classmethod
    def _engine_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "unix" and parts.path and not parts.netloc:
            return value
        if parts.scheme == "tcp" and parts.hostname and not parts.path.strip("/"):
            return value
        raise ValueError("expected unix:///path/to/docker.sock or tcp://host:port")

    # `containers: [a, b]` declares names with the default expectations.
    _list_or_mapping = field_validator("containers", mode="before")(names_or_mapping)

    def address(self) -> str:
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        return f"{parts.hostname}:{parts.port or 2375}"

    def declared(self) -> list[DeclaredContainer]:
        return [DeclaredContainer(name, spec.health, spec.max_restarts)
                for name, spec in self.containers.items()]


@dataclass(frozen=True)
class ContainerState:
    """What ``docker inspect`` says about one container, as the checks need it."""

    name: str
    id: str
    image: str
    status: str  # created, running, restarting, paused, exited, dead
    exit_code: int
    error: str
    oom_killed: bool
    started_at: str
    finished_at: str
    restart_count: int
    restart_policy: str
    health: str | None  # None without a HEALTHCHECK; else starting, healthy, unhealthy
    failing_streak: int
    last_health_output: str | None
    last_health_exit: int | None

    @classmethod
    def from_inspect(cls, data: dict[str, Any]) -> ContainerState:
        state = data.get("State") or {}
        health = state.get("Health") or None
        log = (health or {}).get("Log") or []
        last = log[-1] if log else {}
        policy = ((data.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "no"
        output = last.get("Output")
        return cls(
            name=str(data.get("Name", "")).lstrip("/"),
            id=str(data.get("Id", ""))[:12],
            image=str((data.get("Config") or {}).get("Image", "")),
            status=str(state.get("Status", "unknown")),
            exit_code=int(state.get("ExitCode") or 0),
            error=str(state.get("Error") or ""),
            oom_killed=bool(state.get("OOMKilled")),
            started_at=str(state.get("StartedAt") or ""),
            finished_at=str(state.get("FinishedAt") or ""),
            restart_count=int(data.get("RestartCount") or 0),
            restart_policy=str(policy),
            health=None if health is None else str(health.get("Status", "unknown")),
            failing_streak=int((health or {}).get("FailingStreak") or 0),
            last_health_output=None if output is None else _one_line(str(output)),
            last_health_exit=None if not last else int(last.get("ExitCode", -1)),
        )


if TYPE_CHECKING:
    import docker


@functools.cache
def read_only_api_client() -> type[docker.APIClient]:
    """The class of the docker SDK's low-level client that refuses every request that could
    change state; defined on first use, when the SDK is imported."""
    import docker

    class ReadOnlyAPIClient(docker.APIClient):  # type: ignore[misc]  # the SDK is untyped
        """The docker SDK's low-level client, refusing every request that could change
        state."""

        def request(self, method: str | bytes, url: str | bytes, *args: Any,
                    **kwargs: Any) -> Any:
            verb = (method.decode() if isinstance(method, bytes) else method).upper()
            if verb not in READ_METHODS:
                path = urlsplit(url.decode() if isinstance(url, bytes) else url).path
                raise WriteRefused(f"refusing Docker API {verb} {path} from a non-destructive "
                                   "check (read-only: GET, HEAD)")
            return super().request(method, url, *args, **kwargs)

    return ReadOnlyAPIClient


@functools.cache
def restart_only_api_client() -> type[docker.APIClient]:
    """The SDK's low-level client of a write-capable :class:`DockerClient`: reads, and a
    restart of a container by its id; every other write is refused before it is sent."""
    import docker

    class RestartOnlyAPIClient(docker.APIClient):  # type: ignore[misc]  # the SDK is untyped
        """Reads, and ``POST /containers/{id}/restart``; nothing else that changes state."""

        def request(self, method: str | bytes, url: str | bytes, *args: Any,
                    **kwargs: Any) -> Any:
            verb = (method.decode() if isinstance(method, bytes) else method).upper()
            path = urlsplit(url.decode() if isinstance(url, bytes) else url).path
            if verb not in READ_METHODS and not (verb == "POST" and RESTART_PATH.match(path)):
                raise WriteRefused(f"refusing Docker API {verb} {path} (a remediation sends "
                                   "only POST /containers/{id}/restart)")
            return super().request(method, url, *args, **kwargs)

    return RestartOnlyAPIClient


class DockerClient:
    """One Docker engine, inspected through its API with a deadline on every call.

    Used from several threads at once: the SDK client (a ``requests.Session`` with a
    connection pool) serves concurrent requests; which SDK client is current, made on first
    use and dropped when a call is abandoned, is guarded by ``self._lock``.
    """

    def __init__(self, name: str, spec: DockerTarget, timeout_s: float, *,
                 writable: bool = False) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        # writable: restarts containers by id (remediation only); every other write refused.
        self.writable = writable
        self._api: docker.APIClient | None = None
        self._lock = threading.RLock()

    # -- connection -------------------------------------------------------------------
    def connect(self) -> None:
        """Reach the engine and agree on an API version, or raise TargetUnavailable."""
        _ = self.api

    @property
    def api(self) -> docker.APIClient:
        """The read-only SDK client, for what the methods below do not cover."""
        with self._lock:
            if self._api is None:
                self._api = self._call(self._open)
            return self._api

    def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()

    # -- reading ----------------------------------------------------------------------
    def ping(self) -> bool:
        return bool(self._call(self.api.ping))

    def version(self) -> dict[str, Any]:
        return dict(self._call(self.api.version))

    def names(self) -> list[str]:
        """Names of every container on the engine, running or not."""
        api = self.api
        rows = self._call(lambda: api.containers(all=True))
        return sorted(str(n).lstrip("/") for row in rows for n in (row.get("Names") or [])[:1])

    def container(self, name: str) -> ContainerState | None:
        """``docker inspect NAME``, or ``None`` when no container has exactly that name."""
        from docker.errors import NotFound

        api = self.api
        try:
            data = self._call(lambda: api.inspect_container(name))
        except NotFound:
            return None
        state = ContainerState.from_inspect(data)
        # The engine also resolves ID prefixes; a declared name must match a name.
        return state if state.name == name else None

    def security_inventory(self) -> list[ContainerSecurity]:
        """What the security checks judge, for every container on the engine, running or
        not (a stopped one starts again as it was created); by name."""
        from docker.errors import NotFound

        api = self.api
        rows = self._call(lambda: api.containers(all=True))
        found = []
        for ident in [str(row.get("Id", "")) for row in rows]:
            try:
                data = self._call(functools.partial(api.inspect_container, ident))
            except NotFound:
                continue  # removed between the listing and the inspect
            found.append(ContainerSecurity.from_inspect(data))
        return sorted(found, key=lambda c: c.name)

    def inspect(self, ident: str) -> dict[str, Any] | None:
        """``docker inspect`` of a container by id or name, as the engine answers it;
        ``None`` when there is no such container."""
        from docker.errors import NotFound

        api = self.api
        try:
            return dict(self._call(lambda: api.inspect_container(ident)))
        except NotFound:
            return None

    def engine_time(self) -> datetime:
        """The engine's clock (``docker info``'s SystemTime): health timestamps are its."""
        api = self.api
        now = api_time(str(self._call(api.info).get("SystemTime") or ""))
        return now if now is not None else datetime.now(UTC)

    def matching(self, declared: DeclaredContainer) -> list[ContainerState]:
        """The containers a declaration names: one, or every match of a ``name-*`` pattern."""
        if not declared.is_pattern:
            found = self.container(declared.name)
            return [] if found is None else [found]
        states = [self.container(n) for n in self.names() if fnmatchcase(n, declared.name)]
        return [s for s in states if s is not None]

    # -- writing (remediation only) ------------------------------------------------------
    def restart(self, container_id: str, *, stop_timeout_s: int) -> None:
        """``docker restart`` by full id: the process gets ``stop_timeout_s`` to stop before
        it is killed; the deadline is the client's plus that."""
        if not self.writable:
            raise WriteRefused(f"{self.name}: docker restart from a read-only client")
        from docker.errors import NotFound

        api = self.api
        try:
            self._call(lambda: api.restart(container_id, timeout=stop_timeout_s),
                       extra_s=stop_timeout_s)
        except NotFound:
            raise LookupError(f"container {container_id[:12]}: no such container (removed "
                              "since it was inspected)") from None
        except TargetUnavailable as exc:  # the engine's answer is the item's failure
            raise RuntimeError(exc.cause) from None

    # -- internals --------------------------------------------------------------------
    def _open(self) -> docker.APIClient:
        client_class = restart_only_api_client() if self.writable else read_only_api_client()
        api = client_class(base_url=self.spec.url, version="auto", timeout=self.timeout_s,
                           user_agent="opsverify")
        # Proxies from the environment must not see (or redirect) traffic to the engine.
        api.trust_env = False
        return api

    def _call(self, fn: Callable[[], T], *, extra_s: float = 0) -> T:
        """Run one API call with the whole-operation deadline (an engine that drips bytes
        cannot hold the run past it); map failures to one line."""
        from docker.errors import NotFound

        deadline = self.timeout_s + extra_s
        try:
            return run_within(fn, deadline, name=f"opsverify-docker-{self.name}")
        except DeadlinePassed:
            self._abandon()
            raise self._unavailable(f"no answer within {deadline:g} s") from None
        except (NotFound, WriteRefused):
            raise
        except Exception as exc:  # noqa: BLE001 - every other failure is one line
            if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower():
                # The SDK's own socket timeout and our deadline are the same number of seconds.
                raise self._unavailable(f"no answer within {self.timeout_s:g} s") from None
            raise self._unavailable(_cause(exc)) from None

    def _abandon(self) -> None:
        # The stuck request keeps its connection; later calls must not queue behind it.
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, f"docker {self.spec.address()}", cause)


def _cause(exc: BaseException) -> str:
    """Why the engine could not be asked, in one line, without the SDK's wrapping."""
    from docker.errors import APIError, DockerException

    text = str(exc)
    if isinstance(exc, APIError):
        return f"engine answered {exc.status_code}: {_one_line(exc.explanation or text)}"
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in text.lower():
        return "no answer within the deadline"
    for needle, cause in (
        ("No such file or directory", "socket not found (is the engine running?)"),
        ("FileNotFoundError", "socket not found (is the engine running?)"),
        ("Permission denied", "permission denied on the socket"),
        ("Connection refused", "connection refused"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "the engine closed the connection without answering"),
    ):
        if needle in text:
            return cause
    if isinstance(exc, DockerException):
        return _one_line(text.removeprefix("Error while fetching server API version: "))
    return _one_line(text) or type(exc).__name__


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= HEALTH_OUTPUT_CHARS else flat[:HEALTH_OUTPUT_CHARS - 1] + "…"
