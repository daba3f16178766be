"""What a prometheus target declares for capacity and SLOs, and what its queries answer.

``queries:`` are instant PromQL queries judged against their own thresholds; ``slos:`` are
availability objectives whose errors and total the client reads per window
(:meth:`opsverify.targets.prometheus.PrometheusClient.slo_reading`) and :mod:`opsverify.slo`
turns into an error budget and burn rates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, field_validator, model_validator

from opsverify import slo
from opsverify.errors import TargetUnavailable
from opsverify.targets.base import Section
from opsverify.thresholds import Limits, Threshold


class NoData(TargetUnavailable):
    """The server answered, with nothing to judge: a query that returned no series, a
    window without traffic. An ERROR, never a PASS."""


class PromQuery(Section):
    """``{name, query, unit, thresholds: {warn, crit}, direction}``: one instant query whose
    value is judged as threshold ``promql.<name>``."""

    name: str = Field(pattern=r"^[a-z0-9_]+$")
    query: str = Field(min_length=1)
    unit: str = ""
    thresholds: Limits
    # above: going above the thresholds is bad (an error rate); below: going below them
    # is (requests served, replicas up).
    direction: Literal["above", "below"] = "above"
    description: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> PromQuery:
        warn, crit = self.thresholds.warn, self.thresholds.crit
        if warn is not None and crit is not None and (
                warn > crit if self.direction == "above" else warn < crit):
            side = "at most" if self.direction == "above" else "at least"
            raise ValueError(f"direction {self.direction}: warn must be {side} crit")
        return self

    @property
    def threshold(self) -> Threshold:
        return Threshold(warn=self.thresholds.warn, crit=self.thresholds.crit,
                         direction="max" if self.direction == "above" else "min")


class Slo(Section):
    """An availability SLO: ``errors`` / ``total`` (PromQL, ``$window`` where the range
    goes) must stay under ``100 - objective`` % over ``period``."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    objective: float = Field(gt=0, lt=100)  # percent
    period: str = "30d"
    errors: str
    total: str
    description: str = ""

    @field_validator("period")
    @classmethod
    def _period(cls, value: str) -> str:
        if slo.parse_duration(value) < slo.LONGEST_WINDOW_S:
            raise ValueError(f"{value!r} is shorter than {slo.WINDOWS[-1]}, the longest "
                             "burn-rate window")
        return value

    @field_validator("errors", "total")
    @classmethod
    def _windowed(cls, value: str) -> str:
        if "$window" not in value:
            raise ValueError("write $window where the range goes: "
                             "sum(rate(http_requests_total[$window]))")
        return value

    @property
    def period_s(self) -> float:
        return slo.parse_duration(self.period)

    def promql(self, part: Literal["errors", "total"], window: str) -> str:
        return (self.errors if part == "errors" else self.total).replace("$window", window)


def unique_names(items: Sequence[PromQuery | Slo], key: str) -> None:
    names = [item.name for item in items]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:
        raise ValueError(f"{key} names must be unique: {', '.join(doubles)}")


@dataclass(frozen=True)
class Series:
    """One series of an instant query's answer (a scalar is one without labels)."""

    labels: Mapping[str, str]
    value: float

    @property
    def label(self) -> str:
        """``http_requests_total{code="500", job="api"}``, as PromQL would print it."""
        shown = ", ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items())
                          if k != "__name__")
        return f"{self.labels.get('__name__', '')}{{{shown}}}"


@dataclass(frozen=True)
class QueryAnswer:
    """An instant query's answer; ``refused`` is the server's one-line reason when it
    rejected the query itself (``bad_data: 1:5: parse error: ...``)."""

    result_type: str  # vector, scalar, matrix, string
    series: tuple[Series, ...] = ()
    refused: str = ""

    def total(self) -> float | None:
        """The sum of the series' values (NaN ones left out); None when there is none."""
        values = [s.value for s in self.series if not math.isnan(s.value)]
        return math.fsum(values) if values else None


@dataclass(frozen=True)
class SloReading:
    """An SLO's errors and total per window, read at one evaluation time; ``refused``
    names the first query the server rejected (the rest are not read)."""

    at: float
    traffic: Mapping[str, slo.Traffic] = field(default_factory=dict)
    refused: str = ""
