"""The incident-first parts of ``report.html``: the verdict line, the root causes with the
checks each explains folded under it, the targets by categories grid, failures and warnings
with their evidence tables, the one "not applicable here" line. Inline styles and one small
inline script (it moves the verdict to the top and pytest-html's versions table to the
bottom): the file must open offline, attached to a ticket."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from html import escape
from typing import Any

from opsverify.evidence import fmt_value
from opsverify.report import incident
from opsverify.report.summary import CheckResult, RunSummary

COLOURS = {"FAIL": "#c62828", "ERROR": "#6a1b9a", "WARN": "#ef6c00", "WAIVED": "#546e7a",
           "PLAN": "#1565c0", "SKIP": "#757575", "PASS": "#2e7d32"}
_CELL = "padding:2px 8px;border:1px solid #ddd;text-align:left"


def anchor(nodeid: str) -> str:
    """An HTML id for a check's entry in "Failures and warnings"."""
    return "check-" + hashlib.sha256(nodeid.encode()).hexdigest()[:12]


def verdict_line(v: incident.Verdict) -> str:
    return (f"<p id='opsverify-verdict' data-outcome='{v.outcome}' "
            f"data-down='{escape(' '.join(v.down))}' data-new='{v.new}' "
            f"style='font-size:1.4em;font-weight:bold;color:#fff;background:"
            f"{COLOURS[v.outcome]};padding:8px 12px;border-radius:4px'>{escape(v.text)}</p>")


def root_causes(causes: list[incident.RootCause], listed: set[str]) -> list[str]:
    """One ``<details>`` per cause, its checks folded under it; a check that has an entry
    in "Failures and warnings" (``listed``) links to it."""
    if not causes:
        return []
    parts = [f"<h3>Root causes ({len(causes)})</h3><div id='opsverify-causes'>"]
    for cause in causes:
        count = len(cause.checks)
        what = (f"{count} check{'s' if count != 1 else ''} not evaluated" if cause.kind == "down"
                else f"{count} check{'s' if count != 1 else ''}")
        since = f" · {escape(cause.since)}" if cause.since else ""
        items = "".join(
            f"<li data-nodeid='{escape(c.nodeid)}'>"
            + (f"<a href='#{anchor(c.nodeid)}'><code>{escape(c.nodeid)}</code></a>"
               if c.nodeid in listed else f"<code>{escape(c.nodeid)}</code>")
            + "</li>" for c in cause.checks)
        parts.append(
            f"<details class='opsverify-cause' data-kind='{cause.kind}' "
            f"data-target='{escape(cause.target)}' data-checks='{count}' "
            f"style='margin:4px 0'><summary><b style='color:{COLOURS[cause.outcome]}'>"
            f"{'DOWN' if cause.kind == 'down' else cause.outcome}</b> {escape(cause.line)} "
            f"<span style='color:#555'>({what}{since})</span></summary>"
            f"<ul>{items}</ul></details>")
    parts.append("</div>")
    return parts


def grid(g: incident.Grid) -> list[str]:
    """Targets by categories, each cell coloured by its worst outcome."""
    if not g.targets:
        return []
    head = "".join(f"<th style='{_CELL}'>{escape(c)}</th>" for c in g.categories)
    rows = []
    for target in g.targets:
        cells = []
        for column in g.categories:
            cell = g.cells.get((target, column))
            if cell is None:
                cells.append(f"<td style='{_CELL};color:#999'>—</td>")
                continue
            cells.append(
                f"<td data-target='{escape(target)}' data-category='{escape(column)}' "
                f"data-outcome='{cell.outcome}' title='{escape(cell.title())}' "
                f"style='{_CELL};background:{COLOURS[cell.outcome]};color:#fff'>"
                f"{cell.outcome} {cell.counts[cell.outcome]}/{sum(cell.counts.values())}</td>")
        rows.append(f"<tr><th style='{_CELL}'><code>{escape(target)}</code></th>"
                    f"{''.join(cells)}</tr>")
    return [f"<h3>Targets × categories</h3><table id='opsverify-grid' "
            f"style='border-collapse:collapse'><tr><th style='{_CELL}'>target</th>{head}</tr>",
            *rows, "</table>"]


