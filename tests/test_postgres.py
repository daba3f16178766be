"""The postgres health checks (version, role, replication) PASS and FAIL against a real
primary and a real streaming replica cloned with ``pg_basebackup -R``: healthy, declared as
what they are not, lagging (replay paused) and broken (``--sandbox-fault replica-broken``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from opsverify.sandbox.postgres import PostgresServer, bindir
from opsverify.sandbox.postgres_replica import PostgresReplicaServer
from opsverify.sandbox.process import wait_until
from opsverify.sandbox.runtime import Sandbox
from opsverify.sandbox.spec import PostgresComponent, PostgresReplicaComponent, SandboxSpec
from opsverify.targets.postgres import PostgresClient, PostgresTarget, version_num
from tests.conftest import Project, Result

pytestmark = pytest.mark.skipif(bindir() is None,
                                reason="PostgreSQL not found (apt-get install postgresql)")

DECLARED = """
settings: {timeout_s: 3}
targets:
  db:
    type: postgres
    dsn: ${PRIMARY_DSN}
    role: primary
    min_version: 14
    expect_replicas: 1
  db-replica:
    type: postgres
    dsn: ${REPLICA_DSN}
    role: replica
    min_version: "14.0"
"""
# The same two servers, each declared as what the other is.
SWAPPED = """
settings: {timeout_s: 3}
targets:
  db:
    type: postgres
    dsn: ${PRIMARY_DSN}
    role: replica
  db-replica:
    type: postgres
    dsn: ${REPLICA_DSN}
    role: primary
    min_version: "99"
    expect_replicas: 1
"""
SANDBOXED = """
settings: {timeout_s: 3}
sandbox:
  postgres: {}
  postgres_replica: {}
targets:
  db: {type: postgres, dsn: "${SANDBOX_POSTGRES_DSN}", role: primary, expect_replicas: 1}
  db-replica: {type: postgres, dsn: "${SANDBOX_POSTGRES_REPLICA_DSN}", role: replica}
"""


@pytest.fixture(scope="module")
def replicated() -> Iterator[Sandbox]:
    """A real primary and its streaming replica, shared by this module's tests."""
    spec = SandboxSpec(postgres=PostgresComponent(), postgres_replica=PostgresReplicaComponent())
    box = Sandbox.plan(spec, frozenset())
    box.start()
    yield box
    box.stop()


def run_checks(project: Project, env: str, *args: str,
               variables: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    """Run the stock postgres health checks; outcomes keyed ``test[id]``."""
    project.copy_check("checks/health/test_postgres.py")
    return project.run_checks("pg", env, *args, env=variables)


def dsns(box: Sandbox) -> dict[str, str]:
    return {"PRIMARY_DSN": box.variables()["SANDBOX_POSTGRES_DSN"],
            "REPLICA_DSN": box.variables()["SANDBOX_POSTGRES_REPLICA_DSN"]}


def evidence(check: dict[str, Any], verdict: str | None = None) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"]
            if verdict is None or m["verdict"] == verdict}


# -- schema ------------------------------------------------------------------------------
def test_versions_are_compared_as_server_version_num() -> None:
    assert [version_num(v) for v in ("14", "14.10", "9.6", "9.6.3")] == [
        140000, 140010, 90600, 90603]
    spec = PostgresTarget(type="postgres", dsn="host=db", min_version="14.10")
    assert spec.min_version_num() == 140010
    with pytest.raises(ValidationError, match="quote a version with a minor number"):
        PostgresTarget(type="postgres", dsn="host=db", min_version=14.1)
    with pytest.raises(ValidationError, match="expected a version such as 14"):
        PostgresTarget(type="postgres", dsn="host=db", min_version="fourteen")
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        PostgresTarget(type="postgres", dsn="host=db", expect_replicas=-1)
    with pytest.raises(ValidationError, match="postgres_replica needs postgres"):
        SandboxSpec.model_validate({"postgres_replica": {}})


# -- against a real primary and replica -----------------------------------------------------
def test_each_check_passes_on_a_healthy_pair(project: Project, replicated: Sandbox) -> None:
    result, checks = run_checks(project, DECLARED, variables=dsns(replicated))
    assert result.returncode == 0, result.output
    passed = {k for k, c in checks.items() if c["outcome"] == "PASS"}
    assert {
        "test_server_version[db:>=14]", "test_server_version[db-replica:>=14.0]",
        "test_role[db:primary]", "test_role[db-replica:replica]",
        "test_replicas_streaming[db:1-replica]",
        "test_wal_receiver_streaming[db-replica:replica]",
    } <= passed, checks.keys()
    assert evidence(checks["test_replicas_streaming[db:1-replica]"])["streaming replicas"] == 1
    receiver = evidence(checks["test_wal_receiver_streaming[db-replica:replica]"])
    assert receiver["WAL receiver status"] == "streaming"
    assert receiver["postgres.replication_lag_bytes"] == 0
    version = evidence(checks["test_server_version[db:>=14]"])
    assert version["server_version_num"] >= 140000
    assert version["server_version"]
    # Undeclared, not collected: the primary has no WAL receiver check.
    assert not [k for k in checks if k.startswith("test_wal_receiver_streaming[db:")]


def test_servers_that_are_not_what_is_declared_fail(project: Project,
                                                    replicated: Sandbox) -> None:
    result, checks = run_checks(project, SWAPPED, variables=dsns(replicated))
    assert result.returncode == 1, result.output
    assert evidence(checks["test_role[db:replica]"], "FAIL") == {"role": "primary"}
    assert evidence(checks["test_role[db-replica:primary]"], "FAIL") == {"role": "replica"}
    assert evidence(checks["test_wal_receiver_streaming[db:replica]"], "FAIL") == {
        "WAL receiver status": "not running"}
    assert evidence(checks["test_replicas_streaming[db-replica:1-replica]"], "FAIL") == {
        "streaming replicas": 0}
    too_old = evidence(checks["test_server_version[db-replica:>=99]"], "FAIL")
    assert too_old["server_version_num"] < 990000
    assert "expected ≥ 990000" in result.stdout


