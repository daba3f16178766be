"""A run as Prometheus metrics: the node_exporter textfile collector's file, and a push to
a Pushgateway, both from one collector (prometheus_client writes the exposition format).

- ``opsverify_check_status{env,target,check,category}``: 0 PASS, 1 WARN, 2 FAIL, 3 ERROR.
  SKIP and PLAN checks are not exported (nothing was judged); a WAIVED check is
  ``opsverify_check_waived`` instead, so that an alert rule on the status stays quiet.
- ``opsverify_check_value{env,target,check,category,metric,unit,item}``: every numeric
  measurement named like a metric id (dotted: ``host.disk_used_pct``), as the history keeps.
- ``opsverify_checks{env,outcome}``, ``opsverify_last_run_timestamp_seconds{env}``,
  ``opsverify_last_run_duration_seconds{env}``, ``opsverify_last_run_exit_status{env}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, push_to_gateway, write_to_textfile
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from opsverify.outputs import OutputError, category_of, check_name, reason, within_deadline
from opsverify.report.summary import OUTCOMES, RunSummary
from opsverify.secrets import SECRETS

JOB = "opsverify"
STATUS = {"PASS": 0, "WARN": 1, "FAIL": 2, "ERROR": 3}
CHECK_LABELS = ["env", "target", "check", "category"]
STATUS_HELP = ("Outcome of each check in the last run: 0 pass, 1 warn, 2 fail, 3 error. "
               "SKIP and PLAN checks are not exported; WAIVED ones are in "
               "opsverify_check_waived.")


class RunCollector(Collector):
    """The metrics of one run; ``categories`` maps a nodeid to its category marker."""

    def __init__(self, run: RunSummary, categories: Mapping[str, str]) -> None:
        self.run = run
        self.categories = categories

    def collect(self) -> Iterator[Metric]:
        run, env = self.run, _label(str(self.run.environment.get("name", "")))
        status = GaugeMetricFamily("opsverify_check_status", STATUS_HELP, labels=CHECK_LABELS)
        waived = GaugeMetricFamily(
            "opsverify_check_waived",
            "1 for a check that failed under an unexpired waiver in the last run.",
            labels=CHECK_LABELS)
        values = GaugeMetricFamily(
            "opsverify_check_value",
            "A numeric measurement of a check in the last run (metric: its id, as in the "
            "run history; unit as the check recorded it; item: the filesystem, database…).",
            labels=[*CHECK_LABELS, "metric", "unit", "item"])
        # Two modules may hold a test of one name for one target: one series each, the
        # worst status and the first reading.
        worst: dict[tuple[str, ...], int] = {}
        waivers: set[tuple[str, ...]] = set()
        readings: dict[tuple[str, ...], float] = {}
        for check in run.checks:
            labels: tuple[str, ...] = (env, _label(check.target), _label(check_name(check.nodeid)),
                      category_of(check.nodeid, self.categories))
            if check.outcome in STATUS:
                worst[labels] = max(worst.get(labels, 0), STATUS[check.outcome])
            elif check.outcome == "WAIVED":
                waivers.add(labels)
            for value_labels, value in _values(check.evidence, labels):
                readings.setdefault(value_labels, value)
        for key, code in worst.items():
            status.add_metric(list(key), code)
        for key in sorted(waivers - worst.keys()):
            waived.add_metric(list(key), 1)
        for key, value in readings.items():
            values.add_metric(list(key), value)
        yield status
        yield waived
        yield values
        counts = GaugeMetricFamily("opsverify_checks", "Checks of the last run by outcome.",
                                   labels=["env", "outcome"])
        for outcome in OUTCOMES:
            counts.add_metric([env, outcome], run.counts[outcome])
        yield counts
        yield _gauge("opsverify_last_run_timestamp_seconds",
                     "When the last run finished, in seconds since the epoch.", env,
                     run.finished.timestamp())
        yield _gauge("opsverify_last_run_duration_seconds", "How long the last run took.",
                     env, (run.finished - run.started).total_seconds())
        yield _gauge("opsverify_last_run_exit_status",
                     "The last run's exit status: 0 all passed (warnings allowed), 1 a check "
                     "failed or errored, 2 interrupted, 3 internal error, 5 nothing selected.",
                     env, run.exitstatus)


def registry(run: RunSummary, categories: Mapping[str, str]) -> CollectorRegistry:
    """A registry holding only this run's metrics."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(RunCollector(run, categories))
    return reg


def write_textfile(path: Path, run: RunSummary, categories: Mapping[str, str]) -> None:
    """Write the metrics for node_exporter's textfile collector, atomically: a temporary
    file in the same directory renamed over ``path``, so a scrape never reads half."""
    try:
        write_to_textfile(str(path), registry(run, categories))
    except OSError as exc:
        raise OutputError(f"prometheus textfile {path}: {exc.strerror or exc}") from None


def push(url: str, run: RunSummary, categories: Mapping[str, str],
         deadline_s: float) -> None:
    """PUT the metrics to a Pushgateway under ``job="opsverify", env=<env>``: the group is
    replaced whole, so a check that is no longer run does not linger."""
    env = str(run.environment.get("name", ""))
    reg = registry(run, categories)
    shown = SECRETS.scrub(url)
    try:
        within_deadline(lambda: push_to_gateway(url, job=JOB, registry=reg,
                                                grouping_key={"env": env},
                                                timeout=deadline_s + 1),
                        deadline_s, f"pushgateway {shown}")
    except OutputError:
        raise
    except Exception as exc:  # noqa: BLE001 - urllib raises many kinds; one line says which
        raise OutputError(f"pushgateway {shown}: {_reason(exc)}") from None


def _values(evidence: list[dict[str, Any]],
            labels: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], float]]:
    for m in evidence:
        name, value = str(m.get("name", "")), m.get("value")
        if "." not in name or " " in name or isinstance(value, bool):
            continue
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue
        yield (*labels, _label(name), _label(str(m.get("unit") or "")),
               _label(str(m.get("item") or ""))), float(value)


def _gauge(name: str, documentation: str, env: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["env"])
    gauge.add_metric([env], value)
    return gauge


def _label(value: str) -> str:
    return SECRETS.scrub(value)


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        return SECRETS.scrub(reason(exc))
    try:  # an HTTPError: the Pushgateway's own words say why
        body = exc.read().decode("utf-8", "replace").strip()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        body = ""
    text = f"HTTP {code} {getattr(exc, 'reason', '')}".rstrip()
    return SECRETS.scrub(text + (f": {body.splitlines()[0][:300]}" if body else ""))
