"""What a check measured, what was expected, where the expectation came from, the verdict.

:class:`EvidenceLog` is the evidence API every check uses (through the ``evidence``
fixture). It records; the glue in ``fixtures/outcomes.py`` turns its verdict into the
test's outcome and its measurements into report properties.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from opsverify.environment import LoadedEnvironment
from opsverify.thresholds import AppliedThreshold, Threshold, Verdict, judge, resolve

_SEQUENCE = itertools.count()
_UNSET: Any = object()


@dataclass(frozen=True)
class Measurement:
    """One recorded fact: ``api: http.latency_p95_ms = 812 ms, expected ≤ 500 (crit, …)``."""

    name: str
    target: str
    value: Any
    unit: str
    verdict: Verdict
    expected: str
    source: str
    sequence: int
    # The check's item (a filesystem, a database; "" when none) and the limit the value
    # fills (100 for a percentage, max_connections…), for the run history.
    item: str = ""
    capacity: float | None = None
    # The warn and crit limits judged against (``within`` only), for a Nagios line's
    # perfdata; None when that level was not set.
    warn: float | None = None
    crit: float | None = None

    def line(self) -> str:
        value = _fmt(self.value) + (f" {self.unit}" if self.unit else "")
        text = f"{self.target}: {self.name} = {value}" if self.target else f"{self.name} = {value}"
        if self.expected:
            text += f", expected {self.expected}"
        if self.source:
            text += f" ({self.source})"
        return text if self.verdict is Verdict.PASS else f"{text} → {self.verdict.value}"

    def to_dict(self) -> dict[str, Any]:
        # By hand, not asdict(): that deep-copies, and this runs for every measurement.
        value = self.value if isinstance(self.value, int | float | str | bool) else (
            None if self.value is None else str(self.value))
        return {"name": self.name, "target": self.target, "value": value, "unit": self.unit,
                "verdict": self.verdict.value, "expected": self.expected,
                "source": self.source, "item": self.item, "capacity": self.capacity,
                "warn": self.warn, "crit": self.crit}


class EvidenceLog:
    """The measurements of one check against one target."""

    def __init__(self, env: LoadedEnvironment | None, target: str = "", item: str = "") -> None:
        self.env = env
        self.target = target
        self.item = item
        self.measurements: list[Measurement] = []

    # -- recording ---------------------------------------------------------------------
    def within(
        self,
        threshold_id: str,
        value: float,
        *,
        unit: str = "",
        default: Threshold,
        default_source: str = "check default",
        capacity: float | None = None,
        item: str | None = None,
    ) -> Measurement:
        """Judge ``value`` against warn/crit: target's > environment's > ``default``.

        ``capacity`` is the limit the value fills (``100`` for a percentage): the run history
        keeps it, and the check's trend counts the days until the value reaches it.
        ``item`` overrides the check's own item when one check measures several (each
        database of a server).
        """
        applied = self.threshold(threshold_id, default, default_source)
        verdict, limit = judge(value, applied)
        if limit is None:
            limit, level = (applied.crit, "crit") if applied.crit is not None else (
                applied.warn, "warn")
        else:
            level = "crit" if verdict is Verdict.FAIL else "warn"
        op = "≤" if applied.direction == "max" else "≥"
        expected = f"{op} {_fmt(limit)}" + (f" {unit}" if unit else "")
        source = f"{level} from {applied.source}"
        return self._add(threshold_id, value, unit, verdict, expected, source,
                         item=item, capacity=capacity, warn=applied.warn, crit=applied.crit)

    def expect(
        self,
        name: str,
        value: Any,
        *,
        equals: Any = _UNSET,
        at_most: float | None = None,
        at_least: float | None = None,
        unit: str = "",
        source: str = "",
    ) -> Measurement:
        """A hard expectation: FAIL when violated, never WARN."""
        checks: list[tuple[bool, str]] = []
        if equals is not _UNSET:
            checks.append((value == equals, f"= {_fmt(equals)}"))
        if at_most is not None:
            checks.append((_number(value) is not None and _number(value) <= at_most,  # type: ignore[operator]
                           f"≤ {_fmt(at_most)}"))
        if at_least is not None:
            checks.append((_number(value) is not None and _number(value) >= at_least,  # type: ignore[operator]
                           f"≥ {_fmt(at_least)}"))
        if not checks:
            raise TypeError("expect() needs equals=, at_most= or at_least=")
        ok = all(result for result, _ in checks)
        expected = " and ".join(text for _, text in checks)
        if unit and (at_most is not None or at_least is not None):
            expected += f" {unit}"
        return self._add(name, value, unit, Verdict.PASS if ok else Verdict.FAIL, expected, source)

    def note(self, name: str, value: Any, *, unit: str = "", capacity: float | None = None,
             item: str | None = None) -> Measurement:
        """Context worth keeping in the report that no expectation applies to.

        A numeric note named like a metric (``redis.evicted_keys``: dotted, no spaces) goes
        into the run history, as every ``within`` does.
        """
        return self._add(name, value, unit, Verdict.PASS, "", "", item=item, capacity=capacity)

    def threshold(self, threshold_id: str, default: Threshold,
                  default_source: str = "check default") -> AppliedThreshold:
        env = self.env
        if env is None:
            return resolve(threshold_id, default, target_limits=None, target_source="",
                           env_limits=None, env_source="", default_source=default_source)
        spec = env.model.targets.get(self.target)
        return resolve(
            threshold_id,
            default,
            target_limits=spec.thresholds.get(threshold_id) if spec else None,
            target_source=env.source_of("targets", self.target, "thresholds", threshold_id),
            env_limits=env.model.thresholds.get(threshold_id),
            env_source=env.source_of("thresholds", threshold_id),
            default_source=default_source,
        )

    def source_of(self, *path: str | int) -> str:
        """Where in the environment file a check's expectation was declared."""
        return self.env.source_of(*path) if self.env else "check"

    # -- reading -----------------------------------------------------------------------
    @property
    def verdict(self) -> Verdict:
        verdicts = {m.verdict for m in self.measurements}
        for worst in (Verdict.FAIL, Verdict.WARN):
            if worst in verdicts:
                return worst
        return Verdict.PASS

    def with_verdict(self, verdict: Verdict) -> list[Measurement]:
        return [m for m in self.measurements if m.verdict is verdict]

    def last_sequence(self) -> int:
        return self.measurements[-1].sequence if self.measurements else -1

    def _add(self, name: str, value: Any, unit: str, verdict: Verdict, expected: str,
             source: str, *, item: str | None = None, capacity: float | None = None,
             warn: float | None = None, crit: float | None = None) -> Measurement:
        m = Measurement(name, self.target, value, unit, verdict, expected, source,
                        next(_SEQUENCE), self.item if item is None else item,
                        None if capacity is None else float(capacity),
                        None if warn is None else float(warn),
                        None if crit is None else float(crit))
        self.measurements.append(m)
        return m


def next_sequence() -> int:
    """A point in the order of events, to tell what was measured after an action."""
    return next(_SEQUENCE)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fmt_value(value: Any) -> str:
    """A measured value as a reader wants it: ``812.3``, ``1.1``, ``300``, ``'on'``."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return repr(value) if isinstance(value, str) else str(value)


_fmt = fmt_value
