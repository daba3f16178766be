"""SQLite health: the runbook's ``sqlite3 erpfts.db "PRAGMA integrity_check"``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog

if TYPE_CHECKING:
    from opsverify.targets.sqlite import SqliteClient

# Every read here is a fixed statement, prefetched in the probe pool.


@dataclass(frozen=True)
class OpenReading:
    """Whether the file reads as an SQLite database (``error`` says why not), and what
    its header and connection say about it."""

    error: str | None = None
    query_only: Any = None
    schema_version: int | None = None
    page_size: Any = None
    page_count: Any = None
    journal_mode: Any = None


@probe
def sqlite_open_reading(sqlite: SqliteClient) -> OpenReading:
    # Not at the top: a run without sqlite targets never imports the type.
    from opsverify.targets.sqlite import UnreadableDatabase

    try:
        version = sqlite.schema_version()
    except UnreadableDatabase as exc:
        return OpenReading(error=exc.cause)
    return OpenReading(
        query_only=sqlite.query("PRAGMA query_only")[0][0], schema_version=version,
        page_size=sqlite.query("PRAGMA page_size")[0][0],
        page_count=sqlite.query("PRAGMA page_count")[0][0],
        journal_mode=sqlite.query("PRAGMA journal_mode")[0][0])


@probe
def sqlite_quick_check(sqlite: SqliteClient) -> tuple[str, ...]:
    """``PRAGMA quick_check``'s lines."""
    return tuple(sqlite.quick_check())


@probe
def sqlite_tables(sqlite: SqliteClient) -> frozenset[str]:
    return frozenset(sqlite.tables())


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_opens_read_only(sqlite_open_reading: OpenReading, evidence: EvidenceLog) -> None:
    """The file opens read-only as an SQLite database and its schema can be read."""
    reading = sqlite_open_reading
    if reading.error is not None:
        evidence.expect("readable SQLite database", f"no: {reading.error}", equals="yes")
        return
    evidence.expect("readable SQLite database", "yes", equals="yes")
    evidence.expect("opened read-only (query_only)", reading.query_only, equals=1)
    evidence.note("schema_version", reading.schema_version)
    evidence.note("size", reading.page_size * reading.page_count, unit="bytes")
    evidence.note("journal_mode", reading.journal_mode)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_quick_check(sqlite_quick_check: tuple[str, ...], evidence: EvidenceLog) -> None:
    """``PRAGMA quick_check`` finds no damage in the file's b-trees."""
    problems = list(sqlite_quick_check)
    evidence.note("problems found", 0 if problems == ["ok"] else len(problems))
    shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3
                                       else "")
    evidence.expect("PRAGMA quick_check", shown, equals="ok")


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_tables_exist(sqlite: SqliteClient, sqlite_expect_tables: tuple[str, ...],
                      sqlite_tables: frozenset[str], evidence: EvidenceLog) -> None:
    """Every table the environment declares exists in the file."""
    where = evidence.source_of("targets", sqlite.name, "expect_tables")
    present = sqlite_tables
    missing = sorted(set(sqlite_expect_tables) - present)
    evidence.expect("missing tables", ", ".join(missing) or "none", equals="none", source=where)
    evidence.note("tables", len(present))
