"""What every target section shares, and the deadline every client is built with."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from opsverify.thresholds import Limits


class Section(BaseModel):
    """A part of an environment file: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Cadence = Literal["daily", "weekly", "monthly", "deploy_gate"]
Category = Literal["health", "backup", "security", "capacity"]


class DeclaredCheck(Section):
    """A check written in the environment file (``sql_checks``, ``http_checks``,
    ``command_checks``): a name for its id, and its own cadence and category markers."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    cadence: list[Cadence] = Field(default_factory=lambda: list[Cadence](["daily"]))
    category: Category = "health"
    description: str = ""

    @field_validator("cadence", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def api_time(text: object) -> datetime | None:
    """A timestamp as the Docker Engine and Kubernetes APIs write it (RFC 3339, fractions
    down to nanoseconds: ``2026-12-01T03:00:00.123456789Z``) in UTC; ``None`` when absent,
    unreadable, or Go's zero time (``0001-01-01T00:00:00Z``: never)."""
    if not isinstance(text, str):
        return None
    match = _RFC3339.match(text.strip())
    if match is None or text.strip().startswith("0001-"):
        return None
    whole, fraction, zone = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    try:
        parsed = datetime.fromisoformat(f"{whole}.{micros}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:  # well-formed, but no such date (2026-02-30)
        return None
    return parsed.astimezone(UTC)


def names_or_mapping(value: Any) -> Any:
    """A section's declared objects as a mapping of name to expectations: ``[a, b]`` (each
    with the defaults), or ``{a: {...}, b: }``. For a ``mode="before"`` field validator."""
    if isinstance(value, list):
        return {str(name): {} for name in value}
    if isinstance(value, dict):
        return {name: {} if spec is None else spec for name, spec in value.items()}
    return value


class TargetSpec(Section):
    """Keys common to every target type. Each type's module adds its own keys."""

    type: str
    description: str = ""
    timeout_s: float | None = Field(default=None, gt=0, description="overrides settings.timeout_s")
    retries: int | None = Field(default=None, ge=0, le=5, description="overrides settings.retries")
    thresholds: dict[str, Limits] = Field(default_factory=dict)
    scratch: bool = False

    def address(self) -> str:
        """Where the target lives, for messages: host and port, never credentials."""
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Values of this section that must never appear in output (passwords, DSNs)."""
        return []


@dataclass(frozen=True)
class Deadline:
    """A client-side budget for one whole probe: connect, send, read."""

    seconds: float
    started: float

    @classmethod
    def start(cls, seconds: float) -> Deadline:
        return cls(seconds, time.monotonic())

    def remaining(self) -> float:
        return max(0.0, self.seconds - (time.monotonic() - self.started))

    def expired(self) -> bool:
        return self.remaining() <= 0.0


T = TypeVar("T")


class DeadlinePassed(Exception):
    """:func:`run_within` gave up waiting (distinct from a ``TimeoutError`` of ``fn``'s)."""


class _Calls:
    """Daemon threads for :func:`run_within`, reused from call to call (a new thread per
    request cost more than the request on loopback) and made only when none is idle.
    Daemons, unlike an executor's threads: an abandoned call still dripping must not hold
    the interpreter's exit."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def run(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._work, name="opsverify-call", daemon=True).start()
        self._tasks.put(task)

    def _work(self) -> None:
        while True:
            self._tasks.get()()
            with self._lock:
                self._idle += 1


_CALLS = _Calls()


def run_within(fn: Callable[[], T], seconds: float, *, name: str) -> T:
    """``fn()`` on another (reused, daemon) thread; :class:`DeadlinePassed` after
    ``seconds``. For client libraries whose socket timeouts bound each read, not the whole
    answer: a server that drips its answer cannot hold the run past the deadline (the
    abandoned call ends at its next read timeout, or when the caller closes its socket).
    ``fn``'s exception is raised here, in the caller's thread; ``name`` says what it was."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def task() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    _CALLS.run(task)
    if not done.wait(seconds):
        raise DeadlinePassed(name)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
