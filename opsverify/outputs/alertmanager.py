"""A run as Alertmanager alerts (API v2): one alert per failing check, resolved when fixed.

Routing to Slack, PagerDuty or mail is Alertmanager's job; this only says what is wrong.

- FAIL and ERROR checks fire ``OpsverifyCheckFailed`` with labels ``env``, ``target``,
  ``check``, ``category`` and ``severity="critical"``; the outcome, the failing evidence
  (or the error line), when the failure began and the report are annotations, not labels,
  so that FAIL turning into ERROR stays one alert. WARN is not an alert: it is in the
  textfile (status 1) and the Nagios result (WARNING).
- A firing alert ends ``ttl`` after the run unless the next run says it again, so that an
  alert of a suite that stopped running expires instead of lasting for ever; Alertmanager's
  own default (``resolve_timeout``, 5 minutes) would end it long before the next run.
- A check that is ``fixed`` since the previous run is posted with ``endsAt`` = now: resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import requests

from opsverify.outputs import (
    OutputError,
    category_of,
    check_name,
    evidence_line,
    reason,
    within_deadline,
)
from opsverify.report.summary import CheckResult, RunSummary
from opsverify.secrets import SECRETS

ALERTNAME = "OpsverifyCheckFailed"
FIRING = ("FAIL", "ERROR")
MAX_DESCRIPTION = 4000


def alerts(run: RunSummary, categories: Mapping[str, str], *, now: datetime,
           ttl: timedelta, report: str = "") -> list[dict[str, Any]]:
    """The alerts to post for ``run``: firing ones for FAIL and ERROR, resolved ones for
    checks fixed since the previous run."""
    env = str(run.environment.get("name", ""))
    out: list[dict[str, Any]] = []
    for check in run.ordered():
        labels = _labels(check, env, categories)
        name = labels["check"]
        annotations = {"nodeid": SECRETS.scrub(check.nodeid)}
        if report:
            annotations["report"] = SECRETS.scrub(report)
        if check.outcome in FIRING:
            verb = "failed" if check.outcome == "FAIL" else "could not be evaluated"
            annotations |= {
                "summary": f"{name} {verb} in {env}",
                "description": _description(check),
                "outcome": check.outcome,
                "failing_since": check.failing_since or "",
            }
            starts = _parse(check.failing_since) or run.started
            out.append({"labels": labels, "annotations": annotations,
                        "startsAt": _iso(min(starts, now)), "endsAt": _iso(now + ttl)})
        elif check.since_last == "fixed":
            annotations |= {"summary": f"{name} is fixed in {env} ({check.outcome})",
                            "outcome": check.outcome}
            out.append({"labels": labels, "annotations": annotations,
                        "startsAt": _iso(now), "endsAt": _iso(now)})
    return out


def post(url: str, batch: list[dict[str, Any]], deadline_s: float) -> None:
    """POST ``batch`` to ``<url>/api/v2/alerts`` within ``deadline_s``."""
    endpoint = url.rstrip("/") + "/api/v2/alerts"
    shown = SECRETS.scrub(endpoint)

    def send() -> None:
        # The library's timeout only backs up the deadline: it bounds each socket read.
        response = requests.post(endpoint, json=batch, timeout=deadline_s + 1)
        if response.status_code >= 300:
            body = response.text.strip()
            why = f": {SECRETS.scrub(body.splitlines()[0][:300])}" if body else ""
            raise OutputError(f"alertmanager {shown}: HTTP {response.status_code} "
                              f"{response.reason}{why}")

    try:
        within_deadline(send, deadline_s, f"alertmanager {shown}")
    except OutputError:
        raise
    except requests.RequestException as exc:
        raise OutputError(f"alertmanager {shown}: {SECRETS.scrub(reason(exc))}") from None


def _labels(check: CheckResult, env: str, categories: Mapping[str, str]) -> dict[str, str]:
    return {"alertname": ALERTNAME, "env": SECRETS.scrub(env),
            "target": SECRETS.scrub(check.target),
            "check": SECRETS.scrub(check_name(check.nodeid)),
            "category": category_of(check.nodeid, categories), "severity": "critical"}


def _description(check: CheckResult) -> str:
    """What is off: the failing evidence lines, else the check's message (an ERROR's one
    line, an assertion's last lines)."""
    lines = [evidence_line(m) for m in check.evidence if m.get("verdict") == "FAIL"]
    text = "\n".join(lines) if lines else check.message
    return SECRETS.scrub(text)[-MAX_DESCRIPTION:]


def _parse(stamp: str | None) -> datetime | None:
    if not stamp:
        return None
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
