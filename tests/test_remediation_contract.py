"""The remediation contract on a real PostgreSQL, through the engine itself: an item that
drifted between plan and apply is skipped with its reason and nothing new is picked up; a
failure part-way stops the action, says what was and was not done, and every item has one
audit line; the plan id follows the selection; the CI's actor is audited."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from opsverify.errors import BlastRadiusExceeded
from opsverify.remediation import Plan, Remediation
from opsverify.remediation.postgres import TerminateIdleSessions, TerminateIdleSessionsSettings
from opsverify.sandbox.postgres import PostgresServer, bindir
from opsverify.targets.postgres import PostgresClient, PostgresTarget
from tests.conftest import sandbox_postgres

pytestmark = pytest.mark.skipif(bindir() is None, reason="PostgreSQL not installed "
                                "(apt-get install postgresql)")
PASSWORD = "remediation-contract-pw-5d1a"  # a test value that must never be shown


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with sandbox_postgres(PASSWORD) as box:
        yield box


@pytest.fixture
def idle(server: PostgresServer) -> Iterator[list[psycopg.Connection[tuple[object, ...]]]]:
    """Three sessions left idle: the application's, a superuser's (which the monitoring
    role may not terminate), the application's again — in that order of idleness."""
    conns = []
    for user in ("ts_app", "postgres", "ts_app"):
        if user == "postgres":
            conn = psycopg.connect(host=str(server.sockdir), port=server.port, user=user,
                                   dbname="postgres", application_name="batch-job",
                                   autocommit=True)
        else:
            conn = psycopg.connect(server.app_dsn, application_name="ts-forecast-worker",
                                   autocommit=True)
        conn.execute("SELECT 1")
        conns.append(conn)
        time.sleep(0.05)  # a distinct state_change each: the plan's order is theirs
    time.sleep(1.2)
    yield conns
    for conn in conns:
        conn.close()


def engine(tmp_path: Path, **kwargs: object) -> Remediation:
    settings: dict[str, object] = dict(
        env="contract", operator="tester", check="test", run_id="r1",
        audit_path=tmp_path / "audit.jsonl", max_actions=5, plan_only=False, environ={})
    settings.update(kwargs)
    return Remediation(**settings)  # type: ignore[arg-type]


def client(server: PostgresServer) -> PostgresClient:
    spec = PostgresTarget(type="postgres", dsn=server.dsn, idle_session_max_age_s=1)
    writable = PostgresClient("db", spec, 5, writable=True)
    writable.connect()
    return writable


