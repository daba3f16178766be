"""L4: restore drills. A backup is proven only by restoring it.

PostgreSQL: the newest dump is restored with ``pg_restore`` into a fresh database that the
drill creates on a scratch server, the declared tables are checked and their rows counted
(after ``ANALYZE``, as a real restore ends), and the database is dropped, also on failure.
Only a ``postgres`` target marked ``scratch: true`` is ever written to: :class:`ScratchPostgres`
refuses any other before it opens a connection.

SQLite: the backup is restored into a new temporary file (every table re-read and written
again, the indexes rebuilt), which must pass ``integrity_check`` and hold the declared tables.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opsverify.backup import pgtools
from opsverify.errors import OpsverifyError, TargetUnavailable
from opsverify.targets.base import Deadline

# The backup checks import this module in every run: psycopg and the postgres type are
# imported by the scratch server's methods, when a drill restores into one.
if TYPE_CHECKING:
    from opsverify.targets.backup import RestoreDrill
    from opsverify.targets.postgres import PostgresClient, PostgresTarget

DRILL_PREFIX = "opsverify_drill_"
APPLICATION = "opsverify-restore-drill"
# libpq connection keys and the environment variables pg_restore reads them from: the
# password never goes on a command line, where ``ps`` would show it.
PG_ENV = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "user": "PGUSER",
          "password": "PGPASSWORD", "passfile": "PGPASSFILE", "sslmode": "PGSSLMODE",
          "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
          "sslcrl": "PGSSLCRL", "target_session_attrs": "PGTARGETSESSIONATTRS",
          "channel_binding": "PGCHANNELBINDING", "gssencmode": "PGGSSENCMODE"}


class ScratchRefused(OpsverifyError):
    """A restore drill was pointed at a target that is not marked ``scratch: true``."""


@dataclass(frozen=True)
class TableCount:
    name: str
    exists: bool
    rows: int = 0


@dataclass
class DrillResult:
    """What one drill did: where it restored, whether pg_restore (or the SQLite copy)
    succeeded, what came back, how long it took, and whether it cleaned up."""

    restored_into: str
    restored: bool = False
    error: str = ""
    tables: list[TableCount] = field(default_factory=list)
    duration_s: float = 0.0
    tool: str = ""
    cleaned_up: bool = False
    integrity: str = ""  # SQLite: what integrity_check said of the restored file

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


class ScratchPostgres:
    """The only write-capable access a restore drill gets: to a scratch server, to create,
    fill and drop databases of its own. Refuses any target not marked ``scratch: true``
    before connecting to it."""

    def __init__(self, name: str, spec: PostgresTarget, timeout_s: float) -> None:
        from opsverify.targets.postgres import PostgresClient

        if not spec.scratch:
            raise ScratchRefused(
                f"refusing to restore into {name!r}: it is not marked scratch: true "
                "(a restore drill writes only into scratch targets)")
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.client = PostgresClient(name, spec, timeout_s, writable=True)

    def connect(self) -> None:
        self.client.connect()

    def server_version_num(self) -> int:
        return self.client.server_version()[1]

    def create_database(self, database: str, owner: str | None) -> None:
        _identifier(database)
        sql = f'CREATE DATABASE "{database}"'
        if owner:
            sql += f' OWNER "{_identifier(owner)}"'
        self.client.query(sql)

    def drop_database(self, database: str) -> None:
        if not database.startswith(DRILL_PREFIX):
            raise ScratchRefused(f"refusing to drop {database!r}: not a drill database")
        self.client.query(f'DROP DATABASE IF EXISTS "{_identifier(database)}" WITH (FORCE)')

    def database_exists(self, database: str) -> bool:
        return bool(self.client.scalar(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (database,)))

    def session_to(self, database: str, timeout_s: float) -> PostgresClient:
        """A write-capable session to a database the drill created (for ANALYZE)."""
        from psycopg.conninfo import make_conninfo

        from opsverify.targets.postgres import PostgresClient

        if not database.startswith(DRILL_PREFIX):
            raise ScratchRefused(f"refusing a session to {database!r}: not a drill database")
        spec = self.spec.model_copy(update={"dsn": make_conninfo(self.spec.dsn,
                                                                 dbname=database)})
        return PostgresClient(self.name, spec, timeout_s, writable=True)

    def environment(self, database: str) -> dict[str, str]:
        """libpq's environment for pg_restore: the target's connection, to ``database``."""
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(self.spec.dsn)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        for key, var in PG_ENV.items():
            if params.get(key) is not None:
                env[var] = str(params[key])
        env.update(PGDATABASE=database, PGAPPNAME=APPLICATION, LC_ALL="C",
                   PGCONNECT_TIMEOUT=str(max(2, int(self.timeout_s))))
        return env

    def close(self) -> None:
        self.client.close()


def drill_database_name(target: str) -> str:
    """``opsverify_drill_dumps_3f9a1c``: recognisable, unique, at most 63 characters."""
    label = "".join(c if c.isalnum() else "_" for c in target.lower())[:30]
    return f"{DRILL_PREFIX}{label}_{secrets.token_hex(3)}"


def restore_postgres(dump: Path, target: str, drill: RestoreDrill,
                     scratch: ScratchPostgres) -> DrillResult:
    """Restore ``dump`` (a custom-format archive, decompressed) into a new database on the
    scratch server, count the declared tables, drop the database."""
    started = time.monotonic()
    deadline = Deadline.start(drill.timeout_s)
    database = drill_database_name(target)
    result = DrillResult(restored_into=f"{scratch.name}/{database}")
    scratch.connect()
    binary = pgtools.for_server(scratch.server_version_num())
    result.tool = f"pg_restore {pgtools.version_of(binary)}"
    scratch.create_database(database, drill.database_owner)
    try:
        argv = [str(binary), "--exit-on-error", "--single-transaction", "--dbname", database]
        if drill.no_owner:
            argv.append("--no-owner")
        run = _pg_restore([*argv, str(dump)], scratch.environment(database), deadline)
        if run is not None:
            result.error = run
            return result
        result.restored = True
        session = scratch.session_to(database, max(1.0, deadline.remaining()))
        try:
            session.query("ANALYZE")
            for name in drill.expect_tables:
                result.tables.append(_count(session, name))
        finally:
            session.close()
    except TargetUnavailable as exc:
        result.error = exc.cause
    finally:
        result.duration_s = time.monotonic() - started
        scratch.drop_database(database)
        result.cleaned_up = not scratch.database_exists(database)
    return result


def restore_sqlite(backup: Path, drill: RestoreDrill, workdir: Path) -> DrillResult:
    """Re-create the database in a new file from the backup's schema and rows: what
    ``sqlite3 backup.db .dump | sqlite3 restored.db`` does. Indexes are rebuilt from the
    rows, so the result proves the data comes back, whatever the backup's own b-trees say."""
    started = time.monotonic()
    deadline = Deadline.start(drill.timeout_s)
    restored = workdir / "restored.db"
    restored.unlink(missing_ok=True)
    result = DrillResult(restored_into="a temporary file", tool=f"sqlite {sqlite3.sqlite_version}")
    source = sqlite3.connect(backup.absolute().as_uri() + "?mode=ro", uri=True,
                             isolation_level=None)
    dest = sqlite3.connect(restored, isolation_level=None)
    for conn in (source, dest):
        conn.set_progress_handler(lambda: 1 if deadline.expired() else 0, 1000)
    try:
        dest.execute("BEGIN")
        for statement in source.iterdump():
            if statement in ("BEGIN TRANSACTION;", "COMMIT;"):
                continue
            dest.execute(statement)
        dest.execute("COMMIT")
        result.restored = True
        result.integrity = "; ".join(str(r[0]) for r in dest.execute(
            "PRAGMA integrity_check(5)"))
        for name in drill.expect_tables:
            exists = dest.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                  "AND name = ?", (name,)).fetchone()[0] > 0
            rows = dest.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] if exists else 0
            result.tables.append(TableCount(name, exists, int(rows)))
    except sqlite3.Error as exc:
        interrupted = getattr(exc, "sqlite_errorname", "") == "SQLITE_INTERRUPT"
        result.error = (f"not restored within {drill.timeout_s:g} s" if interrupted
                        else f"{type(exc).__name__}: {exc}")
    finally:
        source.close()
        dest.close()
        result.duration_s = time.monotonic() - started
        restored.unlink(missing_ok=True)
        result.cleaned_up = not restored.exists()
    return result


