"""The head of ``report.html``: the verdict and root causes (``incident_html.py``), who,
what, when, the counts, what changed, failures and warnings with their evidence. Inline
styles: the file must open offline, attached to a ticket."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from opsverify.backup import levels
from opsverify.report import incident, incident_html
from opsverify.report.incident_html import COLOURS
from opsverify.report.summary import INTERRUPTED, RunSummary


def header(run: RunSummary, categories: Mapping[str, str] | None = None) -> list[str]:
    """Incident first: the verdict, the root causes, the grid; then who, what, when and the
    counts; what changed; failures and warnings with evidence; the rest. ``categories``:
    nodeid -> the category its markers give it (else its folder says)."""
    causes = incident.root_causes(run.checks)
    listed = {c.nodeid for c in run.checks if c.outcome in ("FAIL", "ERROR", "WARN")}
    env = run.environment
    rows = [
        ("Environment", f"{env['name']} — {env.get('description') or ''}"),
        ("Environment file", f"{env['path']} (chosen by {env['chosen_by']})"),
        ("Run by", f"{run.operator} on {run.host}"),
        ("When", f"{run.started:%Y-%m-%d %H:%M:%S} UTC → {run.finished:%H:%M:%S} UTC"),
        ("Suite revision", run.revision),
        ("Exit status", str(run.exitstatus)),
        ("Flaky", run.flaky_line()),
    ]
    if env.get("sandbox_faults"):
        rows.append(("Injected faults", ", ".join(env["sandbox_faults"])))
    if run.exitstatus == INTERRUPTED:
        rows.insert(0, ("Interrupted", "stopped early (Ctrl-C or SIGTERM): below are the "
                                       "checks that ran"))
    table = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{escape(k)}</th>"
                    f"<td>{escape(v)}</td></tr>" for k, v in rows)
    badges = " ".join(
        f"<span style='background:{COLOURS[o]};color:#fff;padding:2px 8px;border-radius:3px;"
        f"margin-right:4px'>{o} {n}</span>" for o, n in run.counts.items() if n)
    parts = ["<div id='opsverify-header'>",
             incident_html.verdict_line(incident.verdict(run, causes)),
             *incident_html.root_causes(causes, listed - _down(causes)),
             *incident_html.grid(incident.grid(run.checks, categories or {})),
             f"<h2>opsverify run</h2><table>{table}</table><p>{badges}</p>"]
    parts += since_last(run)
    parts += incident_html.attention(run, causes)
    parts += incident_html.not_applicable(run.checks)
    parts += backups(run)
    if run.audit:
        parts.append("<h3>Changes applied (audit)</h3><ul id='opsverify-audit'>")
        for entry in run.audit:
            after = f" → {entry.get('after', '')}" if entry.get("after") else ""
            parts.append(
                f"<li>{escape(entry.get('time', ''))} {escape(entry.get('operator', ''))}: "
                f"{escape(entry.get('target', ''))} {escape(entry.get('action', ''))} "
                f"{escape(entry.get('identity', ''))} ({escape(entry.get('before', ''))}): "
                f"{escape(entry.get('result', ''))}{escape(after)} "
                f"[plan {escape(entry.get('plan_id', ''))}]</li>")
        parts.append("</ul>")
    plans = [c for c in run.checks if c.plan]
    if plans:
        parts.append("<h3>Planned changes (--plan, nothing applied)</h3><ul>")
        parts += [f"<li><code>{escape(c.nodeid)}</code>: {escape(p)}</li>"
                  for c in plans for p in c.plan]
        parts.append("</ul>")
    parts.append("</div>")
    parts.append(incident_html.LAYOUT)
    return parts


def _down(causes: list[incident.RootCause]) -> set[str]:
    return {c.nodeid for cause in causes if cause.kind == "down" for c in cause.checks}


def since_last(run: RunSummary) -> list[str]:
    """New failures first, then still failing (since when), then fixed."""
    if run.previous_run is None:
        return ["<p id='opsverify-since-last'>No earlier run of this environment to compare "
                "with.</p>"]
    groups = [("new", "New failures", COLOURS["FAIL"]),
              ("still", "Still failing", COLOURS["ERROR"]),
              ("fixed", "Fixed", COLOURS["PASS"])]
    parts = [f"<div id='opsverify-since-last'><h3>Since the last run "
             f"({escape(run.previous_run['started'])})</h3>"]
    for kind, title, colour in groups:
        found = [c for c in run.ordered() if c.since_last == kind]
        if not found:
            continue
        items = "".join(
            f"<li data-since='{kind}'><code>{escape(c.nodeid)}</code> {escape(c.outcome)}"
            + (f", failing since {escape(c.failing_since or '')}" if kind == "still" else "")
            + "</li>" for c in found)
        # A long list (a target down) is folded: the root causes above already say it.
        shown = " open" if len(found) <= 10 else ""
        parts.append(f"<details data-since-group='{kind}'{shown}><summary><b style='color:"
                     f"{colour}'>{title} ({len(found)})</b></summary><ul>{items}</ul></details>")
    parts.append("</div>")
    return parts


def evidence_block(lines: list[str]) -> str:
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f"<div class='opsverify-evidence'><b>Evidence</b><ul>{items}</ul></div>"


def backups(run: RunSummary) -> list[str]:
    """Per backup target: the highest level proven, each level's status, the evidence."""
    found = levels.summarize(run.checks)
    if not found:
        return []
    rows = []
    for entry in found.values():
        cells = "".join(
            f"<td style='color:{COLOURS.get(state, '#757575')}'>{escape(state)}</td>"
            for state in entry.levels.values())
        facts = "; ".join(f"{k}: {v}" for k, v in entry.facts.items())
        rows.append(f"<tr><td><code>{escape(entry.target)}</code></td>"
                    f"<td><b>{escape(entry.proven)}</b></td>{cells}<td>{escape(facts)}</td></tr>")
    head = "".join(f"<th>{lvl} {levels.MEANING[lvl]}</th>" for lvl in levels.LEVELS)
    return ["<h3>Backups: highest level proven</h3><table id='opsverify-backups'>"
            f"<tr><th>backup</th><th>proven</th>{head}<th>evidence</th></tr>",
            *rows, "</table>"]
