"""Docker fixes, each enabled per target under ``remediation:`` in its section:

    remediation:
      restart_unhealthy: {unhealthy_for_s: 300}

The runbook's ``docker compose restart``, made safe: only declared containers whose
HEALTHCHECK has reported ``unhealthy`` for longer than ``unhealthy_for_s``, each restarted
by its id (a container recreated under the same name is another one). The action takes a
write-capable :class:`~opsverify.targets.docker.DockerClient` (``writable=True``: GET, HEAD
and ``POST /containers/{id}/restart`` only), which exists only inside an allowed destructive
check (``docker_admin``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from opsverify.remediation import Item
from opsverify.targets.base import Section, api_time

if TYPE_CHECKING:
    from opsverify.targets.docker import ContainerState, DockerClient

# Docker's defaults for a HEALTHCHECK that leaves them out (ns, as the Engine API says).
DEFAULT_RETRIES = 3
DEFAULT_INTERVAL_NS = 30 * 10**9
DEFAULT_TIMEOUT_NS = 30 * 10**9
# How long `docker restart` waits for the process to stop before it kills it.
STOP_TIMEOUT_S = 10
# The longest the re-check waits for a restarted container's first health probe.
HEALTH_WAIT_MAX_S = 120.0
POLL_S = 0.25


class RestartUnhealthySettings(Section):
    # A declared container whose HEALTHCHECK has said `unhealthy` for longer than this.
    unhealthy_for_s: float = Field(gt=0)


class DockerRemediation(Section):
    """``remediation:`` of a docker target: an action runs only where it is listed."""

    restart_unhealthy: RestartUnhealthySettings | None = None


@dataclass(frozen=True)
class ContainerRef:
    """What identifies a container across plan and apply: its full id (a name is reused by
    the next ``docker compose up``), and its start, which a restart changes."""

    id: str
    name: str
    started_at: str


@dataclass(frozen=True)
class Unhealthy:
    """What ``docker inspect`` says of one container's health, as the action judges it."""

    ref: ContainerRef
    status: str  # running, exited…
    health: str | None  # None: no HEALTHCHECK
    failing_streak: int
    since: datetime | None  # when it turned unhealthy (at the latest), None: unknown
    exact: bool  # since is the probe that turned it; else the oldest failure still logged
    last_output: str

    @classmethod
    def from_inspect(cls, data: dict[str, Any]) -> Unhealthy:
        state = data.get("State") or {}
        health = state.get("Health") or None
        log = [entry for entry in (health or {}).get("Log") or [] if isinstance(entry, dict)]
        streak = int((health or {}).get("FailingStreak") or 0)
        config = (data.get("Config") or {}).get("Healthcheck") or {}
        retries = int(config.get("Retries") or 0) or DEFAULT_RETRIES
        since, exact = _unhealthy_since(log, streak, retries)
        output = " ".join(str(log[-1].get("Output") or "").split()) if log else ""
        return cls(
            ref=ContainerRef(str(data.get("Id", "")), str(data.get("Name", "")).lstrip("/"),
                             str(state.get("StartedAt") or "")),
            status=str(state.get("Status", "unknown")),
            health=None if health is None else str(health.get("Status", "unknown")),
            failing_streak=streak, since=since, exact=exact, last_output=output[:160],
        )

    def unhealthy_for(self, now: datetime) -> float | None:
        return None if self.since is None else max(0.0, (now - self.since).total_seconds())

    def describe(self, now: datetime) -> str:
        """``unhealthy, failing streak 7, since 2026-…Z (12 s), last probe: …``."""
        seconds = self.unhealthy_for(now)
        when = "since an unknown time" if self.since is None else (
            f"{'since' if self.exact else 'at least since'} "
            f"{self.since:%Y-%m-%dT%H:%M:%SZ} ({seconds:.0f} s)")
        return (f"{self.health}, failing streak {self.failing_streak}, {when}, started at "
                f"{self.ref.started_at[:19]}Z, last probe: {self.last_output or 'no output'}")


def _unhealthy_since(log: list[dict[str, Any]], streak: int,
                     retries: int) -> tuple[datetime | None, bool]:
    """When the health turned ``unhealthy``: the end of the ``retries``-th failure of the
    current streak, if the log (the last five probes) still holds it; else the oldest
    failure it holds, a lower bound of how long."""
    if streak < 1 or not log:
        return None, False
    back = streak - retries + 1  # how many probes from the end the turning one is
    if 1 <= back <= len(log):
        return api_time(str(log[-back].get("End") or "")), True
    oldest = log[-min(streak, len(log))]
    return api_time(str(oldest.get("End") or "")), False


