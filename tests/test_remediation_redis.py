"""kill_idle_clients against a real redis-server: gated three times, planned, bounded,
applied by client id, audited, re-checked; and the stock check test_idle_clients.

The server is the sandbox's own (``RedisServer``) with its ``redis-idle-clients`` fault;
what changed is read with ``CLIENT LIST`` by a connection of the test's, outside opsverify's
clients (named ``opsverify-test`` so that no selection counts it).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from opsverify.errors import WriteRefused
from opsverify.remediation import Remediation
from opsverify.remediation.redis import KillIdleClients, KillIdleClientsSettings
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.redis import IDLE_CLIENTS, IDLE_WAIT_S, RedisServer
from opsverify.sandbox.spec import RedisComponent
from opsverify.targets.redis import RedisClient, RedisTarget, idle_clients, parse_client_list
from tests.conftest import ROOT, Project, Result, running

CHECK = "test_kill_idle_clients[cache]"
STOCK = "test_idle_clients[cache]"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """The sandbox's Redis, seeded as the sandbox seeds it."""
    ctx = SandboxContext(tmp_path / "sandbox", secrets.token_hex(8), frozenset())
    ctx.workdir.mkdir()
    yield from running(RedisServer(RedisComponent(), ctx))


@pytest.fixture
def leaking(server: RedisServer) -> RedisServer:
    """…with the redis-idle-clients fault: four connections idle past 1 s."""
    server.inject(frozenset({"redis-idle-clients"}))
    return server


def clients(server: RedisServer) -> dict[int, dict[str, str]]:
    """CLIENT LIST as the server says, on a connection of the test's own."""
    conn = redis.Redis.from_url(server.url, socket_timeout=5, client_name="opsverify-test")
    try:
        text = conn.execute_command("CLIENT", "LIST").decode()
    finally:
        conn.close()
    found = {}
    for line in text.splitlines():
        fields = dict(word.partition("=")[::2] for word in line.split())
        if fields.get("name") != "opsverify-test":
            found[int(fields["id"])] = fields
    return found


def workers(server: RedisServer) -> list[int]:
    return sorted(i for i, c in clients(server).items() if c["name"] == "forecast-worker")


def environment(server: RedisServer, *, remediation: bool = True, url: str | None = None,
                ) -> str:
    """sandbox.yaml's cache target, pointed at this server (no sandbox section)."""
    full = yaml.safe_load((ROOT / "environments" / "sandbox.yaml").read_text())
    target = dict(full["targets"]["cache"], url=url or server.url)
    assert target["remediation"] == {"kill_idle_clients": {"idle_longer_than_s": 1}}
    if not remediation:
        target.pop("remediation")
    return yaml.safe_dump({"settings": {"timeout_s": 3}, "targets": {"cache": target}},
                          sort_keys=False)


def run(project: Project, env: str, *args: str) -> tuple[Result, dict[str, Any]]:
    project.copy_check("checks/remediation/test_redis.py")
    project.copy_check("checks/capacity/test_redis_clients.py")
    return project.run_checks("kv", env, "checks/remediation", *args, timeout=90)


def audit(project: Project) -> list[dict[str, str]]:
    path = project.reports / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- the selection, on CLIENT LIST's own lines ------------------------------------------------
def test_never_replicas_subscribers_blocked_clients_or_opsverify() -> None:
    listed = parse_client_list("\n".join([
        "id=3 addr=10.0.0.2:6380 laddr=10.0.0.1:6379 fd=8 name= age=900 idle=900 flags=S db=0 "
        "cmd=replconf user=default",
        "id=4 addr=10.0.0.1:6379 fd=9 name= age=900 idle=900 flags=M db=0 cmd=ping user=default",
        "id=5 addr=10.0.0.3:5000 fd=10 name=events age=900 idle=900 flags=P db=0 "
        "cmd=subscribe user=default",
        "id=6 addr=10.0.0.3:5001 fd=11 name=queue age=900 idle=900 flags=b db=0 cmd=blpop "
        "user=default",
        "id=7 addr=10.0.0.4:5002 fd=12 name=opsverify age=900 idle=900 flags=N db=0 cmd=info "
        "user=default",
        "id=8 addr=10.0.0.5:5003 fd=13 name=worker age=900 idle=900 flags=N db=0 cmd=get "
        "user=default",
        "id=9 addr=10.0.0.5:5004 fd=14 name=worker age=900 idle=5 flags=N db=0 cmd=get "
        "user=default",
        "id=10 addr=10.0.0.5:5005 fd=15 name= age=9000 idle=3000 flags=x db=0 cmd=multi "
        "user=app",
    ]))
    assert [c.id for c in idle_clients(listed, 60)] == [10, 8]
    assert listed[7].describe() == "id 10 10.0.0.5:5005 ''"


