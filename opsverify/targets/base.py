"""What every target section shares, and the deadline every client is built with."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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


class TargetSpec(Section):
    """Keys common to every target type. Each type's module adds its own keys."""

    type: str
    description: str = ""
    timeout_s: float | None = Field(default=None, gt=0, description="overrides settings.timeout_s")
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


def run_within(fn: Callable[[], T], seconds: float, *, name: str) -> T:
    """``fn()`` in a daemon thread; :class:`DeadlinePassed` after ``seconds``. For client
    libraries whose socket timeouts bound each read, not the whole answer: a server that
    drips its answer cannot hold the run past the deadline (the abandoned thread ends at its
    next read timeout, or when the caller closes its socket). ``fn``'s exception is raised
    here, in the caller's thread."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    if not done.wait(seconds):
        raise DeadlinePassed
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
