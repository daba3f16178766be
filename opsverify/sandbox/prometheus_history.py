"""A seeded request history for Prometheus, backfilled before the server starts.

``http_requests_total{job, code}`` counters are written as OpenMetrics and turned into TSDB
blocks with ``promtool tsdb create-blocks-from openmetrics``: the SLO checks then read 30
days of history from a server that started a second ago. The resolution falls with age
(15 s, a usual scrape interval, over the last 6 hours, 5 minutes to 4 days, 1 hour beyond):
``rate()`` over a window needs samples in it, and extrapolates to the window's start only
from one sample interval away, but a 30-day window does not need 170,000. The demo's 30
days are about 3,200 samples a series; promtool writes them in a tenth of a second.

A backfilled history ends when it is written, and a 5m window would be empty minutes
later; :func:`continuation_rules` keeps each counter going from there at its last
stretch's rates, as recording rules the server evaluates every 15 s.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRIC = "http_requests"  # the counter family: samples are http_requests_total
# (up to this age in seconds, one sample every this many seconds)
RESOLUTION = ((6 * 3600, 15), (4 * 86400, 300), (math.inf, 3600))
CONTINUE_EVERY = "15s"  # the continuation rules' interval: the newest samples' spacing
# Blocks of up to 20 days (promtool's default is 2 h: 360 blocks for 30 days, 6 s).
MAX_BLOCK = "486h"


@dataclass(frozen=True)
class Stretch:
    """A part of a history: ``seconds`` long, ``rate`` requests a second, of which a share
    of ``error_share`` answer 500 and the rest 200."""

    seconds: float
    error_share: float
    rate: float = 10.0


@dataclass(frozen=True)
class RequestHistory:
    """One job's requests, its stretches oldest first, ending ``now`` (the newest sample)."""

    job: str
    stretches: tuple[Stretch, ...]

    @property
    def span_s(self) -> float:
        return sum(s.seconds for s in self.stretches)

    @property
    def has_errors(self) -> bool:
        return any(s.error_share > 0 for s in self.stretches)

    def counters(self, age_s: float) -> tuple[float, float]:
        """The code 200 and code 500 counters ``age_s`` seconds before the end (both 0 at
        the history's start, as after a process start)."""
        elapsed = self.span_s - age_s
        ok = errors = 0.0
        for stretch in self.stretches:
            part = min(max(elapsed, 0.0), stretch.seconds)
            ok += part * stretch.rate * (1 - stretch.error_share)
            errors += part * stretch.rate * stretch.error_share
            elapsed -= stretch.seconds
        return ok, errors


def sample_ages(span_s: float) -> list[float]:
    """Seconds before the end at which a sample is written, oldest first; the history's
    first instant (``span_s``) is always one."""
    ages: list[float] = []
    age = 0.0
    while age < span_s:
        ages.append(age)
        age += next(step for limit, step in RESOLUTION if age < limit)
    ages.append(span_s)
    return ages[::-1]


def openmetrics(histories: Sequence[RequestHistory], now: float) -> Iterator[str]:
    """The lines of an OpenMetrics file holding ``histories``, each series in time order."""
    yield f"# HELP {METRIC} HTTP requests by status code (a seeded history)."
    yield f"# TYPE {METRIC} counter"
    for history in histories:
        ages = sample_ages(history.span_s)
        codes = ((0, "200"), (1, "500")) if history.has_errors else ((0, "200"),)
        for index, code in codes:
            labels = f'{{code="{code}",job="{history.job}"}}'
            for age in ages:
                value = history.counters(age)[index]
                yield f"{METRIC}_total{labels} {value:.17g} {now - age:.3f}"
    yield "# EOF"


def write_openmetrics(path: Path, histories: Sequence[RequestHistory], now: float) -> None:
    path.write_text("".join(line + "\n" for line in openmetrics(histories, now)))


def backfill(storage: Path, histories: Iterable[RequestHistory], now: float) -> None:
    """Write ``histories`` ending at ``now`` (Unix time) into the TSDB at ``storage``, which
    Prometheus must not have open yet."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise FileNotFoundError("promtool not found (apt-get install prometheus)")
    source = storage.parent / f"{storage.name}-history.om"
    write_openmetrics(source, list(histories), now)
    storage.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "--quiet",
         f"--max-block-duration={MAX_BLOCK}", str(source), str(storage)],
        capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise RuntimeError(f"promtool could not backfill {storage}: {lines[-1]}")


def continuation_rules(histories: Iterable[RequestHistory], now: float) -> list[dict[str, Any]]:
    """Recording rules that extend each history past ``now`` (where the backfill ends):
    the same series, the counter growing at the last stretch's rates."""
    rules: list[dict[str, Any]] = []
    for history in histories:
        last = history.stretches[-1]
        ok, errors = history.counters(0)
        parts = [("200", ok, last.rate * (1 - last.error_share))]
        if history.has_errors:
            parts.append(("500", errors, last.rate * last.error_share))
        rules += [{"record": f"{METRIC}_total",
                   "expr": f"vector({value!r} + (time() - {now!r}) * {rate!r})",
                   "labels": {"job": history.job, "code": code}}
                  for code, value, rate in parts]
    return rules


def demo_requests(*, burning: bool) -> RequestHistory:
    """The sandbox's demo service over 30 days: 5 requests a second, 0.02 % of them 5xx;
    ``burning``: 3 % in the last hour (a burn rate of 30 against a 99.9 % SLO)."""
    day, hour = 86400.0, 3600.0
    if not burning:
        return RequestHistory("api", (Stretch(30 * day, 0.0002, rate=5),))
    return RequestHistory("api", (Stretch(30 * day - hour, 0.0002, rate=5),
                                  Stretch(hour, 0.03, rate=5)))
