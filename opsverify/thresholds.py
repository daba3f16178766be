"""Warn/crit thresholds, where they come from, and what a measurement means against them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

Direction = Literal["max", "min"]


class Limits(BaseModel):
    """Thresholds as written in an environment file: ``{warn: 85, crit: 95}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warn: float | None = None
    crit: float | None = None

    @model_validator(mode="after")
    def _one_at_least(self) -> Limits:
        if self.warn is None and self.crit is None:
            raise ValueError("give warn, crit or both")
        return self


@dataclass(frozen=True)
class Threshold:
    """A check's default: ``Threshold(warn=80, crit=95)`` for "at most", ``direction="min"``
    for "at least" (days left on a certificate)."""

    warn: float | None = None
    crit: float | None = None
    direction: Direction = "max"


@dataclass(frozen=True)
class AppliedThreshold:
    """The threshold that applied to a measurement and where it came from."""

    threshold_id: str
    warn: float | None
    crit: float | None
    direction: Direction
    source: str

    def describe(self) -> str:
        op = "≤" if self.direction == "max" else "≥"
        parts = []
        if self.warn is not None:
            parts.append(f"warn {op} {_num(self.warn)}")
        if self.crit is not None:
            parts.append(f"crit {op} {_num(self.crit)}")
        return ", ".join(parts)


class Verdict(StrEnum):
    PASS = "PASS"  # noqa: S105 - an outcome, not a password
    WARN = "WARN"
    FAIL = "FAIL"


def resolve(
    threshold_id: str,
    default: Threshold,
    *,
    target_limits: Limits | None,
    target_source: str,
    env_limits: Limits | None,
    env_source: str,
    default_source: str = "check default",
) -> AppliedThreshold:
    """Precedence: the target's own > the environment's > the check's default."""
    for limits, source in ((target_limits, target_source), (env_limits, env_source)):
        if limits is not None:
            return AppliedThreshold(
                threshold_id, limits.warn, limits.crit, default.direction, source
            )
    return AppliedThreshold(
        threshold_id, default.warn, default.crit, default.direction, default_source
    )


def judge(value: float, applied: AppliedThreshold) -> tuple[Verdict, float | None]:
    """Return the verdict and the limit that decided it (``None`` for PASS)."""
    if _beyond(value, applied.crit, applied.direction):
        return Verdict.FAIL, applied.crit
    if _beyond(value, applied.warn, applied.direction):
        return Verdict.WARN, applied.warn
    return Verdict.PASS, None


def _beyond(value: float, limit: float | None, direction: Direction) -> bool:
    if limit is None:
        return False
    return value > limit if direction == "max" else value < limit


def _num(value: float) -> str:
    return f"{value:g}"