# -- the clients: CLIENT LIST for every check, CLIENT KILL only for the write-capable one -----
def test_only_the_write_capable_client_kills_and_nothing_else(leaking: RedisServer) -> None:
    spec = RedisTarget.model_validate(yaml.safe_load(environment(leaking))["targets"]["cache"])
    reader = RedisClient("cache", spec, 3)
    victim = workers(leaking)[0]
    assert victim in [c.id for c in reader.client_list()]
    for attempt, refused in (
            (lambda: reader.kill_client(victim), "CLIENT KILL from a read-only client"),
            (lambda: reader.call("CLIENT", "KILL", "ID", str(victim)),
             "refusing Redis CLIENT KILL"),
            (lambda: reader.call("CLIENT", "SETNAME", "x"), "refusing Redis CLIENT SETNAME")):
        with pytest.raises(WriteRefused, match=refused):
            attempt()
    writer = RedisClient("cache", spec, 3, writable=True)
    for command in (("SET", "k", "v"), ("FLUSHALL",), ("CLIENT", "PAUSE", "1000"),
                    ("CONFIG", "SET", "maxclients", "1")):
        with pytest.raises(WriteRefused):
            writer.call(*command)
    assert workers(leaking)[0] == victim
    assert writer.kill_client(victim) == 1
    assert victim not in workers(leaking)
    reader.close()
    writer.close()


# -- (1) three opt-ins ----------------------------------------------------------------------
def test_nothing_runs_without_each_of_the_three_opt_ins(leaking: RedisServer,
                                                       project: Project) -> None:
    before = workers(leaking)
    assert len(before) == IDLE_CLIENTS
    result, checks = run(project, environment(leaking, remediation=False),
                         "-m", "destructive", "--allow-destructive=kv")
    [skipped] = checks.values()
    assert skipped["outcome"] == "SKIP", result.output
    assert "no redis target declares kill_idle_clients" in skipped["message"]
    result, _ = run(project, environment(leaking), "--allow-destructive=kv")
    assert "1 destructive check(s) deselected: a destructive check runs only when selected " \
        "by name: add -m destructive" in result.stdout, result.output
    result, _ = run(project, environment(leaking), "-m", "destructive")
    assert "1 destructive check(s) deselected: they change systems; add " \
        "--allow-destructive=kv" in result.stdout, result.output
    assert workers(leaking) == before
    assert audit(project) == []


# -- (2) --plan, and the stock check that catches the fault ----------------------------------
def test_plan_lists_exactly_the_idle_clients_and_changes_nothing(
        leaking: RedisServer, project: Project) -> None:
    # Connections that wait by design, idle as long: never planned.
    subscriber = redis.Redis.from_url(leaking.url, client_name="events").pubsub()
    subscriber.subscribe("forecast:events")
    blocked = redis.Redis.from_url(leaking.url, client_name="queue", socket_timeout=30)
    waiting = threading.Thread(target=lambda: blocked.blpop(["forecast:jobs"], timeout=20),
                               daemon=True)
    waiting.start()
    time.sleep(IDLE_WAIT_S)
    before = clients(leaking)
    idle = workers(leaking)
    result, checks = run(project, environment(leaking), "-m", "destructive",
                         "--allow-destructive=kv", "--plan")
    assert result.returncode == 0, result.output
    outcome = checks[CHECK]
    assert outcome["outcome"] == "PLAN", result.output
    planned = sorted(int(line.split(" id ")[1].split()[0]) for line in outcome["plan"])
    assert planned == idle
    for line in outcome["plan"]:
        assert "'forecast-worker' (idle " in line, line
        assert "last command get" in line, line
    assert set(clients(leaking)) == set(before), "--plan closed connections"
    assert audit(project) == []
    # The stock check catches it: four idle past 1 s, over the sandbox's crit of 2.
    result, checks = project.run_checks("kv", environment(leaking), "-m", "daily",
                                        "checks/capacity/test_redis_clients.py")
    stock = checks[STOCK]
    assert stock["outcome"] == "FAIL", result.output
    judged = next(m for m in stock["evidence"] if m["name"] == "redis.idle_clients")
    assert (judged["value"], judged["expected"]) == (IDLE_CLIENTS, "≤ 2 clients")
    subscriber.close()
    pusher = redis.Redis.from_url(leaking.url)
    pusher.rpush("forecast:jobs", "job")  # the blocked client gets its job and returns
    pusher.close()
    waiting.join(timeout=5)
    blocked.close()


