"""The PostgreSQL security checks PASS on the sandbox's hardened server and FAIL on a real
weak one (TLS off, MD5, connections unlogged, trust lines, two superusers, an MD5 password);
pg_hba.conf and pg_authid need privileges, and a role without them is a SKIP naming the
least grant, proven with real roles; and every statement they send is a read
(``log_statement=all``)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from opsverify.sandbox.postgres import APP_ROLE, PostgresServer, bindir
from opsverify.sandbox.process import (
    free_port,
    port_open,
    spawn,
    stop,
    unprivileged_user,
    wait_until,
)
from opsverify.targets.postgres import WRITE_KEYWORDS, PostgresTarget
from tests.conftest import Project, Result, outcomes, postgres_workdir, sandbox_postgres

pytestmark = pytest.mark.skipif(bindir() is None,
                                reason="PostgreSQL not found (apt-get install postgresql)")
PASSWORD = "pg-sec-test-pw-4b1d"  # a test value that must never be shown
CHECK = "checks/security/test_postgres.py"
CHECKS = ("test_ssl", "test_password_encryption", "test_log_connections", "test_hba_auth",
          "test_superusers", "test_password_hashes")


class Server:
    """A started sandbox PostgreSQL, hardened as the sandbox starts it."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server

    def dsn(self, user: str = "opsverify", dbname: str = "postgres") -> str:
        return f"postgresql://{user}:{PASSWORD}@127.0.0.1:{self.server.port}/{dbname}"

    @property
    def superuser_dsn(self) -> str:
        return f"host={self.server.sockdir} port={self.server.port} user=postgres dbname=postgres"

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        return self.server._admin()


@contextlib.contextmanager
def sandbox_server(faults: frozenset[str] = frozenset()) -> Iterator[Server]:
    """The sandbox's PostgreSQL, started on its own, with ``faults`` injected."""
    with sandbox_postgres(PASSWORD, faults) as server:
        yield Server(server)


@pytest.fixture(scope="module")
def hardened() -> Iterator[Server]:
    """The sandbox's PostgreSQL: TLS, SCRAM, connections and statements logged."""
    with sandbox_server() as server:
        yield server


