"""SQLite targets: the ``sqlite`` section and a client that opens the file read-only.

The file is opened through a ``file:...?mode=ro`` URI, so SQLite itself refuses every write,
with ``PRAGMA query_only`` on top. Waiting for a lock is bounded by the busy timeout, and a
progress handler interrupts any statement still running when the deadline passes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.targets.base import TargetSpec

# How many SQLite VM instructions run between two looks at the clock.
PROGRESS_EVERY = 1000
QUICK_CHECK_MAX_ERRORS = 100


class SqliteTarget(TargetSpec):
    type: Literal["sqlite"]
    path: str  # the database file, on the machine running the checks
    expect_tables: list[str] = Field(default_factory=list)

    def address(self) -> str:
        return self.path


class UnreadableDatabase(TargetUnavailable):
    """The file opens but is not a readable SQLite database (not a database, malformed):
    the integrity checks judge this, the others cannot run."""


class SqliteClient:
    """One SQLite file, opened read-only, with every statement bounded by ``timeout_s``."""

    def __init__(self, name: str, spec: SqliteTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.path = Path(spec.path).expanduser()
        self._conn: sqlite3.Connection | None = None
        self._deadline = 0.0
        self._lock = threading.RLock()

    def connect(self) -> None:
        """Open the file read-only; a missing or unreadable file raises TargetUnavailable."""
        with self._lock:
            self._open()

    def _open(self) -> None:
        if self._conn is not None:
            return
        if not self.path.is_file():
            what = "is not a regular file" if self.path.exists() else "no such file"
            raise self._unavailable(what)
        uri = self.path.absolute().as_uri() + "?mode=ro"
        try:
            # Opened by a probe thread, read by others: one statement at a time (self._lock).
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout_s, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._unavailable(f"cannot open read-only: {exc}") from None
        conn.set_progress_handler(self._past_deadline, PROGRESS_EVERY)
        self._conn = conn
        self.query("PRAGMA query_only = ON")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement, within the deadline; writes are refused by SQLite."""
        return list(self.rows(sql, params))

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        """Rows of one statement as SQLite produces them, all within one deadline."""
        with self._lock:
            self.connect()
            conn = self._conn
            assert conn is not None
            self._deadline = time.monotonic() + self.timeout_s
            try:
                yield from conn.execute(sql, params)
            except sqlite3.Error as exc:
                raise self._translate(exc) from None

    def schema_version(self) -> int:
        """Reads the header and the schema: fails on a file that is not a database."""
        return int(self.query("PRAGMA schema_version")[0][0])

    def quick_check(self) -> list[str]:
        """``PRAGMA quick_check``: ``["ok"]``, or one line per problem found, ending with
        SQLite's own error when damage stopped the check (or the file is not a database)."""
        problems: list[str] = []
        try:
            for (text,) in self.rows(f"PRAGMA quick_check({QUICK_CHECK_MAX_ERRORS})"):
                problems += [line.strip() for line in str(text).splitlines()
                             if line.strip() and not line.startswith("*** in database")]
        except UnreadableDatabase as exc:
            problems.append(exc.cause)
        return problems

    def tables(self) -> set[str]:
        rows = self.query("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
        return {str(name) for (name,) in rows}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _past_deadline(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def _translate(self, exc: sqlite3.Error) -> Exception:
        code = getattr(exc, "sqlite_errorname", "")
        if code.startswith("SQLITE_READONLY") or "readonly database" in str(exc):
            return WriteRefused(f"{self.name}: SQLite refused a write to a file opened "
                                f"read-only: {exc}")
        if code == "SQLITE_INTERRUPT":
            return self._unavailable(f"statement did not finish within {self.timeout_s:g} s")
        if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return self._unavailable(f"database locked for more than {self.timeout_s:g} s")
        if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return UnreadableDatabase(self.name, f"sqlite {self.spec.address()}", str(exc))
        if code.startswith(("SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM", "SQLITE_AUTH")):
            return self._unavailable(str(exc))
        return exc

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, f"sqlite {self.spec.address()}", cause)