# -- (3) apply, audit, re-check; a daily run afterwards is green -----------------------------
def test_apply_kills_exactly_the_planned_clients_and_rechecks(
        leaking: RedisServer, project: Project) -> None:
    idle = workers(leaking)
    others = set(clients(leaking)) - set(idle)
    result, checks = run(project, environment(leaking), "-m", "destructive",
                         "--allow-destructive=kv")
    assert result.returncode == 0, result.output
    assert workers(leaking) == []
    assert others <= set(clients(leaking)), "closed a connection that was not planned"
    entries = audit(project)
    assert sorted(int(e["identity"].split()[1]) for e in entries) == idle
    for entry in entries:
        assert (entry["env"], entry["target"], entry["action"], entry["result"],
                entry["after"]) == ("kv", "cache", "kill_idle_clients", "applied", "killed")
        assert entry["before"].startswith("idle ")
        assert entry["operator"]
        assert entry["plan_id"]
    outcome = checks[CHECK]
    assert outcome["outcome"] == "PASS"
    assert [(m["name"], m["value"], m["verdict"]) for m in outcome["evidence"]] == [
        ("redis.idle_clients", 0, "PASS")]
    result, checks = project.run_checks("kv", environment(leaking), "-m", "daily",
                                        "checks/capacity/test_redis_clients.py")
    assert result.returncode == 0, result.output
    assert checks[STOCK]["outcome"] == "PASS"


# -- (4) drift between plan and apply -------------------------------------------------------
def test_clients_that_drifted_between_plan_and_apply_are_skipped(
        leaking: RedisServer, tmp_path: Path) -> None:
    spec = RedisTarget.model_validate(yaml.safe_load(environment(leaking))["targets"]["cache"])
    client = RedisClient("cache", spec, 3, writable=True)
    action = KillIdleClients(client, KillIdleClientsSettings(idle_longer_than_s=1))
    engine = Remediation(env="kv", operator="tester", check="t", run_id="r1",
                         audit_path=tmp_path / "audit.jsonl", max_actions=5, plan_only=False)
    plan = engine.plan(action)
    assert len(plan.items) == IDLE_CLIENTS
    busy, gone = leaking.leaked[0], leaking.leaked[1]
    busy_id, gone_id = int(busy.client_id()), int(gone.client_id())
    gone.close()
    outcome = engine.apply(action, plan)
    skipped = {int(item.identity.split()[1]): why for item, why in outcome.skipped}
    assert skipped[gone_id] == "the client disconnected"
    assert skipped[busy_id].startswith("it sent a command since the plan (client|id, idle 0 s")
    assert len(outcome.applied) == IDLE_CLIENTS - 2
    assert workers(leaking) == [busy_id]
    assert [e["result"].split(":")[0] for e in engine.audited].count("skipped") == 2
    client.close()


# -- (5) over --max-actions: refused whole ---------------------------------------------------
def test_a_plan_over_max_actions_is_refused_with_nothing_touched(
        leaking: RedisServer, project: Project) -> None:
    before = workers(leaking)
    result, checks = run(project, environment(leaking), "-m", "destructive",
                         "--allow-destructive=kv", "--max-actions=3")
    assert result.returncode == 1, result.output
    message = checks[CHECK]["message"]
    assert message.startswith("cache: kill_idle_clients: refused whole, nothing changed: plan ")
    assert f"lists {IDLE_CLIENTS} items, over --max-actions=3" in message
    assert workers(leaking) == before
    assert audit(project) == []


# -- (6) a failure part-way ---------------------------------------------------------------
def test_a_failure_part_way_reports_what_was_and_was_not_done(
        start_redis: Any, project: Project) -> None:
    """A monitoring user that may list clients but not kill them: the first kill fails,
    nothing else is attempted, exit 1."""
    port = start_redis("user default off", "user app on >app-pw ~* +@all",
                       "user monitor on >monitor-pw ~* +@all -client|kill")
    leaked = [redis.Redis(port=port, username="app", password="app-pw",
                          client_name="forecast-worker") for _ in range(3)]
    for conn in leaked:
        conn.get("x")
    time.sleep(IDLE_WAIT_S)
    url = f"redis://monitor:monitor-pw@127.0.0.1:{port}/0"
    full = yaml.safe_load((ROOT / "environments" / "sandbox.yaml").read_text())
    target = {k: v for k, v in full["targets"]["cache"].items() if k != "persistence"}
    env = yaml.safe_dump({"settings": {"timeout_s": 3}, "targets": {"cache": {**target,
                                                                              "url": url}}})
    result, checks = run(project, env, "-m", "destructive", "--allow-destructive=kv")
    assert result.returncode == 1, result.output
    message = checks[CHECK]["message"]
    assert message.startswith("cache: kill_idle_clients stopped at a failure: applied 0 of 3")
    assert "failed: id " in message
    assert "no permissions to run the 'client|kill' command" \
        in message
    assert message.count("not attempted: id ") == 2
    results = [e["result"].split(":")[0] for e in audit(project)]
    assert results == ["failed", "not attempted", "not attempted"]
    assert "monitor-pw" not in result.output
    for conn in leaked:
        assert conn.ping()  # still connected
        conn.close()
