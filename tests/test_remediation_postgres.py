"""The PostgreSQL remediations ``unblock`` and ``vacuum`` against real servers.

Through the engine, on a server of this module's own: the plan lists exactly what apply
touches and changes nothing, apply touches exactly that (a cancel where it lets go, a
terminate where it does not; each table vacuumed, its dead rows gone), an item that
drifted is skipped with its reason, a plan over the limit is refused whole, a failure
part-way stops and says what was and was not done, one audit line per item. Every fact is
read back from the server on a superuser session of the test's own, not from the action.

Through pytest, on the sandbox: the three opt-ins, the faults ``blocking-lock`` and
``dead-tuples`` turning exactly their stock checks red, and ``-m destructive
--allow-destructive=sandbox`` repairing them, re-checked, audited.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from opsverify.errors import BlastRadiusExceeded, WriteRefused
from opsverify.remediation import Remediation
from opsverify.remediation.postgres import Unblock, UnblockSettings, Vacuum, VacuumSettings
from opsverify.sandbox.postgres import PostgresServer, bindir
from opsverify.targets.postgres import PostgresClient, PostgresTarget
from opsverify.targets.postgres_locks import lock_waits
from tests.conftest import (
    FOUNDATION,
    Project,
    outcomes,
    sandbox_postgres,
    sandbox_subset,
)

pytestmark = pytest.mark.skipif(bindir() is None, reason="PostgreSQL not installed "
                                "(apt-get install postgresql)")
PASSWORD = "remediation-postgres-pw-7c2e"  # a test value that must never be shown
DATABASE = "ts_forecast_system"
Conn = psycopg.Connection[tuple[Any, ...]]
AUDIT_KEYS = {"time", "operator", "ci_actor", "env", "target", "action", "plan_id",
              "identity", "before", "after", "result", "check", "run_id"}


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with sandbox_postgres(PASSWORD) as box:
        yield box


def superuser(server: PostgresServer) -> Conn:
    """The test's own eyes on the server: a superuser session outside opsverify."""
    return psycopg.connect(host=str(server.sockdir), port=server.port, user="postgres",
                           dbname=DATABASE, autocommit=True)


def client(server: PostgresServer, *, writable: bool = True, timeout_s: float = 3,
           ) -> PostgresClient:
    """opsverify's client as the monitoring role (pg_signal_backend, member of ts_app)."""
    spec = PostgresTarget(type="postgres", dsn=server.dsn, dead_tuple_min_rows=1000)
    return PostgresClient("db", spec, timeout_s, writable=writable)


def engine(tmp_path: Path, **kwargs: Any) -> Remediation:
    settings: dict[str, Any] = dict(
        env="test", operator="tester", check="test", run_id="r1",
        audit_path=tmp_path / "audit.jsonl", max_actions=5, plan_only=False, environ={})
    settings.update(kwargs)
    return Remediation(**settings)


