"""Days until full: a Theil-Sen fit of a metric's history since its last reset.

Theil-Sen (the median of the slopes between every pair of samples) ignores the odd spike
that a least-squares line would chase, and Sen's rank interval gives the 90 % interval of
the slope without assuming normal errors. A *reset* is a change of capacity (a disk was
grown) or a drop of more than 10 % of capacity (a cleanup): the fit starts after it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from opsverify.history import Sample

Z_90 = 1.6448536269514722  # the standard normal's 95th percentile: a two-sided 90 % interval
RESET_DROP = 0.10


@dataclass(frozen=True)
class Fit:
    """What the history says about the time left until ``capacity``."""

    samples: int
    span_hours: float
    latest: float
    capacity: float
    slope_per_day: float  # the point estimate, in the metric's unit a day
    slope_low: float  # the 90 % interval of the slope
    slope_high: float
    days_left: float | None  # None: no significant growth
    days_low: float | None  # the 90 % interval of days_left (high may be inf)
    days_high: float | None
    reset_at: datetime | None  # the reset the fit starts after, if any

    @property
    def growing(self) -> bool:
        return self.days_left is not None

    @property
    def pct_per_day(self) -> float:
        return 100.0 * self.slope_per_day / self.capacity if self.capacity else 0.0

    def describe(self) -> str:
        """``full in 9.2 days (90 % 7.8-11.0), +2.1 %/day, 14 samples over 13 days``."""
        span = _span_text(self.span_hours)
        rate = f"{self.pct_per_day:+.1f} %/day"
        if self.days_left is None:
            return (f"no growth ({rate}, its 90 % interval reaches ≤ 0), "
                    f"{self.samples} samples over {span}")
        if self.days_left <= 0:
            return f"full now ({_num(self.latest)} of {_num(self.capacity)}), {rate}"
        low = _num(self.days_low if self.days_low is not None else 0.0)
        high = "∞" if self.days_high is None or math.isinf(self.days_high) else _num(
            self.days_high)
        return (f"full in {_num(self.days_left)} days (90 % {low}-{high}), {rate}, "
                f"{self.samples} samples over {span}")


@dataclass(frozen=True)
class Insufficient:
    samples: int
    span_hours: float

    def describe(self) -> str:
        return (f"insufficient history: {self.samples} samples over "
                f"{self.span_hours:.1f} hours")


def since_reset(series: Sequence[Sample]) -> tuple[list[Sample], datetime | None]:
    """The samples after the last capacity change or cleanup, oldest first."""
    ordered = sorted(series, key=lambda s: s.time)
    start, reset_at = 0, None
    for i in range(1, len(ordered)):
        before, now = ordered[i - 1], ordered[i]
        changed = before.capacity != now.capacity
        cap = now.capacity or before.capacity
        cleaned = cap is not None and before.value - now.value > RESET_DROP * cap
        if changed or cleaned:
            start, reset_at = i, now.time
    return ordered[start:], reset_at


def fit(series: Sequence[Sample], *, min_samples: int = 7,
        min_span_hours: float = 24.0) -> Fit | Insufficient:
    """Fit ``series`` (which must carry a capacity) and estimate the days until full."""
    used, reset_at = since_reset(series)
    if not used:
        return Insufficient(0, 0.0)
    t0 = used[0].time
    days = [(s.time - t0).total_seconds() / 86400.0 for s in used]
    span_hours = days[-1] * 24.0
    if len(used) < min_samples or span_hours < min_span_hours:
        return Insufficient(len(used), span_hours)
    capacity = used[-1].capacity
    if capacity is None:
        raise ValueError(f"{used[-1].metric}: a trend needs a capacity")
    values = [s.value for s in used]
    slope, low, high = theil_sen(days, values)
    latest = values[-1]
    headroom = capacity - latest
    if headroom <= 0:
        return Fit(len(used), span_hours, latest, capacity, slope, low, high, 0.0, 0.0, 0.0,
                   reset_at)
    if low <= 0:
        return Fit(len(used), span_hours, latest, capacity, slope, low, high, None, None,
                   None, reset_at)
    return Fit(len(used), span_hours, latest, capacity, slope, low, high,
               headroom / slope, headroom / high, headroom / low, reset_at)


def theil_sen(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """The Theil-Sen slope and Sen's 90 % interval of it."""
    n = len(x)
    slopes = sorted((y[j] - y[i]) / (x[j] - x[i])
                    for i in range(n) for j in range(i + 1, n) if x[j] != x[i])
    if not slopes:
        raise ValueError("a slope needs two samples at different times")
    count = len(slopes)
    slope = _median(slopes)
    # Sen (1968): the ranks bounding the interval, from the variance of Kendall's S, less
    # what tied values take from it (a flat series repeats values).
    ties = sum(k * (k - 1) * (2 * k + 5) for k in (*_repeats(x), *_repeats(y)))
    c = Z_90 * math.sqrt(max(0.0, (n * (n - 1) * (2 * n + 5) - ties) / 18.0))
    lower_rank = round((count - c) / 2.0)  # 1-based rank M1
    upper_rank = round((count + c) / 2.0) + 1  # M2 + 1
    low = slopes[max(0, min(count - 1, lower_rank - 1))]
    high = slopes[max(0, min(count - 1, upper_rank - 1))]
    return slope, low, high


def _repeats(values: Sequence[float]) -> list[int]:
    counts = Counter(values)
    return [k for k in counts.values() if k > 1]


def _median(values: Sequence[float]) -> float:
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2.0


def _num(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def _span_text(hours: float) -> str:
    return f"{hours / 24.0:.0f} days" if hours >= 48 else f"{hours:.0f} hours"
