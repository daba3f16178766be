"""Capacity metrics drawn as inline SVG sparklines: the report opens offline, with no
script and no library fetched."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from opsverify.evidence import fmt_value
from opsverify.history import History, Sample
from opsverify.report.summary import RunSummary

WIDTH, HEIGHT, PAD = 160, 28, 2


def svg(points: Sequence[tuple[datetime, float]], capacity: float | None,
        label: str = "") -> str:
    """A polyline of ``points`` (time, value), scaled 0..capacity when there is one (a
    full chart is full), else min..max; the latest value is a dot."""
    if not points:
        return ""
    times = [t.timestamp() for t, _ in points]
    values = [v for _, v in points]
    low, high = (0.0, capacity) if capacity else (min(values), max(values))
    high = max(high, *values)
    span_t = (times[-1] - times[0]) or 1.0
    span_v = (high - low) or 1.0

    def xy(t: float, v: float) -> tuple[float, float]:
        x = PAD + (t - times[0]) / span_t * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD - (v - low) / span_v * (HEIGHT - 2 * PAD)
        return round(x, 1), round(y, 1)

    coords = [xy(t, v) for t, v in zip(times, values, strict=True)]
    line = " ".join(f"{x},{y}" for x, y in coords)
    last_x, last_y = coords[-1]
    title = f"<title>{escape(label)}</title>" if label else ""
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
            f"viewBox='0 0 {WIDTH} {HEIGHT}' role='img' class='opsverify-sparkline'>{title}"
            f"<rect width='{WIDTH}' height='{HEIGHT}' fill='#f5f5f5'/>"
            f"<polyline fill='none' stroke='#1565c0' stroke-width='1.5' points='{line}'/>"
            f"<circle cx='{last_x}' cy='{last_y}' r='2' fill='#c62828'/></svg>")


def capacity_section(run: RunSummary, past: History) -> list[str]:
    """One row per capacity metric of this run: its history as a sparkline, the latest
    value and, when a trend check ran, what it said."""
    current: dict[tuple[str, str, str], Sample] = {}
    trends: dict[tuple[str, str, str], str] = {}
    for check in run.checks:
        said = next((str(m["value"]) for m in check.evidence if m.get("name") == "trend"), "")
        for m in check.evidence:
            value, capacity = m.get("value"), m.get("capacity")
            if capacity is None or isinstance(value, bool) or not isinstance(
                    value, int | float):
                continue
            key = (str(m.get("target")), str(m.get("name")), str(m.get("item", "")))
            current.setdefault(key, Sample(run.started, *key, float(value),
                                           str(m.get("unit", "")), float(capacity)))
            if said:
                trends[key] = said
    if not current:
        return []
    rows = []
    for key, now in sorted(current.items()):
        target, metric, item = key
        series = [(s.time, s.value) for s in past.series(*key)] + [(now.time, now.value)]
        unit = f" {now.unit}" if now.unit else ""
        chart = svg(series, now.capacity, f"{target} {metric} {item}: {len(series)} readings")
        said = trends.get(key, "")
        rows.append(
            f"<tr><td><code>{escape(target)}</code></td><td>{escape(metric)}</td>"
            f"<td>{escape(item)}</td><td>{chart}</td>"
            f"<td>{escape(fmt_value(now.value))}{escape(unit)} of "
            f"{escape(fmt_value(now.capacity))}{escape(unit)}</td>"
            f"<td>{len(series)}</td><td>{escape(said)}</td></tr>")
    return ["<h3>Capacity</h3><table id='opsverify-capacity'><tr><th>target</th>"
            "<th>metric</th><th>item</th><th>history</th><th>now</th><th>readings</th>"
            "<th>trend</th></tr>", *rows, "</table>"]