def audit(tmp_path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def pid(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    return int(conn.info.backend_pid)


def alive(server: PostgresServer, pids: list[int]) -> list[int]:
    with psycopg.connect(host=str(server.sockdir), port=server.port, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)",
                            (pids,)).fetchall()
    return sorted(int(r[0]) for r in rows)


def test_a_drifted_item_is_skipped_and_nothing_new_is_picked_up(
        server: PostgresServer, idle: list[psycopg.Connection[tuple[object, ...]]],
        tmp_path: Path) -> None:
    app_first, superuser, app_last = idle
    superuser.close()  # not part of this test: only the application's two
    time.sleep(0.2)
    db = client(server)
    action = TerminateIdleSessions(db, TerminateIdleSessionsSettings(older_than_s=1))
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert [int(i.identity.split()[1]) for i in plan.items] == [pid(app_first),
                                                                pid(app_last)]
    # Between plan and apply: the first session ends, and a new idle session appears,
    # which the plan does not list.
    first_pid = pid(app_first)
    app_first.close()
    newcomer = psycopg.connect(server.app_dsn, application_name="ts-forecast-worker")
    newcomer.execute("SELECT 1")
    time.sleep(1.1)
    outcome = fix.apply(action, plan)
    assert [i.identity for i, _ in outcome.skipped] == [plan.items[0].identity]
    assert outcome.skipped[0][1] == "the session ended"
    assert [i.identity for i, _ in outcome.applied] == [plan.items[1].identity]
    assert alive(server, [first_pid, pid(app_last), pid(newcomer)]) == [pid(newcomer)]
    lines = audit(tmp_path)
    assert [e["result"] for e in lines] == ["skipped: the session ended", "applied"]
    assert {e["plan_id"] for e in lines} == {plan.plan_id}
    newcomer.close()
    db.close()


def test_a_failure_part_way_stops_and_says_what_was_and_was_not_done(
        server: PostgresServer, idle: list[psycopg.Connection[tuple[object, ...]]],
        tmp_path: Path) -> None:
    first, superuser, last = idle
    db = client(server)  # the monitoring role: it may signal ts_app, not a superuser
    action = TerminateIdleSessions(db, TerminateIdleSessionsSettings(older_than_s=1))
    fix = engine(tmp_path, environ={"GITHUB_ACTOR": "octocat"})
    plan = fix.plan(action)
    assert [int(i.identity.split()[1]) for i in plan.items] == [pid(first), pid(superuser),
                                                                pid(last)]
    outcome = fix.apply(action, plan)
    assert [i.identity for i, _ in outcome.applied] == [plan.items[0].identity]
    assert outcome.failed is not None
    assert outcome.failed[0] == plan.items[1]
    assert "superuser" in outcome.failed[1].lower(), outcome.failed
    assert outcome.not_attempted == [plan.items[2]]
    report = outcome.report()
    assert report.startswith(f"applied 1 of 3 (plan {plan.plan_id}); applied: ")
    assert f"not attempted: {plan.items[2].identity}" in report
    # The server agrees: the first is gone, the superuser's and the last are not.
    assert alive(server, [pid(first), pid(superuser), pid(last)]) == sorted(
        [pid(superuser), pid(last)])
    lines = audit(tmp_path)
    assert [e["result"].split(":")[0] for e in lines] == ["applied", "failed", "not attempted"]
    assert [e["identity"] for e in lines] == [i.identity for i in plan.items]
    for entry in lines:
        assert set(entry) == {"time", "operator", "ci_actor", "env", "target", "action",
                              "plan_id", "identity", "before", "after", "result", "check",
                              "run_id"}
        assert entry["ci_actor"] == "octocat (GITHUB_ACTOR)"
        assert entry["operator"] == "tester"
        assert PASSWORD not in json.dumps(entry)
    db.close()


def test_over_the_limit_is_refused_whole(server: PostgresServer,
                                         idle: list[psycopg.Connection[tuple[object, ...]]],
                                         tmp_path: Path) -> None:
    db = client(server)
    action = TerminateIdleSessions(db, TerminateIdleSessionsSettings(older_than_s=1))
    with pytest.raises(BlastRadiusExceeded, match=r"^refused whole, nothing changed: plan "
                       r"[0-9a-f]{12} lists 3 items, over --max-actions=2: pid "):
        engine(tmp_path, max_actions=2).plan(action)
    with pytest.raises(BlastRadiusExceeded, match=r"lists 3 items, 60 % of 5, over "
                       r"--max-percent=50"):
        engine(tmp_path, max_percent=50).plan(action, population=5)
    assert alive(server, [pid(c) for c in idle]) == sorted(pid(c) for c in idle)
    assert not (tmp_path / "audit.jsonl").exists()
    db.close()


def test_the_plan_id_is_the_selection() -> None:
    from opsverify.remediation import Item

    one = Plan("db", "x", (Item("pid 1", "idle 5 s"), Item("pid 2", "idle 9 s")))
    same = Plan("db", "x", (Item("pid 1", "idle 5 s", ref=object()),
                            Item("pid 2", "idle 9 s")))
    other = Plan("db", "x", (Item("pid 1", "idle 5 s"),))
    assert one.plan_id == same.plan_id != other.plan_id
    assert len(one.plan_id) == 12
