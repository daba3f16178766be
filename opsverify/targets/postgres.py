"""PostgreSQL targets: the ``postgres`` section and clients that are read-only unless asked.

A read-only client is enforced twice: on our side (only SELECT-like statements are sent)
and on the server's (``default_transaction_read_only=on``). Every session carries
``statement_timeout``, ``lock_timeout``, ``idle_in_transaction_session_timeout`` and
``application_name=opsverify``; a client-side watchdog bounds the whole operation.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql as pgsql

from opsverify.errors import MissingPrivilege, TargetUnavailable, WriteRefused
from opsverify.targets.base import DeadlinePassed, run_within

# The write guard (opsverify/targets/postgres_guard.py), re-exported for its callers.
from opsverify.targets.postgres_guard import WRITE_KEYWORDS as WRITE_KEYWORDS
from opsverify.targets.postgres_guard import refuse_writes as refuse_writes

# What the client returns (opsverify/targets/postgres_model.py), re-exported for checks.
from opsverify.targets.postgres_model import STORED_HASH_KINDS as STORED_HASH_KINDS
from opsverify.targets.postgres_model import HbaRule as HbaRule
from opsverify.targets.postgres_model import Replica as Replica
from opsverify.targets.postgres_model import RolePassword as RolePassword
from opsverify.targets.postgres_model import Session as Session
from opsverify.targets.postgres_model import WalReceiver as WalReceiver

# The section's model (opsverify/targets/postgres_spec.py), re-exported for its callers.
from opsverify.targets.postgres_spec import Bounds as Bounds
from opsverify.targets.postgres_spec import PostgresSecurity as PostgresSecurity
from opsverify.targets.postgres_spec import PostgresTarget as PostgresTarget
from opsverify.targets.postgres_spec import SqlCheck as SqlCheck
from opsverify.targets.postgres_spec import same_value as same_value
from opsverify.targets.postgres_spec import version_num as version_num

APPLICATION_NAME = "opsverify"
T = TypeVar("T")


class PostgresClient:
    """One session to one target, opened lazily, with every deadline set.

    ``writable=False`` (the default) refuses writes on both sides of the wire. Safe to share
    between threads: one statement at a time (``self._lock``), each with its own deadline.
    """

    def __init__(
        self, name: str, spec: PostgresTarget, timeout_s: float, *, writable: bool = False
    ) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.writable = writable
        self._conn: psycopg.Connection[Any] | None = None
        # Probe threads and the main thread share this client. psycopg serialises a
        # connection's commands, but not ours around them: a statement and the rollback
        # that ends its READ ONLY transaction must not interleave with another's (an error
        # would abort the other's transaction), nor a deadline's cut or a reconnect race
        # another statement. Held across connect(): a session opens once.
        self._lock = threading.RLock()

    # -- connection -------------------------------------------------------------------
    def connect(self) -> None:
        """Open the session, or raise :class:`TargetUnavailable` within the deadline."""
        with self._lock:
            self._open()

    def _open(self) -> None:
        if self._conn is not None:
            return
        ms = int(self.timeout_s * 1000)
        options = [
            f"-c statement_timeout={ms}",
            f"-c lock_timeout={ms}",
            f"-c idle_in_transaction_session_timeout={max(ms, 1000)}",
        ]
        if not self.writable:
            options.append("-c default_transaction_read_only=on")
        def open_session() -> psycopg.Connection[Any]:
            return psycopg.connect(
                self.spec.dsn,
                # Read-only: every statement runs in its own BEGIN READ ONLY transaction, so
                # not even set_config() inside a query can make the session writable.
                autocommit=self.writable,
                # libpq's floor is 2 s and it does not bound every step; run_within
                # enforces the real deadline.
                connect_timeout=max(2, math.ceil(self.timeout_s)),
                application_name=APPLICATION_NAME + ("-remediation" if self.writable else ""),
                options=" ".join(options),
            )

        try:
            conn = run_within(open_session, self.timeout_s, name="opsverify-pg-connect")
        except DeadlinePassed:
            raise self._unavailable(f"no answer within {self.timeout_s:g} s") from None
        except psycopg.OperationalError as exc:
            if "timeout expired" in str(exc):  # libpq's own deadline fired first: the same
                raise self._unavailable(f"no answer within {self.timeout_s:g} s") from None
            raise self._unavailable(_cause(exc)) from None
        if not self.writable:
            conn.read_only = True
        self._conn = conn

    def close(self) -> None:
        with self._lock:  # a statement still running ends within its own deadline
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reading ----------------------------------------------------------------------
    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a statement; a write from a read-only client raises :class:`WriteRefused`."""
        if not self.writable:
            refuse_writes(sql)
        with self._lock:
            return self._query(sql, params)

    def _query(self, sql: str, params: Sequence[Any] | None) -> list[tuple[Any, ...]]:
        self._open()
        conn = self._conn
        assert conn is not None

        def run() -> list[tuple[Any, ...]]:
            try:
                with conn.cursor() as cur:
                    cur.execute(sql, params)  # type: ignore[arg-type,unused-ignore]
                    return cur.fetchall() if cur.description else []
            finally:
                if not self.writable and not conn.closed:
                    conn.rollback()  # end the READ ONLY transaction; nothing to keep

        try:
            return self._bounded(run, conn)
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise WriteRefused(
                f"{self.name}: the server refused a write in a read-only session: "
                f"{exc.diag.message_primary}"
            ) from None
        except psycopg.errors.QueryCanceled:
            raise self._unavailable(f"query exceeded {self.timeout_s:g} s") from None
        except psycopg.OperationalError as exc:
            self._conn = None
            raise self._unavailable(_cause(exc)) from None

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        rows = self.query(sql, params)
        if not rows or len(rows[0]) != 1:
            raise ValueError(f"{self.name}: expected one value, got {len(rows)} row(s)")
        return rows[0][0]

    def is_in_recovery(self) -> bool:
        return bool(self.scalar("SELECT pg_is_in_recovery()"))

    def server_version(self) -> tuple[str, int]:
        """``('15.13 (Debian 15.13-0+deb12u1)', 150013)``."""
        row = self.query("SELECT current_setting('server_version'), "
                         "current_setting('server_version_num')::int")[0]
        return str(row[0]), int(row[1])

    def replicas(self) -> list[Replica]:
        """The standbys this server feeds. Lag in bytes is measured from this server's own
        position (its received position when it is itself a cascading standby); a standby
        that has replayed everything has no replay_lag, which counts as 0 s."""
        rows = self.query(
            """
            SELECT coalesce(nullif(application_name, ''), 'pid ' || pid),
                   coalesce(host(client_addr), 'local'), coalesce(state, 'unknown'),
                   coalesce(extract(epoch FROM replay_lag), 0)::float8,
                   coalesce(pg_wal_lsn_diff(
                       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
                            ELSE pg_current_wal_lsn() END, replay_lsn), 0)::float8
            FROM pg_stat_replication ORDER BY 1
            """
        )
        return [Replica(*row) for row in rows]

    def wal_receiver(self) -> WalReceiver:
        """How this standby follows its primary. Time lag is 0 when everything received is
        replayed (an idle primary sends nothing, which is not lag); unknown (None) when WAL
        waits but nothing was replayed since the standby started."""
        row = self.query(
            """
            SELECT pg_is_in_recovery(),
                   coalesce((SELECT status FROM pg_stat_wal_receiver), 'not running'),
                   coalesce((SELECT sender_host || ':' || sender_port
                             FROM pg_stat_wal_receiver), ''),
                   CASE WHEN pg_last_wal_receive_lsn() IS NULL
                          OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
                        ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())
                   END::float8,
                   coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(),
                                            pg_last_wal_replay_lsn()), 0)::float8
            """
        )[0]
        return WalReceiver(bool(row[0]), str(row[1]), str(row[2]),
                           None if row[3] is None else float(row[3]), max(0.0, float(row[4])))

    def stale_idle_sessions(self, max_age_s: float) -> list[Session]:
        """Client sessions idle longer than ``max_age_s``, other than opsverify's own."""
        rows = self.query(
            """
            SELECT pid, coalesce(usename, ''), application_name,
                   coalesce(host(client_addr), 'local'), state,
                   extract(epoch FROM now() - state_change)::float8
            FROM pg_stat_activity
            WHERE backend_type = 'client backend' AND state = 'idle'
              AND pid <> pg_backend_pid()
              AND application_name NOT LIKE 'opsverify%%'
              AND state_change < now() - make_interval(secs => %s)
            ORDER BY state_change
            """,
            (max_age_s,),
        )
        return [Session(*row) for row in rows]

    # -- security (checks/security/test_postgres.py) ---------------------------------------
    def settings(self, names: Sequence[str]) -> dict[str, str]:
        """Current values of server settings by name (pg_settings). A setting this role may
        not see raises :class:`MissingPrivilege`."""
        rows = self.query("SELECT name, setting FROM pg_catalog.pg_settings "
                          "WHERE name = ANY(%s)", (list(names),))
        values = {str(name): str(setting) for name, setting in rows}
        hidden = [name for name in names if name not in values]
        if hidden:
            raise MissingPrivilege(self.name, f"the setting(s) {', '.join(hidden)}",
                                   f"GRANT pg_read_all_settings TO {self._role()}")
        return values

    def session_ssl(self) -> tuple[bool, str]:
        """Whether this session is encrypted, and with which protocol (pg_stat_ssl)."""
        rows = self.query("SELECT ssl, coalesce(version, '') FROM pg_catalog.pg_stat_ssl "
                          "WHERE pid = pg_backend_pid()")
        return (bool(rows[0][0]), str(rows[0][1])) if rows else (False, "")

    def hba_rules(self) -> list[HbaRule]:
        """pg_hba.conf as the server parses it. PostgreSQL 15 lets only superusers read it:
        the least grant is EXECUTE on the function behind the view (SELECT on the view alone
        is not enough: a view's functions are checked against its user), which is why the
        function is read, not the view."""
        role, allowed = self.query(
            "SELECT current_user, has_function_privilege("
            "'pg_catalog.pg_hba_file_rules()', 'EXECUTE')")[0]
        if not allowed:
            raise MissingPrivilege(
                self.name, "pg_hba_file_rules",
                f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_hba_file_rules() TO {_ident(role)}")
        rows = self.query(
            "SELECT line_number, coalesce(type, ''), array_to_string(database, ','), "
            "array_to_string(user_name, ','), concat_ws('/', address, netmask), "
            "coalesce(auth_method, ''), coalesce(error, '') "
            "FROM pg_catalog.pg_hba_file_rules() ORDER BY line_number")
        return [HbaRule(int(r[0] or 0), *(str(v) for v in r[1:])) for r in rows]

    def superusers(self) -> list[str]:
        """Roles with SUPERUSER (pg_roles, readable by every role)."""
        return [str(r[0]) for r in self.query(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolsuper ORDER BY rolname")]

    def password_kinds(self) -> list[RolePassword]:
        """How each login role's password is stored (pg_authid: superusers only, or a
        column grant; the hash itself never leaves the server)."""
        role, allowed = self.query(
            "SELECT current_user, has_column_privilege('pg_catalog.pg_authid', 'rolname', "
            "'SELECT') AND has_column_privilege('pg_catalog.pg_authid', 'rolcanlogin', "
            "'SELECT') AND has_column_privilege('pg_catalog.pg_authid', 'rolpassword', "
            "'SELECT')")[0]
        if not allowed:
            raise MissingPrivilege(
                self.name, "pg_authid (how passwords are stored)",
                "GRANT SELECT (rolname, rolcanlogin, rolpassword) ON pg_catalog.pg_authid "
                f"TO {_ident(role)} (the role can then read password hashes), or run this "
                "check as a superuser")
        return [RolePassword(str(name), str(kind)) for name, kind in self.query(STORED_HASH_KINDS)]

    def _role(self) -> str:
        return _ident(str(self.scalar("SELECT current_user")))

    # -- writing (remediation only) ------------------------------------------------------
    def terminate(self, pid: int) -> bool:
        if not self.writable:
            raise WriteRefused(f"{self.name}: pg_terminate_backend from a read-only client")
        if int(self.scalar("SHOW server_version_num")) >= 140000:
            # Wait for the backend to be gone, so a re-check right after sees the result.
            wait_ms = int(self.timeout_s * 1000 / 2)
            return bool(self.scalar("SELECT pg_terminate_backend(%s, %s)", (pid, wait_ms)))
        return bool(self.scalar("SELECT pg_terminate_backend(%s)", (pid,)))

    def cancel(self, pid: int) -> bool:
        if not self.writable:
            raise WriteRefused(f"{self.name}: pg_cancel_backend from a read-only client")
        return bool(self.scalar("SELECT pg_cancel_backend(%s)", (pid,)))

    def vacuum(self, schema: str, table: str, lock_timeout_s: float) -> list[str]:
        """``VACUUM (ANALYZE)`` one table (this session is autocommit: VACUUM cannot run in
        a transaction block), giving up after ``lock_timeout_s`` waiting for its lock.
        Returns the server's warnings: a table this role may not vacuum is skipped with a
        WARNING, not an error."""
        if not self.writable:
            raise WriteRefused(f"{self.name}: VACUUM from a read-only client")
        statement = pgsql.SQL("VACUUM (ANALYZE) {}.{}").format(pgsql.Identifier(schema),
                                                               pgsql.Identifier(table))
        warnings: list[str] = []

        def keep(diag: psycopg.errors.Diagnostic) -> None:
            if diag.severity_nonlocalized == "WARNING" and diag.message_primary:
                warnings.append(diag.message_primary)

        def run(conn: psycopg.Connection[Any]) -> None:
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('lock_timeout', %s, false)",
                            (f"{int(lock_timeout_s * 1000)}ms",))
                try:
                    cur.execute(statement)
                finally:
                    cur.execute("SELECT set_config('lock_timeout', %s, false)",
                                (f"{int(self.timeout_s * 1000)}ms",))

        with self._lock:
            self._open()
            conn = self._conn
            assert conn is not None
            conn.add_notice_handler(keep)
            try:
                self._bounded(lambda: run(conn), conn)
            except psycopg.errors.LockNotAvailable:
                raise RuntimeError(f"VACUUM of {schema}.{table} gave up: another session "
                                   f"held its lock past lock_timeout "
                                   f"({lock_timeout_s:g} s)") from None
            except psycopg.errors.QueryCanceled:
                raise RuntimeError(f"VACUUM of {schema}.{table} did not finish within "
                                   f"statement_timeout ({self.timeout_s:g} s, the target's "
                                   "timeout_s)") from None
            except psycopg.OperationalError as exc:
                self._conn = None
                raise self._unavailable(_cause(exc)) from None
            finally:
                conn.remove_notice_handler(keep)
        return warnings

    # -- internals --------------------------------------------------------------------
    def _bounded(self, fn: Callable[[], T], conn: psycopg.Connection[Any] | None) -> T:
        """Run ``fn``; past the deadline, cut the socket so a hung server cannot hold us."""
        fired = threading.Event()

        def cut() -> None:
            fired.set()
            if conn is not None:
                _shutdown(conn)

        timer = threading.Timer(self.timeout_s + 0.5, cut)
        timer.daemon = True
        timer.start()
        try:
            return fn()
        except psycopg.OperationalError:
            if fired.is_set():
                self._conn = None
                raise self._unavailable(f"no answer within {self.timeout_s:g} s") from None
            raise
        finally:
            timer.cancel()

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, f"postgres {self.spec.address()}", cause)


def _shutdown(conn: psycopg.Connection[Any]) -> None:
    try:
        fd = os.dup(conn.fileno())
    except (OSError, psycopg.Error):
        return
    try:
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _cause(exc: psycopg.Error) -> str:
    """libpq's reason in one line, without the connection string or the server address."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    text = text.removeprefix("connection failed: ")
    text = re.sub(r'^connection to server (at "[^"]*"( \([^)]*\))?, port \d+|on socket "[^"]*") '
                  r"failed: ", "", text)
    text = text.replace("FATAL:  ", "").strip() or type(exc).__name__
    # libpq capitalises its own messages ("Connection refused"); the others are lower case.
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _ident(name: str) -> str:
    """A role name as GRANT takes it: quoted unless it is a plain lower-case identifier."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'