def test_replay_lag_fails_past_its_thresholds(project: Project, replicated: Sandbox) -> None:
    """Replay paused on the replica while the primary writes: both ends measure the lag."""
    replica = replicated.components["postgres_replica"]
    primary = replicated.components["postgres"]
    assert isinstance(replica, PostgresReplicaServer)
    assert isinstance(primary, PostgresServer)
    env = DECLARED + """thresholds:
  postgres.replication_lag_bytes: {crit: 1024}
  postgres.replication_lag_s: {crit: 0.5}
"""
    with replica.admin() as admin, psycopg.connect(primary.app_dsn, autocommit=True) as app:
        # A transaction replayed before the pause: the time lag is measured from it (with
        # none replayed since the standby started, it is unknown).
        app.execute("INSERT INTO system_logs (log_level, message) VALUES ('INFO', 'marker')")
        wait_until(lambda: admin.execute("SELECT pg_last_xact_replay_timestamp() IS NOT NULL "
                                         "AND pg_last_wal_receive_lsn() = "
                                         "pg_last_wal_replay_lsn()").fetchone() == (True,),
                   timeout_s=10, what="the replica to replay the marker")
        admin.execute("SELECT pg_wal_replay_pause()")
        try:
            app.execute("INSERT INTO system_logs (log_level, message) "
                        "SELECT 'INFO', 'batch ' || i FROM generate_series(1, 2000) i")
            wait_until(lambda: _received_not_replayed(admin) > 1024, timeout_s=10,
                       what="WAL to arrive at the paused replica")
            time.sleep(1)
            result, checks = run_checks(project, env, variables=dsns(replicated))
        finally:
            admin.execute("SELECT pg_wal_replay_resume()")
    assert result.returncode == 1, result.output
    on_primary = evidence(checks["test_replicas_streaming[db:1-replica]"], "FAIL")
    assert on_primary["postgres.replication_lag_bytes"] > 1024
    on_replica = evidence(checks["test_wal_receiver_streaming[db-replica:replica]"], "FAIL")
    assert on_replica["postgres.replication_lag_bytes"] > 1024
    assert on_replica["postgres.replication_lag_s"] >= 1
    assert "crit from environments/pg.yaml" in result.stdout
    # Still streaming: the lag, not the link, is what failed.
    assert evidence(checks["test_wal_receiver_streaming[db-replica:replica]"])[
        "WAL receiver status"] == "streaming"


def test_one_client_shared_by_threads_keeps_each_statement_its_own(
        replicated: Sandbox) -> None:
    """Probe threads and the main thread share a target's client: a statement that fails
    (aborting its READ ONLY transaction) must not fail another thread's statement with it,
    and every thread gets its own answer."""
    dsn = replicated.variables()["SANDBOX_POSTGRES_DSN"]
    client = PostgresClient("db", PostgresTarget(type="postgres", dsn=dsn), 3)
    wrong: list[str] = []

    def work(offset: int) -> None:
        for i in range(60):
            try:
                if (i + offset) % 3 == 0:
                    client.scalar("SELECT 1/0")
                elif client.scalar("SELECT %s::int", (i,)) != i:
                    wrong.append(f"thread {offset}: another statement's answer")
            except psycopg.errors.DivisionByZero:
                pass
            except Exception as exc:  # noqa: BLE001 - every other error is the finding
                wrong.append(f"thread {offset}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        client.close()
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == [], wrong[:3]


def _received_not_replayed(admin: psycopg.Connection[Any]) -> float:
    row = admin.execute("SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), "
                        "pg_last_wal_replay_lsn())").fetchone()
    return float(row[0]) if row else 0.0


def test_sandbox_fault_replica_broken(project: Project) -> None:
    """The replica's replication password is stale: it still answers queries (the
    dangerous part) but streams nothing; both replication checks say so."""
    result, checks = run_checks(project, SANDBOXED, "--sandbox-fault", "replica-broken")
    assert result.returncode == 1, result.output
    outcomes = {k: c["outcome"] for k, c in checks.items()}
    assert outcomes["test_accepts_queries[db-replica]"] == "PASS"
    assert outcomes["test_role[db-replica:replica]"] == "PASS"
    # Between its retries (every 5 s) the receiver is gone; during one it is 'starting'.
    receiver = evidence(checks["test_wal_receiver_streaming[db-replica:replica]"], "FAIL")
    assert list(receiver) == ["WAL receiver status"]
    assert receiver["WAL receiver status"] != "streaming"
    assert evidence(checks["test_replicas_streaming[db:1-replica]"], "FAIL") == {
        "streaming replicas": 0}
    assert sorted(k for k, o in outcomes.items() if o == "FAIL") == [
        "test_replicas_streaming[db:1-replica]",
        "test_wal_receiver_streaming[db-replica:replica]"]


def test_replica_of_a_primary_that_is_down_is_one_error_line(project: Project) -> None:
    result, checks = run_checks(project, SANDBOXED, "--sandbox-fault", "db-down")
    assert result.returncode == 1, result.output
    ran = {k: c["outcome"] for k, c in checks.items() if c["outcome"] != "SKIP"}
    assert set(ran.values()) == {"ERROR"}
    assert "test_wal_receiver_streaming[db-replica:replica]" in ran
    assert "db-replica (postgres 127.0.0.1:" in result.stdout
    assert "Traceback" not in result.output
