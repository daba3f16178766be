"""Report retention (``--keep-reports N``): the oldest run directories of ``reports/<env>/``
go, so that at most N remain, the current one included.

Only run directories are candidates: a name ``YYYYmmdd-HHMMSS`` with an optional ``-N``
suffix (``fixtures/reports.py`` ``_new_run_dir``), a real directory, not a symlink.
``latest``, ``history.jsonl``, ``audit.jsonl`` and anything else a user keeps there are never
touched, and neither are the run ``latest`` points at nor the ones the caller protects.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

RUN_NAME = re.compile(r"^(?P<stamp>\d{8}-\d{6})(?:-(?P<n>\d+))?$")
LATEST = "latest"


@dataclass(frozen=True)
class Pruned:
    """What one pass removed (names, oldest first) and what it could not remove."""

    removed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_order(name: str) -> tuple[str, int] | None:
    """The sort key of a run directory's name, oldest first (``-2`` after no suffix,
    ``-10`` after ``-9``), or None for a name that is not a run's."""
    match = RUN_NAME.match(name)
    if match is None:
        return None
    return match["stamp"], int(match["n"] or 1)


def runs(env_dir: Path) -> list[Path]:
    """The run directories of ``env_dir``, oldest first."""
    if not env_dir.is_dir():
        return []
    found = [(key, p) for p in env_dir.iterdir()
             if (key := run_order(p.name)) is not None and p.is_dir() and not p.is_symlink()]
    return [p for _, p in sorted(found)]


def latest_target(env_dir: Path) -> str | None:
    """The name of the run ``env_dir/latest`` points at, if it points into ``env_dir``."""
    link = env_dir / LATEST
    if not link.is_symlink():
        return None
    try:
        target = link.resolve()
    except (OSError, RuntimeError):
        return None
    return target.name if target.parent == env_dir.resolve() else None


def to_remove(env_dir: Path, keep: int, protect: frozenset[str] = frozenset()) -> list[Path]:
    """The run directories a pass keeping ``keep`` would remove, oldest first: the
    protected ones (and ``latest``'s) count towards ``keep`` and stay, the newest of the
    others fill what is left of it."""
    if keep < 1:
        raise ValueError(f"keep at least 1 run, not {keep}")
    protected = set(protect)
    if (target := latest_target(env_dir)) is not None:
        protected.add(target)
    all_runs = runs(env_dir)
    room = max(keep - sum(1 for p in all_runs if p.name in protected), 0)
    others = [p for p in all_runs if p.name not in protected]
    return others[:len(others) - room] if room else others


def prune(env_dir: Path, keep: int, protect: frozenset[str] = frozenset()) -> Pruned:
    """Remove the run directories :func:`to_remove` names; one that cannot be removed is
    reported, not raised (the run's verdict does not depend on it)."""
    result = Pruned()
    for path in to_remove(env_dir, keep, protect):
        try:
            shutil.rmtree(path)
        except OSError as exc:
            result.errors.append(f"{path.name}: {exc.strerror or exc}")
        else:
            result.removed.append(path.name)
    return result
