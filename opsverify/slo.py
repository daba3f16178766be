"""Service level objectives: the error budget and the SRE Workbook's multiwindow burn rates.

Pure arithmetic, no I/O. An SLO of ``objective`` % over ``period`` allows a share of
``1 - objective/100`` of its requests to fail: the *error budget*. The *burn rate* of a
window is how fast that window spends it: its error ratio divided by the budget (1 spends
the budget exactly in one period). The SRE Workbook (chapter 5, "Alerting on SLOs") pages
when a long window and its short twin (1/12 of it) both burn faster than the rate that
spends ``share`` of the period's budget in the long window; its four rules for a 30-day
period are 2 % in 1 h (14.4), 5 % in 6 h (6), 10 % in 1 d (3) and 10 % in 3 d (1). The
factors are derived here, ``share * period / long window``, so other periods work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from opsverify.thresholds import Verdict

_UNITS = {"y": 365 * 86400.0, "w": 7 * 86400.0, "d": 86400.0, "h": 3600.0, "m": 60.0,
          "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")


def parse_duration(text: str) -> float:
    """Seconds in a PromQL duration: ``30d``, ``1h30m``, ``4w``, ``500ms``."""
    text = text.strip()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration: write it as PromQL does (30d, 6h, "
                         "1h30m, 4w)")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The PromQL spelling of ``seconds``: ``3d``, ``1h30m``, ``5m``."""
    left = round(seconds * 1000)
    text = ""
    for unit in ("d", "h", "m", "s", "ms"):
        size = round(_UNITS[unit] * 1000)
        count, left = divmod(left, size)
        if count:
            text += f"{count}{unit}"
    return text or "0s"


@dataclass(frozen=True)
class BurnRule:
    """One multiwindow rule: both windows burn faster than ``factor(period)``."""

    long: str  # a PromQL duration
    short: str  # 1/12 of long, so the alert resets soon after the burn stops
    share: float  # of the period's budget, spent in ``long`` at the rule's burn rate
    verdict: Literal[Verdict.FAIL, Verdict.WARN]  # the Workbook's page or ticket

    @property
    def threshold_id(self) -> str:
        return f"slo.burn_rate_{self.long}_{self.short}"

    def factor(self, period_s: float) -> float:
        """The burn rate that spends ``share`` of the budget within the long window."""
        return self.share * period_s / parse_duration(self.long)

    def describe(self, period: str) -> str:
        """``SRE Workbook: 2 % of the 30d budget in 1h``."""
        return f"SRE Workbook: {self.share * 100:g} % of the {period} budget in {self.long}"

    def value(self, burns: Mapping[str, float | None]) -> float | None:
        """The lower burn rate of the two windows (both exceed a factor exactly when it
        does), or None when either window has no traffic."""
        long, short = burns.get(self.long), burns.get(self.short)
        return None if long is None or short is None else min(long, short)


RULES = (
    BurnRule("1h", "5m", 0.02, Verdict.FAIL),
    BurnRule("6h", "30m", 0.05, Verdict.FAIL),
    BurnRule("1d", "2h", 0.10, Verdict.WARN),
    BurnRule("3d", "6h", 0.10, Verdict.WARN),
)
# Every window a rule reads, shortest first.
WINDOWS = tuple(sorted({w for r in RULES for w in (r.long, r.short)}, key=parse_duration))
LONGEST_WINDOW_S = parse_duration(WINDOWS[-1])


def error_budget(objective_pct: float) -> float:
    """The share of requests that may fail: 0.001 for 99.9 %."""
    return (100.0 - objective_pct) / 100.0


def budget_minutes(objective_pct: float, period_s: float) -> float:
    """The budget as minutes of complete outage per period: 43.2 for 99.9 % over 30 days."""
    return error_budget(objective_pct) * period_s / 60.0


@dataclass(frozen=True)
class Traffic:
    """What the SLO's two queries said about one window: the errors and total values
    (rates, counts: any unit, the same for both), None where a query returned no series."""

    errors: float | None
    total: float | None

    @property
    def has_traffic(self) -> bool:
        """A window without requests says nothing about the SLO: no data, never a pass."""
        return self.total is not None and math.isfinite(self.total) and self.total > 0

    @property
    def error_ratio(self) -> float | None:
        """errors / total; no error series at all is no error (Prometheus returns nothing
        for a rate of 5xx responses that never happened)."""
        if not self.has_traffic:
            return None
        assert self.total is not None
        errors = 0.0 if self.errors is None or math.isnan(self.errors) else self.errors
        return errors / self.total


def burn_rate(traffic: Traffic, budget: float) -> float | None:
    """How many times faster than the SLO allows the window spends the budget."""
    ratio = traffic.error_ratio
    return None if ratio is None else ratio / budget


def budget_remaining_pct(error_ratio: float, budget: float) -> float:
    """The share of the period's budget left: 100 untouched, 0 spent, below 0 overspent."""
    return (1.0 - error_ratio / budget) * 100.0


def verdict(burns: Mapping[str, float | None], period_s: float) -> Verdict | None:
    """The Workbook's verdict on the burn rate of each window (``WINDOWS``; None: no
    traffic): FAIL when a page rule fires, else None (no data) when a window has no
    traffic, else WARN when a ticket rule fires, else PASS. A page outranks missing data:
    what it saw is enough to page on."""
    fired = {r.verdict for r in RULES
             if (v := r.value(burns)) is not None and v > r.factor(period_s)}
    if Verdict.FAIL in fired:
        return Verdict.FAIL
    if any(burns.get(w) is None for w in WINDOWS):
        return None
    return Verdict.WARN if Verdict.WARN in fired else Verdict.PASS
