"""The PostgreSQL capacity checks PASS on a healthy real server and FAIL for the right reason
on real servers in a bad state: connections exhausted and a stale replication slot (the
sandbox's faults), dead rows and a large unused index (made here), a database past its
declared size, a cluster near transaction-id wraparound (its next xid moved on with
``pg_resetwal``); the trend checks judge a seeded history (growing, flat, too short); what
the monitoring role may not read is a SKIP naming the grant; and each fault turns exactly
its check red in the sandbox."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from opsverify.sandbox.postgres import STALE_SLOT, PostgresServer, bindir
from opsverify.sandbox.process import free_port, spawn, stop, unprivileged_user, wait_until
from opsverify.targets.postgres import PostgresTarget
from opsverify.targets.postgres_capacity import TXID_CAPACITY, duration_text, size_text
from tests.conftest import Project, Result, outcomes, postgres_workdir, sandbox_postgres

pytestmark = pytest.mark.skipif(bindir() is None,
                                reason="PostgreSQL not found (apt-get install postgresql)")
PASSWORD = "pg-cap-test-pw-7c2e"  # a test value that must never be shown
CHECK = "checks/capacity/test_postgres.py"
MIB = 1024 * 1024
# The next transaction id of the wraparound cluster: the first of a pg_xact segment (1,048,576
# transactions each), 75 % of the way to 2^31.
WRAPAROUND_XID = 1526 << 20


def sandbox_server(faults: frozenset[str] = frozenset(),
                   seed: Callable[[PostgresServer], None] | None = None,
                   ) -> contextlib.AbstractContextManager[PostgresServer]:
    """The sandbox's PostgreSQL on its own: seeded, then ``seed``, then ``faults``."""
    return sandbox_postgres(PASSWORD, faults, seed)


def dsn(server: PostgresServer, user: str = "opsverify", dbname: str = "ts_forecast_system"
        ) -> str:
    return f"postgresql://{user}:{PASSWORD}@127.0.0.1:{server.port}/{dbname}"


@pytest.fixture(scope="module")
def healthy() -> Iterator[PostgresServer]:
    """The sandbox's PostgreSQL as it starts: few sessions, no slot, nothing to vacuum."""
    with sandbox_server() as server:
        yield server


def bloat(server: PostgresServer) -> None:
    """Dead rows autovacuum may not clean (switched off for the table), the same in a table
    too small to judge, and a large index nothing reads beside a large unique one."""
    with server._admin("ts_forecast_system") as conn:
        conn.execute("CREATE TABLE churn (id int, payload text) "
                     "WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO churn SELECT i, 'job ' || i FROM generate_series(1, 10000) i")
        conn.execute("DELETE FROM churn WHERE id <= 6000")
        conn.execute("CREATE TABLE churn_small (id int) WITH (autovacuum_enabled = false)")
        conn.execute("INSERT INTO churn_small SELECT generate_series(1, 600)")
        conn.execute("DELETE FROM churn_small WHERE id <= 500")
        conn.execute("CREATE TABLE events (id int, key text)")
        conn.execute("INSERT INTO events SELECT i, md5(i::text) "
                     "FROM generate_series(1, 200000) i")
        conn.execute("CREATE INDEX events_key ON events (key)")
        conn.execute("CREATE UNIQUE INDEX events_key_unique ON events (key)")
        row = conn.execute("SELECT pg_relation_size('events_key')").fetchone()
        assert row is not None
        assert isinstance(row[0], int)
        assert row[0] > 10 * MIB
    # The session's end flushes its statistics: n_dead_tup is visible to every session now.


@pytest.fixture(scope="module")
def troubled() -> Iterator[PostgresServer]:
    """The sandbox's PostgreSQL with both faults (90 % of its connections idle in
    transaction, a stale slot keeping four WAL segments), dead rows and an unused index."""
    with sandbox_server(frozenset({"pg-connections-exhausted", "replication-slot-stale"}),
                        seed=bloat) as server:
        yield server