def audit(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition: Any, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- unblock ------------------------------------------------------------------------------
class Sessions:
    """Holders of row locks of ``models`` and the sessions waiting on them. Statements
    that block are sent, never read, so that nothing here waits."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.conns: list[Conn] = []

    def hold(self, row: int, *, idle: bool = False, as_superuser: bool = False) -> int:
        """A session that updated ``row`` in an open transaction: idle in it, or busy in
        a statement that hangs. Returns its pid."""
        if as_superuser:
            conn = psycopg.connect(host=str(self.server.sockdir), port=self.server.port,
                                   user="postgres", dbname=DATABASE,
                                   application_name="batch-admin")
        else:
            conn = psycopg.connect(self.server.app_dsn, application_name="retrain")
        conn.execute("UPDATE models SET version = version WHERE id = %s", (row,))
        if not idle:
            conn.pgconn.send_query(b"SELECT pg_sleep(600)")
        self.conns.append(conn)
        return int(conn.info.backend_pid)

    def wait_on(self, row: int) -> int:
        """A session whose update of ``row`` waits for its lock. Returns its pid."""
        conn = psycopg.connect(self.server.app_dsn, autocommit=True, application_name="api")
        conn.pgconn.send_query(f"UPDATE models SET version = version WHERE id = {row}".encode())
        self.conns.append(conn)
        pid = int(conn.info.backend_pid)
        wait_for(lambda: pid in self.waiting(), f"pid {pid} to wait on row {row}")
        return pid

    def waiting(self) -> list[int]:
        """Pids waiting on a lock, as the server says."""
        with superuser(self.server) as conn:
            return sorted(int(r[0]) for r in conn.execute(
                "SELECT pid FROM pg_locks WHERE NOT granted").fetchall())

    def alive(self, pids: list[int]) -> list[int]:
        with superuser(self.server) as conn:
            return sorted(int(r[0]) for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchall())

    def close(self) -> None:
        """Closed, and ended: a backend asleep in a statement does not notice that its
        client left."""
        pids = [int(conn.info.backend_pid) for conn in self.conns if not conn.closed]
        for conn in self.conns:
            conn.close()
        with superuser(self.server) as conn:
            conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                         "WHERE pid = ANY(%s)", (pids,))


@pytest.fixture
def sessions(server: PostgresServer) -> Iterator[Sessions]:
    made = Sessions(server)
    yield made
    made.close()
    wait_for(lambda: not made.waiting(), "the test's lock waits to end")


def pid_of(identity: str) -> int:
    return int(identity.split()[1])


def test_unblock_plans_the_blockers_changes_nothing_then_cancels_or_terminates(
        server: PostgresServer, sessions: Sessions, tmp_path: Path) -> None:
    busy = sessions.hold(1)  # a hung statement: a cancel lets go
    idle = sessions.hold(2, idle=True)  # idle in its transaction: nothing to cancel
    recent = sessions.hold(3)
    busy_waiter, idle_waiter = sessions.wait_on(1), sessions.wait_on(2)
    time.sleep(1.2)
    recent_waiter = sessions.wait_on(3)  # waiting, but not for long yet: not planned
    db = client(server)
    action = Unblock(db, UnblockSettings(waiting_longer_than_s=1))
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert [pid_of(i.identity) for i in plan.items] == [busy, idle]
    assert f"blocks pid {busy_waiter} (" in plan.items[0].before
    assert "ts_app 'retrain' from 127.0.0.1, active, transaction open" in plan.items[0].before
    assert "idle in transaction" in plan.items[1].before
    # The plan changed nothing: every holder is there and every waiter still waits.
    assert sessions.alive([busy, idle, recent]) == sorted([busy, idle, recent])
    assert sessions.waiting() == sorted([busy_waiter, idle_waiter, recent_waiter])

    outcome = fix.apply(action, plan)
    assert outcome.failed is None, outcome.report()
    assert [after for _, after in outcome.applied] == [
        "cancelled: the sessions it held up have their lock",
        "terminated: still blocking after the cancel"]
    # Exactly the planned: the cancelled one lives on (its transaction aborted), the
    # idle one is gone, their waiters have their rows; the unplanned pair is untouched.
    assert sessions.alive([busy, idle, recent]) == sorted([busy, recent])
    assert sessions.waiting() == [recent_waiter]
    lines = audit(tmp_path)
    assert [(pid_of(e["identity"]), e["result"]) for e in lines] == [
        (busy, "applied"), (idle, "applied")]
    for entry, item in zip(lines, plan.items, strict=True):
        assert set(entry) == AUDIT_KEYS
        assert (entry["action"], entry["plan_id"], entry["before"]) == (
            "unblock", plan.plan_id, item.before)
    # The re-check's measurement: the unplanned wait is the only one left.
    assert [w.pid for w in lock_waits(client(server, writable=False))] == [recent_waiter]
    db.close()


def test_unblock_skips_what_drifted_and_picks_up_nothing_new(
        server: PostgresServer, sessions: Sessions, tmp_path: Path) -> None:
    gave_up = sessions.hold(1)
    ended = sessions.hold(2, idle=True)
    stays = sessions.hold(3, idle=True)
    gave_up_waiter = sessions.wait_on(1)
    sessions.wait_on(2)
    stays_waiter = sessions.wait_on(3)
    time.sleep(1.2)
    db = client(server)
    action = Unblock(db, UnblockSettings(waiting_longer_than_s=1))
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert [pid_of(i.identity) for i in plan.items] == [gave_up, ended, stays]
    # Between plan and apply: the first one's waiter gives up, the second holder ends,
    # and a new blocker appears that the plan does not list.
    with superuser(server) as conn:
        conn.execute("SELECT pg_cancel_backend(%s)", (gave_up_waiter,))
    sessions.conns[1].close()
    newcomer = sessions.hold(4, idle=True)
    newcomer_waiter = sessions.wait_on(4)
    time.sleep(1.2)
    wait_for(lambda: gave_up_waiter not in sessions.waiting(), "the waiter to give up")

    outcome = fix.apply(action, plan)
    assert [(pid_of(i.identity), why) for i, why in outcome.skipped] == [
        (gave_up, "no longer blocks the sessions it held up (they got their lock or gave up)"),
        (ended, "the session ended")]
    assert [pid_of(i.identity) for i, _ in outcome.applied] == [stays]
    assert sessions.alive([gave_up, stays, newcomer]) == sorted([gave_up, newcomer])
    assert stays_waiter not in sessions.waiting()
    assert newcomer_waiter in sessions.waiting()
    assert [e["result"] for e in audit(tmp_path)] == [
        "skipped: no longer blocks the sessions it held up (they got their lock or gave up)",
        "skipped: the session ended", "applied"]
    db.close()


def test_unblock_over_the_limit_is_refused_with_nothing_touched(
        server: PostgresServer, sessions: Sessions, tmp_path: Path) -> None:
    holders = [sessions.hold(1, idle=True), sessions.hold(2, idle=True)]
    waiters = [sessions.wait_on(1), sessions.wait_on(2)]
    time.sleep(1.2)
    db = client(server)
    with pytest.raises(BlastRadiusExceeded, match=r"^refused whole, nothing changed: plan "
                       r"[0-9a-f]{12} lists 2 items, over --max-actions=1: pid "):
        engine(tmp_path, max_actions=1).plan(Unblock(db, UnblockSettings(
            waiting_longer_than_s=1)))
    assert sessions.alive(holders) == sorted(holders)
    assert sessions.waiting() == sorted(waiters)
    assert audit(tmp_path) == []
    db.close()


def test_unblock_failure_part_way_stops_and_says_what_was_and_was_not_done(
        server: PostgresServer, sessions: Sessions, tmp_path: Path) -> None:
    first = sessions.hold(1)
    admin = sessions.hold(2, as_superuser=True)  # the monitoring role may not signal it
    last = sessions.hold(3)
    sessions.wait_on(1)
    admin_waiter = sessions.wait_on(2)
    last_waiter = sessions.wait_on(3)
    time.sleep(1.2)
    db = client(server)
    action = Unblock(db, UnblockSettings(waiting_longer_than_s=1))
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert [pid_of(i.identity) for i in plan.items] == [first, admin, last]
    outcome = fix.apply(action, plan)
    assert [pid_of(i.identity) for i, _ in outcome.applied] == [first]
    assert outcome.failed is not None
    assert pid_of(outcome.failed[0].identity) == admin
    assert "superuser" in outcome.failed[1], outcome.failed
    assert [pid_of(i.identity) for i in outcome.not_attempted] == [last]
    report = outcome.report()
    assert report.startswith(f"applied 1 of 3 (plan {plan.plan_id}); applied: pid {first} ")
    assert f"failed: {outcome.failed[0].identity}: " in report
    assert report.endswith(f"not attempted: {plan.items[2].identity}")
    # The server agrees: only the first let go.
    assert sessions.waiting() == sorted([admin_waiter, last_waiter])
    assert [e["result"].split(":")[0] for e in audit(tmp_path)] == [
        "applied", "failed", "not attempted"]
    db.close()


def test_the_read_only_client_refuses_to_cancel_or_vacuum(server: PostgresServer) -> None:
    reader = client(server, writable=False)
    with pytest.raises(WriteRefused, match="pg_cancel_backend from a read-only client"):
        reader.cancel(1)
    with pytest.raises(WriteRefused, match="VACUUM from a read-only client"):
        reader.vacuum("public", "models", 1)


# -- vacuum -------------------------------------------------------------------------------
class Tables:
    """Tables of the application's database with dead rows that autovacuum leaves alone."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.made: list[str] = []

    def make(self, name: str, rows: int, delete: int, *, owner: str = "ts_app") -> int:
        """``rows`` rows, ``delete`` of them deleted; waits until the statistics count
        them. Returns the table's relid."""
        with superuser(self.server) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text) "
                         "WITH (autovacuum_enabled = false)")
            conn.execute(f"ALTER TABLE {name} OWNER TO {owner}")
            conn.execute(f"INSERT INTO {name} SELECT i, 'row ' || i "
                         f"FROM generate_series(1, {rows}) AS i")
            conn.execute(f"DELETE FROM {name} WHERE id <= {delete}")
        self.made.append(name)
        wait_for(lambda: self.stats(name)[1] == delete, f"the statistics of {name}")
        relid = self.relid(name)
        assert relid is not None
        return relid

    def stats(self, name: str) -> tuple[int, int, int]:
        """n_live_tup, n_dead_tup, vacuum_count, as the server counts them now."""
        with superuser(self.server) as conn:
            row = conn.execute("SELECT n_live_tup, n_dead_tup, vacuum_count "
                               "FROM pg_stat_user_tables WHERE relname = %s",
                               (name,)).fetchone()
        return (int(row[0]), int(row[1]), int(row[2])) if row else (-1, -1, -1)

    def relid(self, name: str) -> int | None:
        with superuser(self.server) as conn:
            row = conn.execute("SELECT to_regclass(%s)::oid::int8", (name,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def drop(self) -> None:
        with superuser(self.server) as conn:
            for name in self.made:
                conn.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def tables(server: PostgresServer) -> Iterator[Tables]:
    made = Tables(server)
    yield made
    made.drop()


def test_vacuum_plans_the_bloated_tables_changes_nothing_then_vacuums_them(
        server: PostgresServer, tables: Tables, tmp_path: Path) -> None:
    heavy = tables.make("t_heavy", 2000, 1800)  # 90 % dead
    medium = tables.make("t_medium", 4000, 1200)  # 30 % dead
    tables.make("t_light", 10000, 1500)  # 15 % dead: under the ratio
    tables.make("t_small", 200, 190)  # 95 % dead, but 190 rows: under the floor
    db = client(server)
    action = Vacuum(db, VacuumSettings(dead_tuple_ratio=0.2))
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert [(i.identity, i.before) for i in plan.items] == [
        (f"public.t_heavy (relid {heavy})", "1800 dead, 200 live: 90.0 % dead"),
        (f"public.t_medium (relid {medium})", "1200 dead, 2800 live: 30.0 % dead")]
    # The plan changed nothing, as the server counts it.
    before = {name: tables.stats(name) for name in ("t_heavy", "t_medium", "t_light", "t_small")}
    assert before == {"t_heavy": (200, 1800, 0), "t_medium": (2800, 1200, 0),
                      "t_light": (8500, 1500, 0), "t_small": (10, 190, 0)}

    outcome = fix.apply(action, plan)
    assert outcome.failed is None, outcome.report()
    assert [after for _, after in outcome.applied] == [
        "vacuumed: 0 dead, 200 live: 0.0 % dead (was 1800 dead)",
        "vacuumed: 0 dead, 2800 live: 0.0 % dead (was 1200 dead)"]
    after = {name: tables.stats(name) for name in before}
    assert after == {"t_heavy": (200, 0, 1), "t_medium": (2800, 0, 1),
                     "t_light": (8500, 1500, 0), "t_small": (10, 190, 0)}
    lines = audit(tmp_path)
    assert [(e["identity"], e["result"], e["after"]) for e in lines] == [
        (i.identity, "applied", a) for i, a in outcome.applied]
    assert all(set(e) == AUDIT_KEYS and e["plan_id"] == plan.plan_id for e in lines)
    db.close()


def test_vacuum_skips_what_drifted_and_picks_up_nothing_new(
        server: PostgresServer, tables: Tables, tmp_path: Path) -> None:
    tables.make("t_recreated", 2000, 1900)
    renamed = tables.make("t_renamed", 2000, 1800)
    tables.make("t_by_hand", 2000, 1700)
    tables.make("t_stays", 2000, 1600)
    db = client(server)
    action = Vacuum(db, VacuumSettings(dead_tuple_ratio=0.2))
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert [i.identity.split()[0] for i in plan.items] == [
        "public.t_recreated", "public.t_renamed", "public.t_by_hand", "public.t_stays"]
    # Between plan and apply: one table is dropped and made again under its name, one is
    # renamed, one is vacuumed by hand; a new bloated table appears, not in the plan.
    old = plan.items[0].ref.relid
    recreated = tables.make("t_recreated", 2000, 1900)
    with superuser(server) as conn:
        conn.execute("ALTER TABLE t_renamed RENAME TO t_renamed_2")
        conn.execute("VACUUM t_by_hand")
    tables.made.append("t_renamed_2")
    tables.make("t_new", 2000, 1950)

    outcome = fix.apply(action, plan)
    assert [(i.identity.split()[0], why) for i, why in outcome.skipped] == [
        ("public.t_recreated", f"the table was dropped (relid {old} is gone; "
                               f"public.t_recreated is relid {recreated} now)"),
        ("public.t_renamed", f"relid {renamed} is public.t_renamed_2 now (renamed)"),
        ("public.t_by_hand", "no longer above 20 % dead (0 dead, 300 live: 0.0 % dead): "
                             "vacuumed since the plan")]
    assert [i.identity.split()[0] for i, _ in outcome.applied] == ["public.t_stays"]
    assert tables.stats("t_stays")[1:] == (0, 1)
    for name in ("t_recreated", "t_renamed_2", "t_new"):
        assert tables.stats(name)[2] == 0, f"{name} was vacuumed"
    assert [e["result"].split(":")[0] for e in audit(tmp_path)] == [
        "skipped", "skipped", "skipped", "applied"]
    db.close()


def test_vacuum_over_the_limit_is_refused_with_nothing_touched(
        server: PostgresServer, tables: Tables, tmp_path: Path) -> None:
    for name in ("t_one", "t_two", "t_three"):
        tables.make(name, 2000, 1500)
    db = client(server)
    with pytest.raises(BlastRadiusExceeded, match=r"lists 3 items, over --max-actions=2: "
                       r"public.t_one \(relid \d+\) \(1500 dead, 500 live: 75.0 % dead\)"):
        engine(tmp_path, max_actions=2).plan(Vacuum(db, VacuumSettings(dead_tuple_ratio=0.2)))
    assert {tables.stats(n) for n in ("t_one", "t_two", "t_three")} == {(500, 1500, 0)}
    assert audit(tmp_path) == []
    db.close()


def test_vacuum_failure_part_way_stops_and_says_what_was_and_was_not_done(
        server: PostgresServer, tables: Tables, tmp_path: Path) -> None:
    tables.make("t_first", 2000, 1900)
    tables.make("t_locked", 2000, 1800)
    tables.make("t_last", 2000, 1700)
    db = client(server)
    action = Vacuum(db, VacuumSettings(dead_tuple_ratio=0.2))
    fix = engine(tmp_path)
    plan = fix.plan(action)
    with psycopg.connect(server.app_dsn) as holder:  # the lock VACUUM needs, held
        holder.execute("LOCK TABLE t_locked IN SHARE UPDATE EXCLUSIVE MODE")
        started = time.monotonic()
        outcome = fix.apply(action, plan)
        waited = time.monotonic() - started
    assert [i.identity.split()[0] for i, _ in outcome.applied] == ["public.t_first"]
    assert outcome.failed is not None
    assert outcome.failed[0] == plan.items[1]
    assert outcome.failed[1] == ("VACUUM of public.t_locked gave up: another session held "
                                 "its lock past lock_timeout (1 s)")
    assert waited < 2.5, "lock_timeout is a third of the 3 s deadline"
    assert outcome.not_attempted == [plan.items[2]]
    assert outcome.report().endswith(f"not attempted: {plan.items[2].identity}")
    assert [tables.stats(n)[1:] for n in ("t_first", "t_locked", "t_last")] == [
        (0, 1), (1800, 0), (1700, 0)]
    assert [e["result"].split(":")[0] for e in audit(tmp_path)] == [
        "applied", "failed", "not attempted"]
    # The session is still the client's, its lock_timeout back to the deadline.
    assert db.scalar("SHOW lock_timeout") == "3s"
    db.close()


def test_vacuum_of_a_table_the_role_may_not_vacuum_fails_with_the_servers_warning(
        server: PostgresServer, tables: Tables, tmp_path: Path) -> None:
    """The server skips it with a WARNING, not an error: apply says so."""
    tables.make("t_not_ours", 2000, 1800)
    with superuser(server) as conn:
        conn.execute("DROP ROLE IF EXISTS plain")
        conn.execute(f"CREATE ROLE plain LOGIN PASSWORD '{PASSWORD}'")
    spec = PostgresTarget(type="postgres", dsn=server.dsn.replace("opsverify:", "plain:"))
    db = PostgresClient("db", spec, 3, writable=True)
    action = Vacuum(db, VacuumSettings(dead_tuple_ratio=0.2))
    fix = engine(tmp_path)
    outcome = fix.apply(action, fix.plan(action))
    assert outcome.failed is not None
    assert outcome.failed[1] == ('VACUUM skipped public.t_not_ours: skipping "t_not_ours" '
                                 "--- only table or database owner can vacuum it")
    assert tables.stats("t_not_ours") == (200, 1800, 0)
    db.close()
    with superuser(server) as conn:
        conn.execute("DROP ROLE plain")


def test_vacuum_fails_when_an_older_transaction_keeps_the_dead_rows(
        server: PostgresServer, tables: Tables, tmp_path: Path) -> None:
    """VACUUM runs and returns, but removes nothing: the verification says why."""
    with superuser(server) as conn:
        conn.execute("DROP TABLE IF EXISTS t_kept")
    with psycopg.connect(server.app_dsn) as old:
        old.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        old.execute("SELECT 1")  # its snapshot predates the delete
        tables.make("t_kept", 2000, 1500)
        db = client(server, timeout_s=2)
        action = Vacuum(db, VacuumSettings(dead_tuple_ratio=0.2))
        fix = engine(tmp_path)
        outcome = fix.apply(action, fix.plan(action))
    assert outcome.failed is not None
    assert outcome.failed[1] == ("VACUUM of public.t_kept removed none of its 1500 dead "
                                 "rows: an older transaction still sees them (backend_xmin in "
                                 "pg_stat_activity, a replication slot's xmin)")
    assert tables.stats("t_kept") == (500, 1500, 1)
    db.close()


# -- through pytest, on the sandbox ---------------------------------------------------------
UNBLOCK = "checks/remediation/test_postgres.py::test_unblock[db]"
VACUUM = "checks/remediation/test_postgres.py::test_vacuum[db]"
LOCKS_CHECK = "checks/health/test_postgres_locks.py"
# Reads the server on its own connection, outside opsverify, before and after the fix.
PROBE = '''
"""What the remediation changed, read on a connection of its own."""
import json
import os

import psycopg
import pytest


@pytest.mark.daily
@pytest.mark.weekly
def test_probe(env):
    with psycopg.connect(env.model.targets["db"].dsn, connect_timeout=5,
                         application_name="probe") as conn:
        waiting = conn.execute("SELECT a.application_name FROM pg_locks l JOIN "
                               "pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted "
                               "ORDER BY 1").fetchall()
        holder = conn.execute("SELECT pid, state FROM pg_stat_activity "
                              "WHERE application_name = 'ts-forecast-retrain'").fetchall()
        logs = conn.execute("SELECT n_live_tup, n_dead_tup, vacuum_count FROM "
                            "pg_stat_user_tables WHERE relname = 'system_logs'").fetchone()
    with open(os.environ["PROBE_OUT"], "a") as out:
        out.write(json.dumps({"when": os.path.basename(os.path.dirname(__file__)),
                              "waiting": [r[0] for r in waiting],
                              "holder": [list(r) for r in holder],
                              "system_logs": list(logs)}) + "\\n")
'''


@pytest.fixture
def sandbox_project(project: Project) -> Project:
    """The foundation, the lock check, and probes before and after the remediations."""
    project.use_foundation()
    project.copy_check(LOCKS_CHECK)
    project.write("checks/probe_before/test_probe.py", PROBE)
    project.write("checks/probe_zafter/test_probe.py", PROBE)
    return project


def collected(project: Project, *args: str) -> list[str]:
    result = project.run("--collect-only", "-q", *args)
    assert result.returncode in (0, 5), result.output
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_each_action_needs_all_three_opt_ins(sandbox_project: Project) -> None:
    allowed = ("-m", "destructive", "--allow-destructive=sandbox", "checks/remediation")
    # All three: collected for db, the target that enables them, and no other.
    found = collected(sandbox_project, *allowed)
    assert [n for n in found if "test_unblock[" in n or "test_vacuum[" in n] == [
        UNBLOCK, VACUUM]
    # No -m destructive, or no --allow-destructive: deselected.
    for args in (("--allow-destructive=sandbox", "checks/remediation"),
                 ("-m", "destructive", "checks/remediation")):
        found = collected(sandbox_project, *args)
        assert not {UNBLOCK, VACUUM} & set(found), (args, found)
    # The target's remediation: section without them: not collected for any target.
    env = sandbox_subset(FOUNDATION)
    env["targets"]["db"]["remediation"] = {"terminate_idle_sessions": {"older_than_s": 1}}
    sandbox_project.write_env(env)
    found = collected(sandbox_project, *allowed)
    assert not [n for n in found if ("test_unblock[" in n or "test_vacuum[" in n)
                and "no-postgres-target" not in n], found
    assert "checks/remediation/test_postgres.py::test_terminate_idle_sessions[db]" in found


def red(project: Project) -> dict[str, dict[str, Any]]:
    return {n: c for n, c in project.checks().items() if c["outcome"] in ("FAIL", "ERROR")}


def failing(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"] if m["verdict"] == "FAIL"}


def test_blocking_lock_turns_exactly_the_lock_check_red(sandbox_project: Project) -> None:
    result = sandbox_project.run("-m", "daily", "--sandbox-fault", "blocking-lock",
                                 "--ignore=checks/probe_before", "--ignore=checks/probe_zafter")
    found = red(sandbox_project)
    assert set(found) == {"test_blocked_sessions[db]"}, outcomes(found)
    assert result.returncode == 1, result.output
    check = found["test_blocked_sessions[db]"]
    assert failing(check)["postgres.lock_wait_s"] > 1
    notes = {m["name"]: m["value"] for m in check["evidence"]}
    assert notes["sessions waiting on a lock"] == 1
    assert "ts_app 'ts-forecast-api' from 127.0.0.1 waits" in next(
        str(v) for k, v in notes.items() if k.startswith("pid "))
    others = sandbox_project.checks()
    assert others["test_blocked_sessions[db-cluster]"]["outcome"] == "PASS"


def test_dead_tuples_turns_exactly_the_weekly_dead_tuples_check_red(
        sandbox_project: Project) -> None:
    result = sandbox_project.run("-m", "weekly", "--sandbox-fault", "dead-tuples",
                                 "--ignore=checks/probe_before", "--ignore=checks/probe_zafter")
    found = red(sandbox_project)
    assert set(found) == {"test_dead_tuples[db]"}, outcomes(found)
    assert result.returncode == 1, result.output
    assert failing(found["test_dead_tuples[db]"]) == {"postgres.dead_tuple_pct": 75.0}
    # Not a daily check: a daily run stays green.
    result = sandbox_project.run("-m", "daily", "--sandbox-fault", "dead-tuples",
                                 "--ignore=checks/probe_before", "--ignore=checks/probe_zafter")
    assert not red(sandbox_project), outcomes(red(sandbox_project))


def remediate(project: Project, fault: str, nodeid: str, *flags: str,
              ) -> tuple[Any, dict[str, Any]]:
    out = project.path / "probe.jsonl"
    out.unlink(missing_ok=True)
    result = project.run(
        "checks/probe_before", nodeid.removesuffix("[db]"), "checks/probe_zafter",
        "-m", "daily or weekly or destructive", "--target", "db", "--sandbox-fault", fault,
        "--allow-destructive=sandbox", *flags, env={"PROBE_OUT": str(out)})
    seen = {}
    for line in out.read_text().splitlines() if out.exists() else []:
        record = json.loads(line)
        seen[record["when"]] = record
    return result, seen


def test_unblock_repairs_blocking_lock_planned_applied_audited_rechecked(
        sandbox_project: Project) -> None:
    result, seen = remediate(sandbox_project, "blocking-lock", UNBLOCK, "--plan")
    assert result.returncode == 0, result.output
    assert seen["probe_before"]["waiting"] == seen["probe_zafter"]["waiting"] == [
        "ts-forecast-api"], "--plan changed something"
    holder = seen["probe_before"]["holder"][0][0]
    assert seen["probe_zafter"]["holder"] == seen["probe_before"]["holder"]
    check = sandbox_project.checks()["test_unblock[db]"]
    assert check["outcome"] == "PLAN"
    assert f"PLAN  {UNBLOCK}: db: unblock pid {holder} started " in result.stdout
    assert not (sandbox_project.reports / "audit.jsonl").exists()

    result, seen = remediate(sandbox_project, "blocking-lock", UNBLOCK)
    assert result.returncode == 0, result.output
    assert seen["probe_before"]["waiting"] == ["ts-forecast-api"]
    assert seen["probe_zafter"]["waiting"] == [], "still waiting after unblock"
    # A cancel was enough: the hung statement ended, its transaction aborted.
    assert seen["probe_zafter"]["holder"][0][1] == "idle in transaction (aborted)"
    check = sandbox_project.checks()["test_unblock[db]"]
    assert check["outcome"] == "PASS", check
    assert [(m["name"], m["value"], m["verdict"]) for m in check["evidence"]] == [
        ("postgres.lock_wait_s", 0.0, "PASS")]
    lines = [json.loads(x) for x in
             (sandbox_project.reports / "audit.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    assert lines[0]["identity"].startswith(f"pid {seen['probe_before']['holder'][0][0]} ")
    assert lines[0]["after"] == "cancelled: the sessions it held up have their lock"
    assert (lines[0]["env"], lines[0]["action"], lines[0]["result"]) == (
        "sandbox", "unblock", "applied")


def test_vacuum_repairs_dead_tuples_planned_applied_audited_rechecked(
        sandbox_project: Project) -> None:
    result, seen = remediate(sandbox_project, "dead-tuples", VACUUM, "--plan")
    assert result.returncode == 0, result.output
    assert seen["probe_before"]["system_logs"] == seen["probe_zafter"]["system_logs"] == [
        2000, 6000, 0], "--plan changed something"
    assert re.search(rf"^PLAN  {re.escape(VACUUM)}: db: vacuum public.system_logs "
                     r"\(relid \d+\) \(6000 dead, 2000 live: 75.0 % dead\)", result.stdout, re.M)
    assert not (sandbox_project.reports / "audit.jsonl").exists()

    result, seen = remediate(sandbox_project, "dead-tuples", VACUUM)
    assert result.returncode == 0, result.output
    assert seen["probe_zafter"]["system_logs"] == [2000, 0, 1]
    check = sandbox_project.checks()["test_vacuum[db]"]
    assert check["outcome"] == "PASS", check
    assert [(m["name"], m["value"], m["verdict"]) for m in check["evidence"]] == [
        ("postgres.dead_tuple_pct", 0.0, "PASS")]
    lines = [json.loads(x) for x in
             (sandbox_project.reports / "audit.jsonl").read_text().splitlines()]
    assert [(e["action"], e["identity"].split()[0], e["before"], e["after"], e["result"])
            for e in lines] == [
        ("vacuum", "public.system_logs", "6000 dead, 2000 live: 75.0 % dead",
         "vacuumed: 0 dead, 2000 live: 0.0 % dead (was 6000 dead)", "applied")]


def test_sandbox_enables_both_actions_on_db_only() -> None:
    env = yaml.safe_load((Path(__file__).parent.parent / "environments" /
                          "sandbox.yaml").read_text())
    enabled = {name: sorted(t.get("remediation", {})) for name, t in env["targets"].items()
               if t["type"] == "postgres" and t.get("remediation")}
    assert enabled == {"db": ["terminate_idle_sessions", "unblock", "vacuum"]}