def health_wait_s(data: dict[str, Any]) -> float:
    """How long a restarted container may take to report its first probe: its start period,
    an interval and a probe's timeout, with slack; at most :data:`HEALTH_WAIT_MAX_S`."""
    config = (data.get("Config") or {}).get("Healthcheck") or {}
    interval = int(config.get("Interval") or 0) or DEFAULT_INTERVAL_NS
    timeout = int(config.get("Timeout") or 0) or DEFAULT_TIMEOUT_NS
    start_period = int(config.get("StartPeriod") or 0)
    return min(HEALTH_WAIT_MAX_S, (start_period + interval + timeout) / 1e9 + 5.0)


class RestartUnhealthy:
    """The runbook's "restart the unhealthy container": declared containers (``health:
    none`` ones excluded) that run and whose HEALTHCHECK says ``unhealthy`` for longer than
    ``unhealthy_for_s`` by the engine's clock, each restarted by id, its new start read back."""

    name: ClassVar[str] = "restart_unhealthy"

    def __init__(self, client: DockerClient, settings: RestartUnhealthySettings) -> None:
        self.client = client
        self.target = client.name
        self.unhealthy_for_s = settings.unhealthy_for_s

    def considered(self) -> list[str]:
        """Names of the containers the declarations match (the population a percentage
        limit is taken of): every container with a HEALTHCHECK that a check judges."""
        names = self.client.names()
        found: list[str] = []
        for declared in self.client.spec.declared():
            if declared.health == "none":
                continue
            for name in names:
                if name not in found and (fnmatchcase(name, declared.name)
                                          if declared.is_pattern else name == declared.name):
                    found.append(name)
        return sorted(found)

    def select(self) -> list[Item]:
        now = self.client.engine_time()
        items = []
        for name in self.considered():
            data = self.client.inspect(name)
            if data is None:
                continue  # removed since it was listed
            found = Unhealthy.from_inspect(data)
            if found.ref.name != name or found.status != "running" or found.health != "unhealthy":
                continue
            seconds = found.unhealthy_for(now)
            if seconds is None or seconds <= self.unhealthy_for_s:
                continue
            items.append(Item(identity=f"container {found.ref.id[:12]} {found.ref.name}",
                              before=found.describe(now), ref=found.ref))
        return items

    def drift(self, item: Item) -> str | None:
        ref: ContainerRef = item.ref
        data = self.client.inspect(ref.id)
        if data is None:
            return "the container was removed"
        now = self.client.engine_time()
        found = Unhealthy.from_inspect(data)
        if found.ref.started_at != ref.started_at:
            return f"restarted since the plan (started at {found.ref.started_at[:19]}Z)"
        if found.status != "running":
            return f"no longer running ({found.status})"
        if found.health != "unhealthy":
            return f"{found.health} again" if found.health == "healthy" else (
                f"no longer unhealthy ({found.health})")
        seconds = found.unhealthy_for(now)
        if seconds is None or seconds <= self.unhealthy_for_s:
            return f"unhealthy for no longer than {self.unhealthy_for_s:g} s now"
        return None

    def apply(self, item: Item) -> str:
        ref: ContainerRef = item.ref
        self.client.restart(ref.id, stop_timeout_s=STOP_TIMEOUT_S)
        # The engine answers 204 once it started the process again: success is a new start
        # of the same container, read back from the engine.
        data = self.client.inspect(ref.id)
        if data is None:
            raise RuntimeError(f"container {ref.id[:12]} is gone after the restart")
        after = Unhealthy.from_inspect(data)
        if after.ref.started_at == ref.started_at:
            raise RuntimeError(f"container {ref.id[:12]} was not restarted (StartedAt "
                               f"unchanged: {ref.started_at[:19]}Z)")
        if after.status != "running":
            raise RuntimeError(f"container {ref.id[:12]} is {after.status} after the restart")
        return (f"restarted: started at {after.ref.started_at[:19]}Z, "
                f"health {after.health or 'none'}")


@dataclass(frozen=True)
class Settled:
    """A container's state once its health settled after a restart, and how long that took."""

    state: ContainerState | None
    waited_s: float
    bound_s: float


def await_health(client: DockerClient, name: str) -> Settled:
    """Read ``name`` until its health is no longer ``starting`` (a restarted container's
    HEALTHCHECK has not run yet), within :func:`health_wait_s` of its configuration."""
    data = client.inspect(name)
    bound = health_wait_s(data) if data is not None else 0.0
    started = time.monotonic()
    while True:
        state = client.container(name)
        waited = time.monotonic() - started
        if state is None or state.health != "starting" or waited >= bound:
            return Settled(state, waited, bound)
        time.sleep(POLL_S)