@pytest.fixture(scope="module")
def wraparound() -> Iterator[str]:
    """A cluster whose next transaction id was set to 1.6e9 by ``pg_resetwal -x``: every
    database's datfrozenxid is initdb's, so its age is 1.6e9, past check_postgres's crit.
    Returns the superuser's DSN (over the socket, trusted)."""
    binaries = bindir()
    assert binaries is not None
    workdir = postgres_workdir(owned=True)
    user = unprivileged_user()
    data = workdir / "data"
    subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth-local=trust", "--no-sync", "--locale=C", "-E", "UTF8"],
                   capture_output=True, check=True, user=user, timeout=60)
    subprocess.run([str(binaries / "pg_resetwal"), "-x", str(WRAPAROUND_XID), "-D", str(data)],
                   capture_output=True, check=True, user=user, timeout=60)
    # The commit log must have the page of the new xid (pg_resetwal's documentation).
    segment = data / "pg_xact" / f"{WRAPAROUND_XID >> 20:04X}"
    segment.write_bytes(bytes(32 * 8192))
    if user:
        shutil.chown(segment, user)
    port = free_port()
    log = workdir / "postgres.log"
    # Past autovacuum_freeze_max_age, autovacuum would freeze it at once: moved out of reach.
    process = spawn([str(binaries / "postgres"), "-D", str(data), "-p", str(port),
                     "-k", str(workdir), "-c", "listen_addresses=", "-c", "fsync=off",
                     "-c", "autovacuum_freeze_max_age=2000000000"], log=log, user=user)
    socket_dsn = f"host={workdir} port={port} user=postgres dbname=postgres"

    def accepts() -> bool:
        try:
            psycopg.connect(socket_dsn, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    try:
        wait_until(accepts, timeout_s=30, what="PostgreSQL", process=process, log=log)
        yield socket_dsn
    finally:
        stop(process)
        shutil.rmtree(workdir, ignore_errors=True)


def run(project: Project, targets: dict[str, tuple[str, str]], *args: str
        ) -> tuple[Result, dict[str, Any]]:
    """Run the PostgreSQL capacity checks against ``targets`` (name: (DSN, more YAML keys));
    the DSN goes in a variable, as secrets do. Checks keyed ``test[id]``."""
    project.copy_check(CHECK)
    lines = ["settings: {timeout_s: 5}", "targets:"]
    variables = {}
    for index, (name, (target_dsn, keys)) in enumerate(targets.items()):
        variables[f"PG_DSN_{index}"] = target_dsn
        lines += [f"  {name}:", "    type: postgres", f"    dsn: ${{PG_DSN_{index}}}"]
        lines += [f"    {line}" for line in keys.strip().splitlines()]
    return project.run_checks("cap", "\n".join(lines) + "\n", *args, env=variables)


def measured(check: dict[str, Any], verdict: str | None = None) -> dict[str, dict[str, Any]]:
    """The check's measurements by name (``name[item]`` where it has an item)."""
    return {m["name"] + (f"[{m['item']}]" if m.get("item") else ""): m for m in check["evidence"]
            if verdict is None or m["verdict"] == verdict}


def values(check: dict[str, Any]) -> dict[str, Any]:
    return {name: m["value"] for name, m in measured(check).items()}


# -- schema and text ---------------------------------------------------------------------------
def test_schema_and_text() -> None:
    spec = PostgresTarget(type="postgres", dsn="postgresql://db/app")
    assert (spec.capacity_bytes, spec.dead_tuple_min_rows, spec.unused_index_min_bytes) == (
        None, 1000, 10 * MIB)
    with pytest.raises(ValidationError, match="greater than 0"):
        PostgresTarget(type="postgres", dsn="postgresql://db/app", capacity_bytes=0)
    with pytest.raises(ValidationError, match="capacity_bytes"):
        PostgresTarget(type="postgres", dsn="postgresql://db/app", capacity_bytes="big")
    assert [size_text(v) for v in (512, 12 * MIB, 3.5 * 1024 * MIB)] == [
        "512 B", "12.0 MiB", "3.5 GiB"]
    assert [duration_text(v) for v in (45, 720, 5.2 * 3600, 3 * 86400)] == [
        "45 s", "12 min", "5.2 h", "3.0 days"]


# -- PASS on a healthy server -------------------------------------------------------------------
def test_each_check_passes_on_a_healthy_server(project: Project,
                                               healthy: PostgresServer) -> None:
    result, checks = run(project, {"good": (dsn(healthy), "capacity_bytes: 10737418240")})
    assert result.returncode == 0, result.output
    assert outcomes(checks) == {
        "test_stale_idle_sessions[good]": "PASS",
        "test_connections_used[good]": "PASS",
        "test_txid_age[good]": "PASS",
        "test_replication_slots[good]": "PASS",
        "test_dead_tuples[good]": "PASS",
        "test_unused_indexes[good]": "PASS",
        "test_database_size[good]": "PASS",
        # One reading, this run's: too little to fit.
        "test_txid_age_trend[good]": "SKIP",
        "test_database_size_trend[good]": "SKIP",
    }, result.output
    connections = values(checks["test_connections_used[good]"])
    assert 0 < connections["postgres.connections_used_pct"] < 10
    assert (connections["max_connections"], connections["superuser_reserved_connections"]) == (
        50, 3)
    assert "active" in connections["by state"]  # our own session, at least
    txid = measured(checks["test_txid_age[good]"])
    assert {"postgres.txid_age[ts_forecast_system]", "postgres.txid_age[template0]"} <= set(txid)
    assert txid["postgres.txid_age[postgres]"]["capacity"] == TXID_CAPACITY
    assert txid["postgres.txid_age[postgres]"]["expected"] == "≤ 1400000000 xids"
    assert values(checks["test_replication_slots[good]"])["slots"] == "none"
    assert values(checks["test_replication_slots[good]"])["postgres.inactive_slots"] == 0
    dead = values(checks["test_dead_tuples[good]"])
    assert dead["tables with ≥ 1000 dead rows"] == 0
    assert values(checks["test_unused_indexes[good]"])["postgres.unused_index_count"] == 0
    size = measured(checks["test_database_size[good]"])
    assert size["postgres.database_size_pct[ts_forecast_system]"]["value"] < 1
    assert size["capacity_bytes"]["value"].startswith("10.0 GiB (environments/cap.yaml:")
    trend = checks["test_txid_age_trend[good]"]
    assert trend["message"].startswith("insufficient history: 1 samples over 0.0 hours"), trend
    # The readings went into the run's history, with their items and capacities.
    history = [json.loads(line) for line in
               (project.reports / "cap" / "history.jsonl").read_text().splitlines()]
    assert {"target": "good", "metric": "postgres.database_size_pct",
            "item": "ts_forecast_system", "unit": "%", "capacity": 100.0} in [
        {k: v for k, v in h.items() if k not in ("time", "value")} for h in history]


# -- FAIL, each for its reason, on a troubled server -----------------------------------------------
def test_each_check_fails_for_its_reason_on_a_troubled_server(
        project: Project, troubled: PostgresServer) -> None:
    lowered = """
capacity_bytes: 1048576
thresholds:
  postgres.slot_retained_bytes: {warn: 16777216, crit: 33554432}
  postgres.unused_index_count: {warn: 0, crit: 0}
"""
    result, checks = run(project, {"bad": (dsn(troubled), lowered),
                                   "bad-defaults": (dsn(troubled), "")}, "-k", "not trend")
    assert result.returncode == 1, result.output
    assert outcomes(checks) == {
        "test_stale_idle_sessions[bad]": "PASS",  # idle in transaction: not idle
        "test_stale_idle_sessions[bad-defaults]": "PASS",
        "test_connections_used[bad]": "FAIL",
        "test_connections_used[bad-defaults]": "FAIL",
        "test_txid_age[bad]": "PASS",
        "test_txid_age[bad-defaults]": "PASS",
        "test_replication_slots[bad]": "FAIL",
        "test_replication_slots[bad-defaults]": "WARN",  # inactive, far below 1 GiB
        "test_dead_tuples[bad]": "FAIL",
        "test_dead_tuples[bad-defaults]": "FAIL",
        "test_unused_indexes[bad]": "FAIL",
        "test_unused_indexes[bad-defaults]": "WARN",  # one is a WARN, ten a FAIL
        "test_database_size[bad]": "FAIL",
    }, result.output

    connections = checks["test_connections_used[bad]"]
    failed = measured(connections, "FAIL")
    assert list(failed) == ["postgres.connections_used_pct"]
    assert failed["postgres.connections_used_pct"]["value"] >= 92
    assert failed["postgres.connections_used_pct"]["expected"] == "≤ 90 %"
    # The fault's 45; the other target's session may be between a read and its rollback.
    idle = re.search(r"idle in transaction (\d+)", values(connections)["by state"])
    assert idle is not None
    assert int(idle.group(1)) >= 45
    assert values(connections)["superuser_reserved_connections"] == 0

    slot = f"postgres.slot_retained_bytes[{STALE_SLOT}]"
    assert list(measured(checks["test_replication_slots[bad]"], "FAIL")) == [slot]
    kept = measured(checks["test_replication_slots[bad]"])
    assert kept[slot]["value"] > 3 * 16 * MIB
    assert kept[slot]["expected"] == "≤ 33554432 B"
    assert kept[f"slot {STALE_SLOT}"]["value"].startswith(
        "physical, inactive, wal_status reserved: keeps ")
    warned = measured(checks["test_replication_slots[bad-defaults]"], "WARN")
    assert list(warned) == ["postgres.inactive_slots"]
    assert (warned["postgres.inactive_slots"]["value"],
            warned["postgres.inactive_slots"]["expected"]) == (1, "≤ 0 slots")

    dead = measured(checks["test_dead_tuples[bad-defaults]"])
    assert (dead["postgres.dead_tuple_pct[public.churn]"]["value"],
            dead["postgres.dead_tuple_pct[public.churn]"]["verdict"]) == (60.0, "FAIL")
    assert dead["public.churn"]["value"] == "public.churn: 6000 dead of 10000 rows, never vacuumed"
    assert not [name for name in dead if "churn_small" in name]  # 500 dead: under the floor

    unused = values(checks["test_unused_indexes[bad]"])
    assert unused["postgres.unused_index_count"] == 1
    assert unused["unused public.events_key"].startswith("public.events_key on public.events, ")
    assert unused["postgres.unused_index_bytes"] > 10 * MIB
    assert not [name for name in unused if "events_key_unique" in name]

    size = measured(checks["test_database_size[bad]"], "FAIL")
    assert size["postgres.database_size_pct[ts_forecast_system]"]["value"] > 100
    assert size["postgres.database_size_pct[ts_forecast_system]"]["expected"] == "≤ 90 %"
    assert "FAIL  checks/capacity/test_postgres.py::test_database_size[bad]: " in result.stdout
    assert PASSWORD not in result.output


def test_txid_age_fails_near_wraparound(project: Project, wraparound: str) -> None:
    result, checks = run(project, {"old": (wraparound, "")}, "-k", "test_txid_age and not trend")
    assert result.returncode == 1, result.output
    check = checks["test_txid_age[old]"]
    assert check["outcome"] == "FAIL", result.output
    failed = measured(check, "FAIL")
    assert set(failed) == {f"postgres.txid_age[{d}]"
                           for d in ("postgres", "template0", "template1")}
    assert all(1.59e9 < m["value"] < 1.61e9 for m in failed.values()), failed
    assert failed["postgres.txid_age[postgres]"]["expected"] == "≤ 1400000000 xids"
    assert values(check)["oldest database"].endswith("transactions since frozen, 74.5 % of 2^31")


# -- trends, from a seeded history --------------------------------------------------------------
def seed(project: Project, target: str, metric: str, items: list[str], unit: str,
         capacity: float, series: list[float]) -> None:
    """Daily readings of ``metric`` up to yesterday, the last of ``series`` newest."""
    now = datetime.now(UTC)
    lines = [json.dumps({"time": (now - timedelta(days=len(series) - i)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), "target": target, "metric": metric, "item": item,
        "value": value, "unit": unit, "capacity": capacity})
        for item in items for i, value in enumerate(series)]
    path = project.reports / "cap" / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write("".join(line + "\n" for line in lines))


def growing(now: float, capacity: float, days_left: float, samples: int = 14) -> list[float]:
    """Readings that reach ``now`` today and ``capacity`` in ``days_left`` days."""
    per_day = (capacity - now) / days_left
    return [now - per_day * (samples - i) for i in range(samples)]


def judged_trend(checks: dict[str, Any], name: str) -> dict[str, Any]:
    return values(checks[name])


def test_txid_age_trend_from_a_seeded_history(project: Project, wraparound: str) -> None:
    with psycopg.connect(wraparound) as conn:
        ages = dict(conn.execute("SELECT datname, age(datfrozenxid) FROM pg_database").fetchall())
    # The trend follows the server's oldest database, whichever it is: item "".
    names, now = [""], float(max(ages.values()))
    seed(project, "grow", "postgres.txid_age", names, "xids", TXID_CAPACITY,
         growing(now, TXID_CAPACITY, days_left=5))
    seed(project, "flat", "postgres.txid_age", names, "xids", TXID_CAPACITY, [now] * 14)
    seed(project, "short", "postgres.txid_age", names, "xids", TXID_CAPACITY, [now] * 2)
    result, checks = run(project, {name: (wraparound, "") for name in ("grow", "flat", "short")},
                         "-k", "test_txid_age_trend")
    assert outcomes(checks) == {"test_txid_age_trend[grow]": "FAIL",
                                "test_txid_age_trend[flat]": "PASS",
                                "test_txid_age_trend[short]": "SKIP"}, result.output
    grow = measured(checks["test_txid_age_trend[grow]"])
    days = grow["postgres.txid.days_left"]
    assert 4.5 < days["value"] < 5.5, grow
    assert (days["verdict"], days["expected"]) == ("FAIL", "≥ 7 days")
    assert grow["trend"]["value"].startswith("full in ")
    assert grow["trend"]["value"].endswith("15 samples over 14 days")
    flat = values(checks["test_txid_age_trend[flat]"])
    assert flat["postgres.txid.days_left"] == "no growth"
    assert flat["trend"].startswith("no growth")
    assert checks["test_txid_age_trend[short]"]["message"].startswith(
        "insufficient history: 3 samples over 48.0 hours (needs 7 over 24 hours"), result.output


def test_database_size_trend_from_a_seeded_history(project: Project,
                                                   healthy: PostgresServer) -> None:
    with healthy._admin() as conn:
        row = conn.execute("SELECT pg_database_size('ts_forecast_system')").fetchone()
    assert row is not None
    assert isinstance(row[0], int)
    capacity = int(row[0] / 0.78)  # 78 % full: the check itself passes
    now = round(100.0 * row[0] / capacity, 2)
    db = ["ts_forecast_system"]
    seed(project, "grow", "postgres.database_size_pct", db, "%", 100, growing(now, 100, 5))
    seed(project, "flat", "postgres.database_size_pct", db, "%", 100, [now] * 14)
    seed(project, "short", "postgres.database_size_pct", db, "%", 100, [now] * 2)
    result, checks = run(project, {name: (dsn(healthy), f"capacity_bytes: {capacity}")
                                   for name in ("grow", "flat", "short")},
                         "-k", "test_database_size")
    assert outcomes(checks) == {
        "test_database_size[grow]": "PASS", "test_database_size[flat]": "PASS",
        "test_database_size[short]": "PASS",
        "test_database_size_trend[grow]": "FAIL", "test_database_size_trend[flat]": "PASS",
        "test_database_size_trend[short]": "SKIP"}, result.output
    grow = measured(checks["test_database_size_trend[grow]"])
    days = grow["postgres.database_size.days_left[ts_forecast_system]"]
    assert 4 < days["value"] < 6, grow
    assert days["verdict"] == "FAIL"
    assert "+4.4 %/day" in grow["trend"]["value"], grow
    assert values(checks["test_database_size_trend[flat]"])[
        "postgres.database_size.days_left"] == "no growth"


def test_no_capacity_bytes_no_database_size_check(project: Project,
                                                  healthy: PostgresServer) -> None:
    result, checks = run(project, {"plain": (dsn(healthy), "")}, "-k", "database_size", "-rs")
    assert result.returncode == 0, result.output
    assert outcomes(checks) == {"test_database_size[no-postgres-target]": "SKIP",
                                "test_database_size_trend[no-postgres-target]": "SKIP"}
    assert "no postgres target declares capacity_bytes in environment 'cap'" in result.stdout


# -- what the monitoring role may not read --------------------------------------------------------
def test_a_role_that_may_not_read_the_statistics_is_a_skip_naming_the_grant(
        project: Project, healthy: PostgresServer) -> None:
    """Without pg_read_all_stats the type of other roles' sessions is hidden; where SELECT
    on a statistics view was revoked from PUBLIC, that view cannot be read at all."""
    with healthy._admin() as conn:
        conn.execute("SET log_statement = 'none'")
        conn.execute(f"CREATE ROLE nomon LOGIN PASSWORD '{PASSWORD}'")
        conn.execute("CREATE DATABASE restricted")
    with healthy._admin("restricted") as conn:
        conn.execute("REVOKE SELECT ON pg_catalog.pg_stat_activity, "
                     "pg_catalog.pg_stat_user_tables FROM PUBLIC")
    result, checks = run(project, {"nomon": (dsn(healthy, "nomon"), ""),
                                   "revoked": (dsn(healthy, "nomon", "restricted"), "")},
                         "-k", "not trend")
    assert result.returncode == 0, result.output
    status = outcomes(checks)
    assert status["test_connections_used[nomon]"] == "SKIP", result.output
    assert checks["test_connections_used[nomon]"]["message"] == (
        "nomon: cannot read the sessions of other roles in pg_stat_activity without a "
        "privilege this account lacks; grant it: GRANT pg_read_all_stats TO nomon "
        "(pg_monitor includes it)")
    assert checks["test_connections_used[revoked]"]["message"].endswith(
        "cannot read pg_stat_activity without a privilege this account lacks; grant it: "
        "GRANT SELECT ON pg_catalog.pg_stat_activity TO nomon")
    # Blind to other roles' sessions, the stale-session count would be 0: a SKIP too.
    assert status["test_stale_idle_sessions[nomon]"] == "SKIP"
    assert status["test_stale_idle_sessions[revoked]"] == "SKIP"
    assert checks["test_dead_tuples[revoked]"]["message"].endswith(
        "grant it: GRANT SELECT ON pg_catalog.pg_stat_user_tables TO nomon")
    # What every role may read is judged all the same.
    for readable in ("test_txid_age", "test_replication_slots", "test_unused_indexes"):
        assert status[f"{readable}[nomon]"] == "PASS", (readable, result.output)
    assert status["test_dead_tuples[nomon]"] == "PASS"


# -- the sandbox faults ---------------------------------------------------------------------------
RED = {
    "none": {},
    "pg-connections-exhausted": {
        f"{CHECK}::test_connections_used[{target}]":
            ("postgres.connections_used_pct", lambda v: v >= 92)
        for target in ("db", "db-cluster")},  # two targets, one server
    "replication-slot-stale": {
        f"{CHECK}::test_replication_slots[db]":
            ("postgres.slot_retained_bytes", lambda v: v > 32 * MIB)},
}


@pytest.mark.parametrize("fault", list(RED))
def test_fault_turns_exactly_its_check_red(project: Project, fault: str) -> None:
    project.use_foundation()
    args = ["--sandbox-fault", fault] if fault != "none" else []
    result = project.run("-m", "daily", *args)
    data = json.loads((project.latest() / "summary.json").read_text())
    red = {c["nodeid"]: c for c in data["checks"] if c["outcome"] in ("FAIL", "ERROR")}
    assert set(red) == set(RED[fault]), {n: c["message"] for n, c in red.items()}
    assert result.returncode == (1 if red else 0), result.output
    for nodeid, (name, judge) in RED[fault].items():
        failing = [m for m in red[nodeid]["evidence"] if m["verdict"] == "FAIL"]
        assert [m["name"] for m in failing] == [name], failing
        assert judge(failing[0]["value"]), failing[0]