@pytest.fixture(scope="module")
def weak() -> Iterator[str]:
    """A PostgreSQL as an old installation leaves it: initdb's trust for local connections,
    MD5 for TCP, no TLS, connections not logged, a second superuser and an MD5 password.
    Returns the superuser's DSN (over the socket, trusted)."""
    binaries = bindir()
    assert binaries is not None
    workdir = postgres_workdir(owned=True)
    user = unprivileged_user()
    port = free_port()
    subprocess.run([str(binaries / "initdb"), "-D", str(workdir / "data"), "-U", "postgres",
                    "--auth-local=trust", "--auth-host=md5", "--no-sync"],
                   capture_output=True, check=True, user=user, timeout=60)
    log = workdir / "postgres.log"
    process = spawn([str(binaries / "postgres"), "-D", str(workdir / "data"), "-p", str(port),
                     "-k", str(workdir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                     "-c", "ssl=off", "-c", "password_encryption=md5",
                     "-c", "log_connections=off"], log=log, user=user)
    dsn = f"host={workdir} port={port} user=postgres dbname=postgres"

    def accepts() -> bool:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return port_open(port)

    try:
        wait_until(accepts, timeout_s=30, what="PostgreSQL", process=process, log=log)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET log_statement = 'none'")
            conn.execute(f"CREATE ROLE legacy_app LOGIN PASSWORD '{PASSWORD}'")  # md5
            conn.execute(f"CREATE ROLE dba LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        yield dsn
    finally:
        stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def run(project: Project, targets: dict[str, str], *args: str,
        security: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    """Run the stock PostgreSQL security checks against ``targets`` (name: DSN, passed in
    variables, as secrets are); outcomes keyed ``test[id]``."""
    project.copy_check(CHECK)
    lines = ["settings: {timeout_s: 5}", "targets:"]
    variables = {}
    for index, (name, dsn) in enumerate(targets.items()):
        variables[f"PG_DSN_{index}"] = dsn
        lines += [f"  {name}:", "    type: postgres", f"    dsn: ${{PG_DSN_{index}}}"]
        if security and name in security:
            lines.append(f"    security: {security[name]}")
    return project.run_checks("sec", "\n".join(lines) + "\n", *args, env=variables)



def failing(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"] if m["verdict"] in ("FAIL", "WARN")}


# -- schema ----------------------------------------------------------------------------------
def test_schema() -> None:
    spec = PostgresTarget(type="postgres", dsn="postgresql://db/app")
    assert spec.security.max_superusers == 1
    assert spec.security.hba_auth
    spec = PostgresTarget(type="postgres", dsn="postgresql://db/app",
                          security={"ssl": False, "max_superusers": 3})
    assert not spec.security.ssl
    assert spec.security.max_superusers == 3
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PostgresTarget(type="postgres", dsn="postgresql://db/app", security={"tls": False})


# -- good and bad servers ----------------------------------------------------------------------
def test_hardened_server_passes_every_check(project: Project, hardened: Server) -> None:
    result, checks = run(project, {"cluster": hardened.superuser_dsn,
                                   "monitor": hardened.dsn()})
    assert outcomes(checks) == {
        **{f"{c}[cluster]": "PASS" for c in CHECKS},
        **{f"{c}[monitor]": "PASS" for c in CHECKS if c != "test_password_hashes"},
        # The monitoring role may not read pg_authid: a SKIP naming the least grant.
        "test_password_hashes[monitor]": "SKIP"}, result.output
    assert result.returncode == 0, result.output
    skipped = checks["test_password_hashes[monitor]"]["message"]
    assert ("grant it: GRANT SELECT (rolname, rolcanlogin, rolpassword) ON "
            "pg_catalog.pg_authid TO opsverify") in skipped
    evidence = {m["name"]: m["value"] for m in checks["test_ssl[monitor]"]["evidence"]}
    assert evidence["ssl"] == "on"
    assert evidence["this session"].startswith("encrypted, TLSv1.")  # libpq's sslmode=prefer
    notes = {m["name"]: m["value"] for m in checks["test_password_hashes[cluster]"]["evidence"]}
    assert notes["login roles without a password"] == "postgres"  # peer only: noted
    assert PASSWORD not in result.output


def test_weak_server_fails_every_check(project: Project, weak: str) -> None:
    result, checks = run(project, {"weak": weak})
    assert outcomes(checks) == {
        "test_ssl[weak]": "FAIL", "test_password_encryption[weak]": "FAIL",
        "test_log_connections[weak]": "WARN", "test_hba_auth[weak]": "FAIL",
        "test_superusers[weak]": "FAIL", "test_password_hashes[weak]": "FAIL"}, result.output
    assert failing(checks["test_ssl[weak]"]) == {"ssl": "off"}
    assert failing(checks["test_password_encryption[weak]"]) == {"password_encryption": "md5"}
    assert failing(checks["test_log_connections[weak]"]) == {"postgres.log_connections_off": 1}
    unsafe = failing(checks["test_hba_auth[weak]"])["trust or password lines"]
    assert re.search(r"line \d+: local all all trust", unsafe), unsafe
    assert " md5" not in unsafe  # weak, but not what this check is about
    assert failing(checks["test_superusers[weak]"]) == {"superuser count": 2}
    assert failing(checks["test_password_hashes[weak]"]) == {
        "roles with an md5, empty or plain-text password": "dba (md5), legacy_app (md5)"}
    assert PASSWORD not in result.output


def test_opt_out_and_declared_superusers(project: Project, weak: str) -> None:
    result, checks = run(project, {"weak": weak},
                         security={"weak": "{ssl: false, max_superusers: 2}"})
    assert checks["test_ssl[weak]"]["outcome"] == "SKIP"
    assert checks["test_ssl[weak]"]["message"].startswith(
        "opted out: targets.weak.security.ssl is false (environments/sec.yaml:")
    assert checks["test_superusers[weak]"]["outcome"] == "PASS", result.output
    superusers = {m["name"]: m for m in checks["test_superusers[weak]"]["evidence"]}
    assert superusers["superusers"]["value"] == "dba, postgres"
    assert superusers["superuser count"]["source"].startswith("environments/sec.yaml:")


def test_trust_line_fault_fails_hba_check(project: Project) -> None:
    """--sandbox-fault pg-trust-auth: the application role gets in without a password."""
    with sandbox_server(frozenset({"pg-trust-auth"})) as faulty:
        # The bad state is real: no password, and the server lets the role in.
        with psycopg.connect(host="127.0.0.1", port=faulty.server.port, user=APP_ROLE,
                             dbname="postgres", password="", connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        result, checks = run(project, {"cluster": faulty.dsn()}, "-k", "hba")
    assert outcomes(checks) == {"test_hba_auth[cluster]": "FAIL"}, result.output
    assert failing(checks["test_hba_auth[cluster]"]) == {
        "trust or password lines": f"line 1: host all {APP_ROLE} 127.0.0.1/255.255.255.255 trust"}


# -- privileges --------------------------------------------------------------------------------
def test_missing_privileges_skip_naming_the_least_grant(project: Project,
                                                          hardened: Server) -> None:
    """A monitoring role with pg_monitor but no grant: SKIP with the grant; SELECT on the
    view, which the documentation suggests, is not enough; EXECUTE on the function is."""
    with hardened.admin() as conn:
        conn.execute("SET log_statement = 'none'")
        conn.execute(f"CREATE ROLE auditor LOGIN PASSWORD '{PASSWORD}' IN ROLE pg_monitor")
    try:
        def hba() -> dict[str, Any]:
            result, checks = run(project, {"audit": hardened.dsn("auditor")}, "-k",
                                 "hba or password_hashes")
            assert result.returncode == 0, result.output
            return {name.split("[")[0]: c for name, c in checks.items()}

        checks = hba()
        assert checks["test_hba_auth"]["outcome"] == "SKIP"
        assert checks["test_hba_auth"]["message"] == (
            "audit: cannot read pg_hba_file_rules without a privilege this account lacks; "
            "grant it: GRANT EXECUTE ON FUNCTION pg_catalog.pg_hba_file_rules() TO auditor")
        assert checks["test_password_hashes"]["outcome"] == "SKIP"
        with hardened.admin() as conn:
            conn.execute("GRANT SELECT ON pg_catalog.pg_hba_file_rules TO auditor")
        assert hba()["test_hba_auth"]["outcome"] == "SKIP"  # the view alone: still denied
        with hardened.admin() as conn:
            conn.execute("REVOKE SELECT ON pg_catalog.pg_hba_file_rules FROM auditor")
            conn.execute("GRANT EXECUTE ON FUNCTION pg_catalog.pg_hba_file_rules() TO auditor")
            conn.execute("GRANT SELECT (rolname, rolcanlogin, rolpassword) "
                         "ON pg_catalog.pg_authid TO auditor")
        checks = hba()
        assert checks["test_hba_auth"]["outcome"] == "PASS", checks["test_hba_auth"]
        assert checks["test_password_hashes"]["outcome"] == "PASS"
    finally:
        with hardened.admin() as conn:
            conn.execute("REVOKE ALL ON FUNCTION pg_catalog.pg_hba_file_rules() FROM auditor")
            conn.execute("REVOKE ALL ON pg_catalog.pg_authid FROM auditor")
            conn.execute("DROP ROLE auditor")


# -- read-only ---------------------------------------------------------------------------------
def test_security_checks_send_only_reads(project: Project, hardened: Server) -> None:
    """With log_statement=all, every statement the checks sent is a read: SELECT or SHOW,
    inside BEGIN READ ONLY ... ROLLBACK; not one writes."""
    log = hardened.server.log
    start = log.stat().st_size
    result, _ = run(project, {"cluster": hardened.superuser_dsn, "monitor": hardened.dsn()})
    assert result.returncode == 0, result.output
    statements = sent_statements(log.read_text(errors="replace")[start:])
    assert any("pg_hba_file_rules()" in s for s in statements), statements
    assert any("pg_authid" in s for s in statements), statements
    for statement in statements:
        verb = statement.split(None, 1)[0].upper()
        assert verb in ("SELECT", "SHOW", "BEGIN", "ROLLBACK"), statement
        assert verb != "BEGIN" or statement.upper().startswith("BEGIN READ ONLY"), statement
        assert WRITE_KEYWORDS.search(statement) is None, statement
    assert "rolpassword," not in " ".join(statements)  # classified, never selected


def sent_statements(log: str) -> list[str]:
    """The statements sessions named opsverify sent, each with its continuation lines."""
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", log)
    found = []
    for entry in entries:
        match = re.search(r" opsverify: LOG:  statement: (.*)", entry, re.S)
        if match:
            found.append(match.group(1).strip())
    return found
