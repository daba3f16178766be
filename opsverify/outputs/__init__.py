"""Outputs monitoring systems read, rendered from a run's summary (no pytest here).

- ``prometheus.py``: the node_exporter textfile and a Pushgateway push, the same metrics;
- ``alertmanager.py``: one alert per failing check, resolved when it is fixed;
- ``nagios.py``: the whole run as one Nagios/Icinga/Checkmk plugin result.

``fixtures/outputs.py`` calls them on the controller once the summary is built.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opsverify.evidence import fmt_value

T = TypeVar("T")


class OutputError(Exception):
    """An output could not be delivered: one line, what and where (never a secret)."""


def check_name(nodeid: str) -> str:
    """``checks/health/test_http.py::test_health[api:/health]`` -> ``test_health[api:/health]``."""
    return nodeid.rsplit("::", 1)[-1]


def category_of(nodeid: str, categories: Mapping[str, str]) -> str:
    """The check's category as its markers say (a declared SQL check names its own), else
    from its folder, ``checks/<category>/``; ``""`` when neither says."""
    if categories.get(nodeid):
        return categories[nodeid]
    parts = nodeid.split("::", 1)[0].split("/")
    for index, part in enumerate(parts[:-1]):
        if part == "checks" and index + 1 < len(parts) - 1:
            return parts[index + 1]
    return ""


def evidence_line(m: Mapping[str, Any]) -> str:
    """One evidence dict of ``summary.json`` as the terminal shows it (``Measurement.line``)."""
    unit = str(m.get("unit") or "")
    value = fmt_value(m.get("value")) + (f" {unit}" if unit else "")
    target, name = str(m.get("target") or ""), str(m.get("name", ""))
    text = f"{target}: {name} = {value}" if target else f"{name} = {value}"
    if m.get("expected"):
        text += f", expected {m['expected']}"
    if m.get("source"):
        text += f" ({m['source']})"
    verdict = str(m.get("verdict", "PASS"))
    return text if verdict == "PASS" else f"{text} → {verdict}"


def within_deadline(call: Callable[[], T], deadline_s: float, what: str) -> T:
    """``call()``, or :class:`OutputError` once ``deadline_s`` has passed: the libraries'
    own timeouts bound each socket operation, not the whole exchange (a server that answers
    a byte at a time would hold the run's end for ever)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=run, name=f"opsverify-output {what}", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        raise OutputError(f"{what}: no answer within {deadline_s:g} s")
    if failure:
        raise failure[0]
    return result[0]


def reason(exc: BaseException) -> str:
    """Why a delivery failed, in the socket's own words (``Connection refused``, ``timed
    out``), found under the wrappers urllib, urllib3 and requests put around it."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        current = todo.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TimeoutError):
            return "timed out"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        todo += [getattr(current, "reason", None), *current.args, current.__cause__,
                 current.__context__]
    return str(exc) or type(exc).__name__
