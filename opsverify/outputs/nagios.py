"""A run as one Nagios plugin result (also Icinga and Checkmk): a status line with
performance data, long output, and the plugin exit code.

``OPSVERIFY CRITICAL - 1 failed, 0 errors, 0 warnings of 112 checks in sandbox:
test_sql_check[db:no_stuck_runs] | 'checks_failed'=1;;;0 …``, then one line per failing
or warning check, then the report's path with every ``within()`` reading as perfdata
(``'postgres.connections_used_pct[db]'=12%;80;95;;100``), as the plugin API's multi-line
performance data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opsverify.outputs import check_name, evidence_line
from opsverify.report.summary import RunSummary
from opsverify.secrets import SECRETS

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Why a run says nothing about the checks, by pytest exit status.
NOT_JUDGED = {2: "the run was interrupted", 3: "opsverify hit an internal error",
              4: "usage or environment error", 5: "no check was selected"}
# The plugin guidelines' units; others are converted (h -> s) or left without a unit.
UOM = {"s": ("s", 1.0), "ms": ("ms", 1.0), "us": ("us", 1.0), "µs": ("us", 1.0),
       "%": ("%", 1.0), "B": ("B", 1.0), "bytes": ("B", 1.0), "KB": ("KB", 1.0),
       "MB": ("MB", 1.0), "TB": ("TB", 1.0), "c": ("c", 1.0), "min": ("s", 60.0),
       "h": ("s", 3600.0)}
NAMED = 5  # checks named in the status line; the rest are counted


@dataclass(frozen=True)
class PluginResult:
    code: int
    text: str  # the status line, then long output lines

    @property
    def state(self) -> str:
        return STATES[self.code]


def result(run: RunSummary, *, report: str = "", problems: tuple[str, ...] = ()) -> PluginResult:
    """The plugin result of ``run``; ``problems`` are lines about outputs that failed."""
    counts = run.counts
    failed, errors, warned = counts["FAIL"], counts["ERROR"], counts["WARN"]
    total = len(run.checks)
    env = str(run.environment.get("name", ""))
    if run.exitstatus in NOT_JUDGED or total == 0:
        why = NOT_JUDGED.get(run.exitstatus, NOT_JUDGED[5])
        code = UNKNOWN
        head = f"{why}: {failed} failed, {errors} errors, {warned} warnings of {total} " \
               f"checks in {env}"
        named: list[str] = []
    elif failed or errors or run.exitstatus == 1:
        code = CRITICAL
        named = [check_name(c.nodeid) for c in run.ordered() if c.outcome in ("FAIL", "ERROR")]
        head = f"{failed} failed, {errors} errors, {warned} warnings of {total} checks in {env}"
        if not named:  # an expired waiver fails the run: problems say which
            named = ["the run failed without a failing check"]
    else:
        code = WARNING if warned else OK
        named = [check_name(c.nodeid) for c in run.ordered() if c.outcome == "WARN"]
        head = f"{failed} failed, {errors} errors, {warned} warnings of {total} checks in {env}"
    if named:
        shown = ", ".join(named[:NAMED])
        head += f": {shown}" + (f" and {len(named) - NAMED} more" if len(named) > NAMED else "")
    perf = [_perf("checks_failed", failed), _perf("checks_errors", errors),
            _perf("checks_warnings", warned), _perf("checks_passed", counts["PASS"]),
            _perf("checks_skipped", counts["SKIP"]), _perf("checks_waived", counts["WAIVED"]),
            _perf("checks_total", total),
            _perf("duration", round((run.finished - run.started).total_seconds(), 3), "s")]
    lines = [f"OPSVERIFY {STATES[code]} - {_text(head)} | {' '.join(perf)}"]
    for check in run.ordered():
        if check.outcome not in ("FAIL", "ERROR", "WARN"):
            continue
        off = [evidence_line(m) for m in check.evidence if m.get("verdict") in ("FAIL", "WARN")]
        for line in off or [check.message.strip().splitlines()[-1] if check.message.strip()
                            else check.outcome]:
            lines.append(_text(f"{check.outcome:5} {check_name(check.nodeid)}: {line}"))
    lines += [_text(p) for p in problems]
    readings = _readings(run)
    last = f"report: {report}" if report else f"run {run.run_id}"
    lines.append(_text(last) + (f" | {' '.join(readings)}" if readings else ""))
    return PluginResult(code, SECRETS.scrub("\n".join(lines)))


def unknown(why: str) -> PluginResult:
    """The result of a run that never got to its checks (a bad option, a bad file)."""
    first, *rest = [line for line in SECRETS.scrub(why).strip().splitlines() if line] or [
        "unknown error"]
    return PluginResult(UNKNOWN, "\n".join([f"OPSVERIFY UNKNOWN - {_text(first)}",
                                            *(_text(r) for r in rest)]))


def _readings(run: RunSummary) -> list[str]:
    """Perfdata of each reading judged by ``within()`` (it has warn or crit)."""
    out: dict[str, str] = {}
    for check in run.checks:
        for m in check.evidence:
            value = m.get("value")
            if m.get("warn") is None and m.get("crit") is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            # As a check id reads: postgres.connections_used_pct[db], host.disk_used_pct[h:/]
            where = ":".join(str(p) for p in (m.get("target"), m.get("item")) if p)
            label = str(m.get("name", "")) + (f"[{where}]" if where else "")
            if label not in out:
                out[label] = _reading(label, m, float(value))
    return list(out.values())


def _reading(label: str, m: Mapping[str, Any], value: float) -> str:
    uom, scale = UOM.get(str(m.get("unit") or ""), ("", 1.0))
    at_least = str(m.get("expected", "")).startswith("≥")

    def limit(key: str) -> str:
        bound = m.get(key)
        if bound is None:
            return ""
        # "10:" alerts below 10 (a minimum); "90" above 90 (a maximum), as check_disk does.
        return f"{_num(float(bound) * scale)}:" if at_least else _num(float(bound) * scale)

    capacity = m.get("capacity")
    high = _num(float(capacity) * scale) if capacity is not None else ""
    fields = [f"{_num(value * scale)}{uom}", limit("warn"), limit("crit"), "", high]
    while fields[-1] == "":
        fields.pop()
    return f"{_quote(label)}={';'.join(fields)}"


def _perf(label: str, value: float, uom: str = "") -> str:
    return f"{_quote(label)}={_num(value)}{uom};;;0"


def _quote(label: str) -> str:
    # A label may hold anything but '=' (quoted, a quote is doubled); no spaces, so that
    # tools splitting perfdata on blanks read it too.
    return "'" + _text(label).replace("=", "_").replace("'", "''").replace(" ", "_") + "'"


def _num(value: float) -> str:
    """Plain decimal notation: perfdata parsers do not read ``1e+06``."""
    if float(value).is_integer() and abs(value) < 1e18:
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _text(line: str) -> str:
    # A '|' in the text would start the performance data.
    return line.replace("|", "/")
