"""What every target section shares, and the deadline every client is built with."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from opsverify.thresholds import Limits


class Section(BaseModel):
    """A part of an environment file: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
