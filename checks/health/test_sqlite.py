"""SQLite health: the runbook's ``sqlite3 erpfts.db "PRAGMA integrity_check"``."""

import pytest

from opsverify.evidence import EvidenceLog
from opsverify.targets.sqlite import SqliteClient, UnreadableDatabase


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_opens_read_only(sqlite: SqliteClient, evidence: EvidenceLog) -> None:
    """The file opens read-only as an SQLite database and its schema can be read."""
    try:
        version = sqlite.schema_version()
    except UnreadableDatabase as exc:
        evidence.expect("readable SQLite database", f"no: {exc.cause}", equals="yes")
        return
    evidence.expect("readable SQLite database", "yes", equals="yes")
    evidence.expect("opened read-only (query_only)",
                    sqlite.query("PRAGMA query_only")[0][0], equals=1)
    evidence.note("schema_version", version)
    page_size = sqlite.query("PRAGMA page_size")[0][0]
    evidence.note("size", page_size * sqlite.query("PRAGMA page_count")[0][0], unit="bytes")
    evidence.note("journal_mode", sqlite.query("PRAGMA journal_mode")[0][0])


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_quick_check(sqlite: SqliteClient, evidence: EvidenceLog) -> None:
    """``PRAGMA quick_check`` finds no damage in the file's b-trees."""
    problems = sqlite.quick_check()
    evidence.note("problems found", 0 if problems == ["ok"] else len(problems))
    shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3
                                       else "")
    evidence.expect("PRAGMA quick_check", shown, equals="ok")


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_tables_exist(sqlite: SqliteClient, sqlite_expect_tables: tuple[str, ...],
                      evidence: EvidenceLog) -> None:
    """Every table the environment declares exists in the file."""
    where = evidence.source_of("targets", sqlite.name, "expect_tables")
    present = sqlite.tables()
    missing = sorted(set(sqlite_expect_tables) - present)
    evidence.expect("missing tables", ", ".join(missing) or "none", equals="none", source=where)
    evidence.note("tables", len(present))
