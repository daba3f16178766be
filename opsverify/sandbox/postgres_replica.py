"""A streaming replica of the sandbox PostgreSQL, cloned with ``pg_basebackup -R``.

The replica is launched from the main thread like every server (see ``process.spawn``) but
cannot be cloned before its primary answers, so its process is a small shell loop: retry
``pg_basebackup`` until the primary accepts the replication role, then ``exec postgres``.
The primary creates that role first thing when it is seeded.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import signal
import subprocess
from typing import TYPE_CHECKING, ClassVar

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import FAULTS_OF
from opsverify.sandbox.postgres import (
    MONITOR_ROLE,
    PRIMARY_TLS,
    REPLICATION_ROLE,
    SECURE_SETTINGS,
    bindir,
    server_tls,
)
from opsverify.sandbox.process import (
    free_port,
    port_open,
    spawn,
    stop,
    unprivileged_user,
    wait_until,
)
from opsverify.sandbox.spec import PostgresReplicaComponent
from opsverify.sandbox.tls import TlsFiles

# psycopg is imported by the functions that use it: a sandbox imports every
# component (runtime.COMPONENTS), and many start only some of them.
if TYPE_CHECKING:
    import psycopg

CLUSTER_NAME = "sandbox-replica"  # the application_name the primary sees it by
CLONE_ATTEMPTS = 600  # every 50 ms: the primary has 30 s to come up and be seeded


class PostgresReplicaServer:
    """A hot standby of ``postgres``, in ``workdir/postgres-replica``."""

    name: ClassVar[str] = "postgres_replica"
    install_hint: ClassVar[str] = "apt-get install postgresql"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["postgres_replica"]

    def __init__(self, spec: PostgresReplicaComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.port = free_port()
        self.primary_port = ctx.ports["postgres"]
        self.datadir = ctx.workdir / "postgres-replica"
        self.sockdir = ctx.workdir / "pg-replica-socket"
        self.passfile = ctx.workdir / "replica.pgpass"
        self.log = ctx.workdir / "postgres-replica.log"
        self.clone_log = ctx.workdir / "pg_basebackup.log"
        self.tls = TlsFiles.under(ctx.workdir / "pg-replica-tls")  # written by prepare()
        self.user = unprivileged_user()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return (f"postgresql://{MONITOR_ROLE}:{self.ctx.password}@127.0.0.1:{self.port}/"
                f"{self.spec.database}")

    def variables(self) -> dict[str, str]:
        return {"SANDBOX_POSTGRES_REPLICA_DSN": self.dsn}

    def prepare(self) -> None:
        binaries = bindir()
        if binaries is None or not (binaries / "pg_basebackup").exists():
            raise FileNotFoundError(f"PostgreSQL server binaries not found ({self.install_hint})")
        self.sockdir.mkdir()
        # Hardened like its primary (its pg_hba.conf is the primary's, cloned); settings on
        # the primary's command line are not cloned, so they are given again here.
        server_tls(self.tls.ca.parent, self.user)
        # The replication password goes in a passfile, not argv, where `ps` would show it.
        escaped = self.ctx.password.replace("\\", "\\\\").replace(":", "\\:")
        self.passfile.write_text(
            f"127.0.0.1:{self.primary_port}:*:{REPLICATION_ROLE}:{escaped}\n")
        self.passfile.chmod(0o600)
        if self.user:
            for path in (self.sockdir, self.passfile):
                shutil.chown(path, self.user)

    def launch(self) -> None:
        if "db-down" in self.ctx.faults:
            return  # nothing to clone from: the replica stays down with its primary
        binaries = bindir()
        assert binaries is not None
        # Over TLS, the primary's certificate verified against its CA (the primary wrote it
        # in prepare); -R keeps this as the WAL receiver's primary_conninfo.
        conninfo = (f"host=127.0.0.1 port={self.primary_port} user={REPLICATION_ROLE} "
                    f"passfile={self.passfile} sslmode=verify-full "
                    f"sslrootcert={TlsFiles.under(self.ctx.workdir / PRIMARY_TLS).ca}")
        clone = " ".join(shlex.quote(a) for a in (
            str(binaries / "pg_basebackup"), "-d", conninfo, "-D", str(self.datadir),
            "-R", "-X", "stream", "--checkpoint=fast", "--no-sync", "--no-manifest"))
        serve = " ".join(shlex.quote(a) for a in (
            str(binaries / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
            "-k", str(self.sockdir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", f"cluster_name={CLUSTER_NAME}", "-c", "log_line_prefix=%m [%p] %u@%d %a: ",
            "-c", "max_connections=50", "-c", "shared_buffers=32MB", *SECURE_SETTINGS,
            "-c", f"ssl_cert_file={self.tls.cert}", "-c", f"ssl_key_file={self.tls.key}"))
        datadir, clone_log = shlex.quote(str(self.datadir)), shlex.quote(str(self.clone_log))
        script = (
            # libpq looks for a client certificate in ~/.postgresql: run as the server's
            # user, HOME (root's) would be unreadable, and TLS would fail rather than go
            # without one.
            f"export HOME={shlex.quote(str(self.tls.ca.parent))}\n"
            "attempt=0\n"
            f"until {clone} 2>{clone_log}; do\n"
            f"  rm -rf {datadir}\n"
            "  attempt=$((attempt + 1))\n"
            f"  if [ $attempt -ge {CLONE_ATTEMPTS} ]; then cat {clone_log}; exit 1; fi\n"
            "  sleep 0.05\n"
            "done\n"
            f"exec {serve}\n"
        )
        self.process = spawn(["sh", "-c", script], log=self.log, user=self.user,
                             on_parent_death=signal.SIGQUIT)

    def ready(self) -> None:
        """Wait until the replica streams and has replayed the primary's monitoring role
        and database, so checks can log in to it."""
        if self.process is None:
            return
        wait_until(self._streaming, timeout_s=60, what="PostgreSQL replica",
                   process=self.process, log=self.log)

    def inject(self, faults: frozenset[str]) -> None:
        if "replica-broken" in faults and self.process is not None:
            self.break_streaming()

    def break_streaming(self) -> None:
        """Give the WAL receiver a stale password and wait until both ends see it gone."""
        from psycopg import sql

        stale = (f"host=127.0.0.1 port={self.primary_port} user={REPLICATION_ROLE} "
                 f"password=stale-{secrets.token_hex(4)}")
        with self.admin() as conn:
            conn.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(
                sql.Literal(stale)))
            conn.execute("SELECT pg_reload_conf()")
        wait_until(lambda: not self._receiving() and self._primary_senders() == 0,
                   timeout_s=15, what="the replica to stop streaming", log=self.log)

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """A superuser session on the replica (its unix socket), for the sandbox only."""
        import psycopg

        return psycopg.connect(host=str(self.sockdir), port=self.port, user="postgres",
                               dbname="postgres", autocommit=True, connect_timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process, signal.SIGINT)  # fast shutdown

    def _streaming(self) -> bool:
        import psycopg

        if not port_open(self.port):
            return False
        try:
            with self.admin() as conn:
                row = conn.execute(
                    "SELECT (SELECT status FROM pg_stat_wal_receiver) = 'streaming',"
                    " EXISTS (SELECT FROM pg_roles WHERE rolname = %s),"
                    " EXISTS (SELECT FROM pg_database WHERE datname = %s)",
                    (MONITOR_ROLE, self.spec.database)).fetchone()
        except psycopg.OperationalError:
            return False
        return row is not None and all(row)

    def _receiving(self) -> bool:
        with self.admin() as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_wal_receiver "
                               "WHERE status = 'streaming'").fetchone()
        return row is not None and int(str(row[0])) > 0

    def _primary_senders(self) -> int:
        """Replication connections the primary serves, seen as the monitoring role."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.primary_port, user=MONITOR_ROLE,
                             password=self.ctx.password, dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone()
        return int(str(row[0])) if row else 0