def attention(run: RunSummary, causes: list[incident.RootCause]) -> list[str]:
    """Failures, then warnings, each with what is off and its evidence table; the checks of
    a target that is down are one line for that target (their cause is its line)."""
    down = {c.nodeid for cause in causes if cause.kind == "down" for c in cause.checks}
    shown = [c for c in run.ordered() if c.outcome in ("FAIL", "ERROR", "WARN")
             and c.nodeid not in down]
    downs = [cause for cause in causes if cause.kind == "down"]
    if not shown and not downs:
        return []
    parts = ["<h3>Failures and warnings</h3><ul id='opsverify-attention'>"]
    for cause in downs:
        parts.append(
            f"<li data-down='{escape(cause.target)}'><b style='color:{COLOURS['ERROR']}'>ERROR"
            f"</b> <code>{escape(cause.target)}</code>: {len(cause.checks)} checks not "
            f"evaluated: {escape(cause.line)}</li>")
    for check in shown:
        off = [m for m in check.evidence if m.get("verdict") != "PASS"]
        detail = "".join(f"<li>{escape(line(m))}</li>" for m in off)
        if not detail and check.message:
            detail = f"<li><pre>{escape(check.message[:2000])}</pre></li>"
        parts.append(
            f"<li id='{anchor(check.nodeid)}'><b style='color:{COLOURS[check.outcome]}'>"
            f"{check.outcome}</b> <code>{escape(check.nodeid)}</code><ul>{detail}</ul>"
            f"{evidence_table(check.evidence)}</li>")
    parts.append("</ul>")
    return parts


def evidence_table(evidence: list[dict[str, Any]]) -> str:
    """Every measurement of a check: name, value, expected, source, verdict."""
    if not evidence:
        return ""
    head = "".join(f"<th style='{_CELL}'>{h}</th>"
                   for h in ("name", "value", "expected", "source", "verdict"))
    rows = []
    for m in evidence:
        verdict = str(m.get("verdict", ""))
        name, item = str(m.get("name", "")), str(m.get("item") or "")
        name += f" [{item}]" if item and item not in name else ""
        rows.append(
            f"<tr data-verdict='{escape(verdict)}'><td style='{_CELL}'><code>{escape(name)}"
            f"</code></td><td style='{_CELL}'>{escape(_value(m))}</td>"
            f"<td style='{_CELL}'>{escape(str(m.get('expected') or ''))}</td>"
            f"<td style='{_CELL}'>{escape(str(m.get('source') or ''))}</td>"
            f"<td style='{_CELL};color:{COLOURS.get(verdict, '#333')}'><b>{escape(verdict)}"
            f"</b></td></tr>")
    return (f"<table class='opsverify-evidence-table' style='border-collapse:collapse;"
            f"margin:4px 0 8px'><tr>{head}</tr>{''.join(rows)}</table>")


def line(m: Mapping[str, Any]) -> str:
    """``db: sql.x = 1 runs, expected ≤ 0 runs (source) → FAIL``."""
    text = f"{m.get('target')}: {m.get('name')} = {_value(m)}"
    if m.get("expected"):
        text += f", expected {m['expected']}"
    if m.get("source"):
        text += f" ({m['source']})"
    return f"{text} → {m.get('verdict')}"


def _value(m: Mapping[str, Any]) -> str:
    value = m.get("value")
    shown = value if isinstance(value, str) else fmt_value(value)
    return f"{shown} {m['unit']}" if m.get("unit") else str(shown)


def not_applicable(checks: list[CheckResult]) -> list[str]:
    """The checks with no target of their type: one line, the list folded under it."""
    found = incident.not_applicable(checks)
    if not found:
        return []
    types = [incident.not_applicable_type(c.nodeid) or "" for c in found]
    items = "".join(f"<li><code>{escape(c.nodeid)}</code></li>" for c in found)
    return [f"<details id='opsverify-not-applicable' data-checks='{len(found)}' "
            f"style='color:#555;margin:8px 0'><summary>"
            f"{escape(_capital(incident.not_applicable_line(types)))}</summary>"
            f"<ul>{items}</ul></details>"]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# The verdict above everything, pytest-html's own "Environment" (Python and plugin versions)
# below everything: that table is rendered by pytest-html's script at the top of the body.
# pytest-html greys the body's text: what the reader came for is black.
LAYOUT = """<style>
.additional-summary h3, #opsverify-header li, #opsverify-header td,
#opsverify-header summary, #opsverify-capacity td { color: #222; }
#opsverify-header summary { cursor: pointer; }
</style>
<script>
document.addEventListener('DOMContentLoaded', function () {
  var title = document.getElementById('title');
  var verdict = document.getElementById('opsverify-verdict');
  if (title && verdict) { title.after(verdict); }
  var head = document.getElementById('environment-header');
  var table = document.getElementById('environment');
  var footer = document.querySelector('footer');
  if (head && table && footer) {
    var h2 = head.querySelector('h2');
    if (h2) { h2.textContent = 'Python and plugin versions'; }
    head.setAttribute('data-moved', 'bottom');
    footer.before(head, table);
  }
});
</script>"""
