"""A throw-away PostgreSQL cluster seeded like the Time Series Forecasting runbook's.

Secure by default, as checks/security/test_postgres.py expects: TLS on (a certificate from
a CA made for the run), SCRAM passwords, connections logged, and a pg_hba.conf that admits
the superuser over the unix socket by peer (mapped from the OS users that run the sandbox)
and everyone else over TLS with a SCRAM password: no trust line.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import (
    APP_ROLE,
    FAULTS_OF,
    FLOOD_ROWS,
    FLOODED_TABLE,
    HOLDER_APP,
    IDLE_SESSIONS,
    STALE_SLOT,
    STALE_SLOT_SEGMENTS,
    WAITER_APP,
)
from opsverify.sandbox.process import (
    free_port,
    port_open,
    spawn,
    stop,
    unprivileged_user,
    wait_until,
)
from opsverify.sandbox.spec import PostgresComponent
from opsverify.sandbox.tls import TlsFiles, make_tls

# psycopg is imported by the functions that use it: a sandbox imports every
# component (runtime.COMPONENTS), and many start only some of them.
if TYPE_CHECKING:
    import psycopg

MONITOR_ROLE = "opsverify"
REPLICATION_ROLE = "replicator"  # what the sandbox replica streams as (postgres_replica.py)
WAL_ARCHIVE = "wal-archive"  # archive_command copies WAL here (checked by checks/backup)
PRIMARY_TLS = "pg-tls"  # the server's certificate and its CA (postgres_replica verifies it)


def bindir() -> Path | None:
    """The newest installed PostgreSQL server binaries, or ``None``."""
    found = shutil.which("pg_ctl")
    # Resolved: a symlink in /usr/local/bin would hide pg_basebackup and the other tools.
    if found and Path(found).resolve().with_name("initdb").exists():
        return Path(found).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


IDLE_AGE_S = 1.2  # the sandbox environment counts sessions idle over 1 s as stale
EXHAUSTED_SHARE = 0.9  # of max_connections the leaking pool holds (pg-connections-exhausted)
LOCKED_ROW = "UPDATE models SET version = version WHERE id = 1"  # blocking-lock: a row lock
LOCK_WAIT_S = 1.2  # the sandbox db's postgres.lock_wait_s crit is 1 s


class PostgresServer:
    """initdb, start, seed, stop. The cluster lives in ``workdir/postgres``."""

    name: ClassVar[str] = "postgres"
    install_hint: ClassVar[str] = "apt-get install postgresql"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["postgres"]

    def __init__(self, spec: PostgresComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.workdir = ctx.workdir
        self.port = free_port()
        self.password = ctx.password
        self.datadir = ctx.workdir / "postgres"
        self.sockdir = ctx.workdir / "pg-socket"
        self.archive = ctx.workdir / WAL_ARCHIVE
        self.archive_mode = "off" if "wal-archive-off" in ctx.faults else "on"
        # 90 % of 50 leaves 5 slots, 3 of them kept for superusers: none would be left for
        # opsverify's own sessions, so the exhausted server reserves none.
        self.reserved = "0" if "pg-connections-exhausted" in ctx.faults else "3"
        self.log = ctx.workdir / "postgres.log"
        self.tls = TlsFiles.under(ctx.workdir / PRIMARY_TLS)  # written by prepare()
        self.process: subprocess.Popen[bytes] | None = None
        self.user = unprivileged_user()
        self._idle: list[psycopg.Connection[tuple[object, ...]]] = []
        self._waiter: threading.Thread | None = None  # blocking-lock's waiting session

    @property
    def dsn(self) -> str:
        return (
            f"postgresql://{MONITOR_ROLE}:{self.password}@127.0.0.1:{self.port}/{self.spec.database}"
        )

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_POSTGRES_DSN": self.dsn, "SANDBOX_POSTGRES_PORT": str(self.port),
                "SANDBOX_POSTGRES_MAINTENANCE_DSN": self.maintenance_dsn}

    @property
    def maintenance_dsn(self) -> str:
        """The monitoring role in the ``postgres`` database, for cluster-wide reads."""
        return f"postgresql://{MONITOR_ROLE}:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def app_dsn(self) -> str:
        return f"postgresql://{APP_ROLE}:{self.password}@127.0.0.1:{self.port}/{self.spec.database}"

    def prepare(self) -> None:
        """initdb; may run in a worker thread (it leaves no process behind)."""
        binaries = bindir()
        if binaries is None:
            raise FileNotFoundError(f"PostgreSQL server binaries not found ({self.install_hint})")
        self.sockdir.mkdir()
        self.archive.mkdir()
        if self.user:
            for path in (self.workdir, self.sockdir, self.archive):
                shutil.chown(path, self.user)
        initdb = subprocess.run(
            [str(binaries / "initdb"), "-D", str(self.datadir), "-U", "postgres",
             "--auth-local=peer", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
             "--locale=C"],
            capture_output=True, text=True, user=self.user, timeout=60, check=False,
        )
        if initdb.returncode != 0:
            why = [ln for ln in (initdb.stderr or initdb.stdout).splitlines() if ln.strip()]
            raise RuntimeError(f"initdb failed in {self.datadir}: "
                               f"{why[-1] if why else f'exit code {initdb.returncode}'}"
                               + (f" (it runs as {self.user}: can it enter every parent "
                                  "directory?)" if self.user else ""))
        write_hba(self.datadir, self.user)
        server_tls(self.tls.ca.parent, self.user)

    def launch(self) -> None:
        """Start the server; must run in the main thread (see process.spawn)."""
        binaries = bindir()
        assert binaries is not None
        self.process = spawn(
            [str(binaries / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
             "-k", str(self.sockdir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "log_statement=all", "-c", "log_line_prefix=%m [%p] %u@%d %a: ",
             "-c", "max_connections=50", "-c", "shared_buffers=32MB",
             "-c", f"superuser_reserved_connections={self.reserved}", *SECURE_SETTINGS,
             "-c", f"ssl_cert_file={self.tls.cert}", "-c", f"ssl_key_file={self.tls.key}",
             # WAL archiving, as a PITR setup has it (checks/backup/test_postgres.py).
             "-c", f"archive_mode={self.archive_mode}", "-c", "archive_command=test ! -f "
             f"{shlex.quote(str(self.archive))}/%f && cp %p {shlex.quote(str(self.archive))}/%f"],
            log=self.log,
            user=self.user,
            # SIGQUIT is PostgreSQL's immediate shutdown: it also ends every backend.
            on_parent_death=signal.SIGQUIT,
        )

    def ready(self) -> None:
        """Wait for the port, then seed."""
        # An open port is not enough: the server refuses sessions while it starts up.
        wait_until(self._accepts_sessions, timeout_s=30, what="PostgreSQL",
                   process=self.process, log=self.log)
        self._seed()

    def stop(self) -> None:
        for conn in self._idle:
            conn.close()
        if self._waiter is not None:  # its lock is free now: its update ends, and it
            self._waiter.join(timeout=5)
        if self.process is not None:
            stop(self.process, signal.SIGINT)  # fast shutdown

    def _accepts_sessions(self) -> bool:
        import psycopg

        if not port_open(self.port):
            return False
        try:
            self._admin().close()
        except psycopg.OperationalError:
            return False
        return True

    def _admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        return psycopg.connect(host=str(self.sockdir), port=self.port, user="postgres",
                               dbname=dbname, autocommit=True, connect_timeout=10)

    def _seed(self) -> None:
        from psycopg import sql

        with self._admin() as conn:
            # Role passwords must not land in the statement log.
            conn.execute("SET log_statement = 'none'")
            # First, so that a replica can clone this server while the rest is seeded.
            # initdb's pg_hba.conf already admits replication from 127.0.0.1 with a password.
            conn.execute(sql.SQL("CREATE ROLE {} REPLICATION LOGIN PASSWORD {}").format(
                sql.Identifier(REPLICATION_ROLE), sql.Literal(self.password)))
            for role in (APP_ROLE, MONITOR_ROLE):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(self.password)))
            conn.execute("RESET log_statement")
            conn.execute(sql.SQL("GRANT pg_monitor, pg_signal_backend TO {}").format(
                sql.Identifier(MONITOR_ROLE)))
            # The least grant that lets the monitoring role read pg_hba.conf (PostgreSQL 15
            # keeps it from all but superusers). A function's grants live in each database's
            # catalog, and pg_dump carries a changed grant on a pg_catalog function: given in
            # the application's database, it would travel with every dump and fail a
            # restore by anyone but a superuser. So it is given here, in the maintenance
            # database, which the cluster-wide checks read (SANDBOX_POSTGRES_MAINTENANCE_DSN).
            # pg_authid's password hashes stay out of the role's reach.
            conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION pg_catalog.pg_hba_file_rules() "
                                 "TO {}").format(sql.Identifier(MONITOR_ROLE)))

            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(self.spec.database), sql.Identifier(APP_ROLE)))
        with self._admin(self.spec.database) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(APP_ROLE)))
            conn.execute(SCHEMA)
            conn.execute(SEED)
            # The monitoring role may read and, deliberately, also write: the read-only
            # rails, not missing privileges, are what must stop a check from writing.
            conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "
                                 "public TO {}").format(sql.Identifier(MONITOR_ROLE)))
        with self._admin() as conn:
            # The vacuum remediation's VACUUM: PostgreSQL before 17 (GRANT MAINTAIN) lets
            # only the owner of a table or of its database (ts_app, both), or a member of
            # their role, vacuum it.
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP_ROLE),
                                                          sql.Identifier(MONITOR_ROLE)))

    # -- faults -----------------------------------------------------------------------
    def inject(self, faults: frozenset[str]) -> None:
        if "pg-trust-auth" in faults:
            self.trust_app_role()
        if "stuck-run" in faults:
            self.add_stuck_run()
        if "idle-connections" in faults:
            opened = time.monotonic()
            self.open_idle_sessions(IDLE_SESSIONS)
            time.sleep(max(0.0, IDLE_AGE_S - (time.monotonic() - opened)))
        if "replication-slot-stale" in faults:
            self.add_stale_slot()
        if "pg-connections-exhausted" in faults:
            self.exhaust_connections()
        # Before blocking-lock: the job's open snapshot would keep the dead rows.
        if "dead-tuples" in faults:
            self.flood_logs()
        if "blocking-lock" in faults:
            self.block_on_lock()

    def block_on_lock(self) -> None:
        """A session holds a row lock in an open transaction, busy in a statement that
        hangs (sent, never read); another session's update of that row waits for it, past
        the sandbox db's 1 s ``postgres.lock_wait_s``. Cancelling the hung statement
        aborts the transaction, which frees the row."""
        import psycopg

        holder = psycopg.connect(self.app_dsn, connect_timeout=10,
                                 application_name=HOLDER_APP)
        holder.execute(LOCKED_ROW)  # not autocommit: the transaction stays open
        holder.pgconn.send_query(b"SELECT pg_sleep(86400)")
        self._idle.append(holder)

        def wait_for_the_row() -> None:
            # Its update ends once the holder is gone (unblock, or stop), and so does it:
            # no idle session is left behind.
            try:
                with psycopg.connect(self.app_dsn, autocommit=True, connect_timeout=10,
                                     application_name=WAITER_APP) as conn:
                    conn.execute(LOCKED_ROW)
            except psycopg.Error:
                pass  # the server stopped first

        self._waiter = threading.Thread(target=wait_for_the_row, name="sandbox-lock-waiter",
                                        daemon=True)
        self._waiter.start()
        with self._admin(self.spec.database) as conn:
            def waiting() -> bool:
                row = conn.execute(
                    "SELECT count(*) FROM pg_locks AS l JOIN pg_stat_activity AS a "
                    "ON a.pid = l.pid WHERE NOT l.granted AND a.application_name = %s",
                    (WAITER_APP,)).fetchone()
                return bool(row and row[0])

            wait_until(waiting, timeout_s=10, what=f"{WAITER_APP} waiting for the lock")
        time.sleep(LOCK_WAIT_S)

    def flood_logs(self) -> None:
        """Dead rows where autovacuum may not clean up after them; waits until the
        statistics count them (the deleting backend reports them as it exits)."""
        with self._admin(self.spec.database) as conn:
            conn.execute("ALTER TABLE system_logs SET (autovacuum_enabled = false)")
            conn.execute("INSERT INTO system_logs (log_level, message) SELECT 'DEBUG', "
                         "'retrying forecast job ' || i FROM generate_series(1, %s) AS i",
                         (FLOOD_ROWS,))
            conn.execute("DELETE FROM system_logs WHERE log_level = 'DEBUG'")
        with self._admin(self.spec.database) as conn:
            def counted() -> bool:
                row = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables "
                                   "WHERE relname = %s", (FLOODED_TABLE,)).fetchone()
                return bool(row and int(str(row[0])) >= FLOOD_ROWS)

            wait_until(counted, timeout_s=15, what=f"the statistics of {FLOODED_TABLE}")

    def open_idle_sessions(self, count: int) -> None:
        """Application sessions left idle, as a leaking connection pool leaves them."""
        import psycopg

        for _ in range(count):
            conn = psycopg.connect(self.app_dsn, autocommit=True, connect_timeout=10,
                                   application_name="ts-forecast-worker")
            conn.execute("SELECT 1")
            self._idle.append(conn)

    def exhaust_connections(self) -> None:
        """The application's sessions take 90 % of max_connections and sit idle in
        transaction (not idle: that is the idle-connections fault); opsverify's own
        session makes it 92 %."""
        import psycopg

        with self._admin() as conn:  # sessions to open: not counting this one
            row = conn.execute(
                "SELECT (ceil(current_setting('max_connections')::int * %s) - count(*) + 1)"
                "::int FROM pg_stat_activity WHERE backend_type = 'client backend'",
                (EXHAUSTED_SHARE,)).fetchone()
        assert row is not None
        assert isinstance(row[0], int)
        for _ in range(row[0]):
            # Not autocommit: the first statement opens a transaction that is never ended.
            session = psycopg.connect(self.app_dsn, connect_timeout=10,
                                      application_name="ts-forecast-worker")
            session.execute("SELECT 1")
            self._idle.append(session)

    def add_stale_slot(self) -> None:
        """An inactive physical slot that reserved WAL, then segments written past it; waits
        until the archiver has them, so that no check sees WAL waiting to be archived."""
        with self._admin() as conn:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (STALE_SLOT,))
            last = None
            for _ in range(STALE_SLOT_SEGMENTS):
                conn.execute("CHECKPOINT")  # WAL to switch away from
                last = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            if self.archive_mode == "off" or last is None:
                return

            def archived() -> bool:
                row = conn.execute("SELECT coalesce(last_archived_wal, '') >= %s "
                                   "FROM pg_stat_archiver", (last[0],)).fetchone()
                return bool(row and row[0])

            wait_until(archived, timeout_s=15, what="the WAL archiver")

    def trust_app_role(self) -> None:
        """Put a trust line first in pg_hba.conf and reload: the application role logs in
        from 127.0.0.1 without a password."""
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(f"host    all  {APP_ROLE}  127.0.0.1/32  trust  # debugging, remove\n"
                       + hba.read_text())
        with self._admin() as conn:
            conn.execute("SELECT pg_reload_conf()")

    def add_stuck_run(self) -> None:
        with self._admin(self.spec.database) as conn:
            conn.execute(
                "INSERT INTO runs (name, status, start_time) "
                "VALUES ('nightly-retrain', 'running', now() - interval '30 hours')")


# Server settings a hardened PostgreSQL has (checks/security/test_postgres.py).
SECURE_SETTINGS = ("-c", "ssl=on", "-c", "ssl_min_protocol_version=TLSv1.2",
                   "-c", "password_encryption=scram-sha-256", "-c", "log_connections=on")
IDENT_MAP = "sandbox"


def write_hba(datadir: Path, server_user: str | None) -> None:
    """pg_hba.conf and pg_ident.conf: the superuser by peer over the socket, from the OS
    user that runs the sandbox (and the server's own); everyone else over TLS, with SCRAM.
    A replica cloned with pg_basebackup gets the same files."""
    (datadir / "pg_hba.conf").write_text(
        "# TYPE   DATABASE     USER      ADDRESS        METHOD\n"
        f"local     all          postgres                 peer map={IDENT_MAP}\n"
        f"local     replication  postgres                 peer map={IDENT_MAP}\n"
        "hostssl   all          all       127.0.0.1/32   scram-sha-256\n"
        "hostssl   all          all       ::1/128        scram-sha-256\n"
        "hostssl   replication  all       127.0.0.1/32   scram-sha-256\n"
        "hostssl   replication  all       ::1/128        scram-sha-256\n")
    me = pwd.getpwuid(os.geteuid()).pw_name  # who the server sees over the socket
    os_users = dict.fromkeys(u for u in (me, server_user) if u)
    (datadir / "pg_ident.conf").write_text(
        "".join(f"{IDENT_MAP}  {user}  postgres\n" for user in os_users))
    if server_user:
        for name in ("pg_hba.conf", "pg_ident.conf"):
            shutil.chown(datadir / name, server_user)


def server_tls(directory: Path, server_user: str | None) -> TlsFiles:
    """A server certificate for 127.0.0.1 from a CA made for the run, its key readable by
    the server's user only (PostgreSQL refuses a key others can read)."""
    files = make_tls(directory)
    if server_user:
        for path in (directory, files.cert, files.key):
            shutil.chown(path, server_user)
    return files


SCHEMA = """
CREATE TABLE experiments (
    id serial PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE runs (
    id serial PRIMARY KEY, experiment_id int REFERENCES experiments(id), name text NOT NULL,
    status text NOT NULL CHECK (status IN ('queued', 'running', 'finished', 'failed')),
    start_time timestamptz, end_time timestamptz);
CREATE TABLE models (
    id serial PRIMARY KEY, run_id int REFERENCES runs(id), name text NOT NULL,
    version int NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE system_logs (
    id bigserial PRIMARY KEY, log_level text NOT NULL, message text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
"""

SEED = """
INSERT INTO experiments (name, created_at)
SELECT 'experiment-' || i, now() - (i || ' days')::interval FROM generate_series(1, 12) AS i;
INSERT INTO runs (experiment_id, name, status, start_time, end_time)
SELECT 1 + i % 12, 'run-' || i,
       CASE WHEN i <= 3 THEN 'running' WHEN i % 17 = 0 THEN 'failed' ELSE 'finished' END,
       now() - (i || ' hours')::interval + interval '1 hour',
       CASE WHEN i <= 3 THEN NULL ELSE now() - (i || ' hours')::interval + interval '2 hours' END
FROM generate_series(1, 240) AS i;
INSERT INTO models (run_id, name, version, created_at)
SELECT 10 + i, 'forecaster', i, now() - (i || ' days')::interval FROM generate_series(1, 40) AS i;
INSERT INTO system_logs (log_level, message, created_at)
SELECT CASE WHEN i % 97 = 0 THEN 'ERROR' WHEN i % 13 = 0 THEN 'WARNING' ELSE 'INFO' END,
       'pipeline step ' || i, now() - (i || ' minutes')::interval * 7
FROM generate_series(1, 2000) AS i;
"""