def _pg_restore(argv: list[str], env: dict[str, str], deadline: Deadline) -> str | None:
    """Run pg_restore; its first error line, or ``None`` when it succeeded."""
    try:
        run = subprocess.run(argv, capture_output=True, text=True, errors="replace", env=env,
                             timeout=max(0.1, deadline.remaining()))
    except subprocess.TimeoutExpired:
        return f"pg_restore did not finish within {deadline.seconds:g} s"
    if run.returncode == 0:
        return None
    lines = [ln.strip() for ln in run.stderr.splitlines() if ln.strip()]
    errors = [ln.split("error:", 1)[1].strip() for ln in lines if "error:" in ln]
    reason = errors[0] if errors else (lines[-1] if lines else f"exit status {run.returncode}")
    reason = reason.removeprefix("could not execute query: ").removeprefix("ERROR:  ")
    command = next((ln.removeprefix("Command was:").strip() for ln in lines
                    if ln.startswith("Command was:")), "")
    return reason + (f" (in: {command[:120]})" if command else "")


def _count(session: PostgresClient, name: str) -> TableCount:
    row: Any = session.scalar("SELECT to_regclass(%s)::text", (name,))
    if row is None:
        return TableCount(name, False)
    schema, _, table = name.rpartition(".")
    quoted = (f'"{schema}".' if schema else "") + f'"{table}"'
    return TableCount(name, True, int(session.scalar(f"SELECT count(*) FROM {quoted}")))


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum() or '"' in name or len(name) > 63:
        raise ValueError(f"not a plain identifier: {name!r}")
    return name
