"""The sqlite target type: schema, read-only client with deadlines, and each check PASS/FAIL/
ERROR against real SQLite files in good and bad states, as a user runs the suite."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.sandbox.sqlite import corrupt, seed
from opsverify.targets.sqlite import SqliteClient, SqliteTarget, UnreadableDatabase
from tests.conftest import Project, Result

CHECKS = ("test_opens_read_only[erpfts-db]", "test_quick_check[erpfts-db]",
          "test_tables_exist[erpfts-db:expect_tables]")


def run_checks(project: Project, env: str, *args: str) -> tuple[Result, dict[str, Any]]:
    """Run the stock sqlite checks in ``project``; outcomes keyed ``test[target]``."""
    project.copy_check("checks/health/test_sqlite.py")
    return project.run_checks("lite", env, *args, timeout=60)


def file_env(path: Path, tables: str = "[documents, chunks]") -> str:
    return f"""
settings: {{timeout_s: 2}}
targets:
  erpfts-db:
    type: sqlite
    path: {path}
    expect_tables: {tables}
"""


def failing_lines(check: dict[str, Any]) -> str:
    return "\n".join(f"{m['name']} = {m['value']}" for m in check["evidence"]
                     if m["verdict"] == "FAIL")


@pytest.fixture
def erpfts(tmp_path: Path) -> Path:
    """A seeded erpfts.db, as the sandbox makes it."""
    path = tmp_path / "erpfts.db"
    seed(path)
    return path


def client_for(path: Path, timeout_s: float = 2) -> SqliteClient:
    return SqliteClient("erpfts-db", SqliteTarget(type="sqlite", path=str(path)), timeout_s)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- schema ------------------------------------------------------------------------------
def test_schema() -> None:
    spec = SqliteTarget(type="sqlite", path="/opt/erpfts/data/erpfts.db",
                        expect_tables=["documents"])
    assert spec.address() == "/opt/erpfts/data/erpfts.db"
    assert spec.secrets() == []
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SqliteTarget(type="sqlite", path="x.db", tables=["documents"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="Field required"):
        SqliteTarget(type="sqlite")  # type: ignore[call-arg]


# -- the client --------------------------------------------------------------------------
def test_client_reads_and_sqlite_refuses_every_write(erpfts: Path) -> None:
    before = digest(erpfts)
    client = client_for(erpfts)
    assert client.tables() == {"documents", "chunks"}
    assert client.quick_check() == ["ok"]
    assert client.query("SELECT count(*) FROM chunks") == [(800,)]
    for statement in ("DELETE FROM chunks", "CREATE TABLE x (a)", "PRAGMA user_version = 7"):
        with pytest.raises(WriteRefused, match="read-only"):
            client.query(statement)
    client.close()
    assert digest(erpfts) == before
    assert sorted(p.name for p in erpfts.parent.iterdir()) == ["erpfts.db"]  # no journal left


def test_missing_file_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(TargetUnavailable, match=r"erpfts-db \(sqlite .*nope\.db\): no such file"):
        client_for(tmp_path / "nope.db").connect()
    with pytest.raises(TargetUnavailable, match="is not a regular file"):
        client_for(tmp_path).connect()
    assert not (tmp_path / "nope.db").exists()  # read-only: opening never creates the file


def test_a_writer_holding_the_lock_costs_one_deadline(erpfts: Path) -> None:
    writer = sqlite3.connect(erpfts, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    writer.execute("DELETE FROM chunks WHERE id < 10")
    try:
        client = client_for(erpfts, timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable, match=r"database locked for more than 0\.3 s"):
            client.quick_check()
        assert time.monotonic() - started < 1.5
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_statement_past_the_deadline_is_interrupted(erpfts: Path) -> None:
    client = client_for(erpfts, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match=r"statement did not finish within 0\.3 s"):
        client.query("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                     "SELECT count(*) FROM n")
    assert time.monotonic() - started < 1.5
    assert client.query("SELECT 1") == [(1,)]  # the next statement gets a fresh deadline


def test_corruption_really_is_found_by_sqlite_itself(erpfts: Path) -> None:
    page = corrupt(erpfts)
    with sqlite3.connect(erpfts) as conn:
        assert conn.execute("SELECT count(*) FROM chunks").fetchone() == (800,)
        report = "\n".join(row[0] for row in conn.execute("PRAGMA quick_check"))
    conn.close()
    assert f"On tree page {page} cell 0: Offset 65535 out of range" in report
    problems = client_for(erpfts).quick_check()
    assert len(problems) == 8  # one per overwritten cell pointer
    assert all(f"On tree page {page} cell" in line for line in problems)


def test_a_torn_table_page_is_reported_one_way_or_the_other(erpfts: Path) -> None:
    page = corrupt(erpfts, "chunks")
    problems = client_for(erpfts).quick_check()
    assert problems != ["ok"]
    assert problems == ["database disk image is malformed"] or \
        f"On tree page {page} cell" in problems[0]


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "erpfts.db"
    path.write_bytes(b"SQLite formut 3\x00" + os.urandom(4080))
    client = client_for(path)
    client.connect()
    with pytest.raises(UnreadableDatabase, match="file is not a database"):
        client.schema_version()


# -- the stock checks, as a user runs them -------------------------------------------------
def test_healthy_file_passes(project: Project, erpfts: Path) -> None:
    result, checks = run_checks(project, file_env(erpfts))
    assert result.returncode == 0, result.output
    assert [checks[c]["outcome"] for c in CHECKS] == ["PASS"] * 3
    opened = {m["name"]: m["value"] for m in checks[CHECKS[0]]["evidence"]}
    assert opened["opened read-only (query_only)"] == 1
    assert opened["size"] == erpfts.stat().st_size


def test_corrupt_page_fails_quick_check(project: Project, erpfts: Path) -> None:
    page = corrupt(erpfts)
    result, checks = run_checks(project, file_env(erpfts))
    check = checks["test_quick_check[erpfts-db]"]
    assert check["outcome"] == "FAIL", result.output
    assert f"PRAGMA quick_check = On tree page {page} cell" in failing_lines(check)
    assert checks["test_opens_read_only[erpfts-db]"]["outcome"] == "PASS"
    assert result.returncode == 1


def test_not_a_database_fails_open_and_quick_check(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "erpfts.db"
    path.write_bytes(b"<html>502 Bad Gateway</html>\n" * 200)  # a download gone wrong
    result, checks = run_checks(project, file_env(path))
    opened = checks["test_opens_read_only[erpfts-db]"]
    assert opened["outcome"] == "FAIL", result.output
    assert failing_lines(opened) == "readable SQLite database = no: file is not a database"
    assert failing_lines(checks["test_quick_check[erpfts-db]"]) == \
        "PRAGMA quick_check = file is not a database"
    assert checks["test_tables_exist[erpfts-db:expect_tables]"]["outcome"] == "ERROR"


def test_dropped_table_fails_tables_check(project: Project, erpfts: Path) -> None:
    with sqlite3.connect(erpfts) as conn:
        conn.execute("DROP TABLE chunks")
    conn.close()
    result, checks = run_checks(project, file_env(erpfts))
    check = checks["test_tables_exist[erpfts-db:expect_tables]"]
    assert check["outcome"] == "FAIL", result.output
    assert failing_lines(check) == "missing tables = chunks"
    assert checks["test_quick_check[erpfts-db]"]["outcome"] == "PASS"


def test_missing_file_is_one_error_line_per_check(project: Project, tmp_path: Path) -> None:
    result, checks = run_checks(project, file_env(tmp_path / "gone.db"))
    assert [checks[c]["outcome"] for c in CHECKS] == ["ERROR"] * 3, result.output
    assert "erpfts-db (sqlite " in result.output
    assert "gone.db): no such file" in result.output
    assert "Traceback" not in result.output
    assert result.returncode == 1


def test_locked_file_is_an_error_within_the_deadline(project: Project, erpfts: Path) -> None:
    """A writer holds an exclusive lock for longer than the run: every check is one ERROR."""
    ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        writer = sqlite3.connect(erpfts, isolation_level=None, check_same_thread=False)
        writer.execute("BEGIN EXCLUSIVE")
        writer.execute("DELETE FROM chunks WHERE id < 10")
        ready.set()
        release.wait(60)
        writer.execute("ROLLBACK")
        writer.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    ready.wait(10)
    try:
        result, checks = run_checks(project, file_env(erpfts).replace("timeout_s: 2",
                                                                      "timeout_s: 0.5"))
    finally:
        release.set()
        holder.join(10)
    # Every read waits for the lock at most one deadline, then is one ERROR line.
    assert {checks[c]["outcome"] for c in CHECKS} == {"ERROR"}, result.output
    assert "database locked for more than 0.5 s" in result.output
    assert result.duration_s < 30


def test_sandbox_file_and_its_corruption_fault(project: Project) -> None:
    env = """
sandbox:
  sqlite: {file: erpfts.db}
targets:
  erpfts-db:
    type: sqlite
    path: ${SANDBOX_SQLITE_PATH}
    expect_tables: [documents, chunks]
"""
    result, checks = run_checks(project, env)
    assert [checks[c]["outcome"] for c in CHECKS] == ["PASS"] * 3, result.output
    result, checks = run_checks(project, env, "--sandbox-fault", "sqlite-corrupt")
    assert checks["test_quick_check[erpfts-db]"]["outcome"] == "FAIL", result.output
    assert "Offset 65535 out of range" in failing_lines(checks["test_quick_check[erpfts-db]"])
    assert checks["test_tables_exist[erpfts-db:expect_tables]"]["outcome"] == "PASS"
