"""checks/capacity/test_redis.py against real ``redis-server`` processes: memory filled to its
``maxmemory``, keys evicted by ``allkeys-lru``, connections refused at ``maxclients`` and
clients near it each turn exactly their check red, a healthy server passes, a server
without ``maxmemory`` is noted and never failed; counters are judged since the previous
run (a counter that went down is a restart); the memory trend from a seeded history; and
the sandbox's ``redis-memory-full`` fault turns exactly its check red."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from opsverify.history import Sample
from opsverify.targets.redis_capacity import RedisCapacity, counter_delta, parse_info
from tests.conftest import Project, Result, outcomes, sandbox_subset

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not found (apt-get install redis-server)")
PASSWORD = "redis-capacity-pw-3b8d"  # a test value that must never be shown
CHECK = "checks/capacity/test_redis.py"
MEMORY, EVICTED, REJECTED, CLIENTS, TREND = (
    f"test_{name}[cache]" for name in ("memory_used_pct", "evicted_keys",
                                       "rejected_connections", "clients_used_pct",
                                       "memory_trend"))
ALL = (MEMORY, EVICTED, REJECTED, CLIENTS, TREND)

Start = Callable[..., str]


@pytest.fixture
def redis_server(start_redis: Callable[..., int]) -> Start:
    """Start a real redis-server with extra config lines; returns its URL.

    Usage: ``url = redis_server("save 3600 1")``
    """
    def start(*lines: str) -> str:
        port = start_redis(f"requirepass {PASSWORD}", "appendonly no", *lines)
        return f"redis://:{PASSWORD}@127.0.0.1:{port}/0"

    return start


def admin(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)


def run(project: Project, url: str, *args: str) -> tuple[Result, dict[str, Any]]:
    project.copy_check(CHECK)
    env = "settings: {timeout_s: 3}\ntargets:\n  cache: {type: redis, url: \"${CACHE_URL}\"}\n"
    return project.run_checks("kv", env, *args, env={"CACHE_URL": url})


def seed(project: Project, samples: list[tuple[datetime, str, float, float | None]]) -> None:
    """Earlier runs' readings of ``cache``: (time, metric, value, capacity)."""
    path = project.path / "reports" / "kv" / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({
        "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "target": "cache", "metric": metric,
        "item": "", "value": value, "unit": "%" if capacity else "", "capacity": capacity,
    }) + "\n" for t, metric, value, capacity in samples))


def measured(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"]}


def verdicts(check: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["verdict"] for m in check["evidence"] if m["verdict"] != "PASS"}


def memory_pct(url: str) -> float:
    info = admin(url).info("memory")
    return 100.0 * int(info["used_memory"]) / int(info["maxmemory"])


def fill_to(url: str, pct: float) -> None:
    """Write values until used_memory is ``pct`` % of maxmemory."""
    client = admin(url)
    limit = int(client.info("memory")["maxmemory"])
    for i in range(10_000):
        room = int(limit * pct / 100) - int(client.info("memory")["used_memory"])
        if room < 2048:
            break
        client.set(f"blob:{i}", "x" * min(room // 2, 32 * 1024))
    client.close()


def refuse_connections(port: int, count: int) -> None:
    """Open ``count`` connections that Redis refuses (maxclients reached)."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            assert sock.recv(200).startswith(b"-ERR max number of clients reached")


def hold(url: str, count: int) -> list[redis.Redis]:
    clients = [redis.Redis.from_url(url, socket_timeout=5) for _ in range(count)]
    for client in clients:
        client.ping()
    return clients


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# -- the engine: INFO's fields, counters since the previous run -------------------------------
INFO = {"used_memory": 900_000, "maxmemory": 1_000_000, "maxmemory_policy": "noeviction",
        "connected_clients": 19, "maxclients": 20, "evicted_keys": 0,
        "rejected_connections": 3, "uptime_in_seconds": 7200}


def test_parse_info() -> None:
    found = parse_info(INFO)
    assert (found.memory_used_pct, found.clients_used_pct) == (90.0, 95.0)
    assert parse_info({**INFO, "maxmemory": 0}).memory_used_pct is None
    older = parse_info({k: v for k, v in INFO.items() if k != "maxclients"})
    assert older.maxclients is None
    with pytest.raises(ValueError, match="INFO has no evicted_keys"):
        parse_info({k: v for k, v in INFO.items() if k != "evicted_keys"})
    with pytest.raises(ValueError, match="INFO used_memory: 'lots' is not a number"):
        parse_info({**INFO, "used_memory": "lots"})


def test_a_limit_config_get_refused_is_missing_privilege() -> None:
    found = RedisCapacity(1, 0, "", 1, None, 0, 0, 1, refused=("maxclients",),
                          grant="ACL SETUSER monitor +config|get")
    assert found.limit("cache", "maxmemory") == 0
    with pytest.raises(Exception, match="grant it: ACL SETUSER monitor \\+config\\|get"):
        found.limit("cache", "maxclients")


def test_counter_delta() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)

    def before(value: float, hours: float) -> Sample:
        return Sample(now - timedelta(hours=hours), "cache", "redis.x_total", "", value)

    first = counter_delta(40, 3600, None, now)
    assert (first.value, first.elapsed_s) == (40, None)
    assert first.window == ("no previous run: counted since the server started 60 min ago "
                            "(uptime_in_seconds 3600)")
    grew = counter_delta(150, 86400, before(120, 2), now)
    assert (grew.value, grew.elapsed_s, grew.restarted) == (30, 7200, False)
    assert grew.window == "since the previous run, 2.0 h ago (counter 120 → 150)"
    down = counter_delta(3, 600, before(120, 2), now)
    assert (down.value, down.restarted) == (3, True)
    assert down.window.startswith("restarted since the previous run (counter 120 → 3)")
    # Restarted and counted past its old value: the uptime says so, never a bogus delta.
    again = counter_delta(130, 600, before(120, 2), now)
    assert (again.value, again.restarted) == (130, True)
    assert again.window.startswith("restarted since the previous run (up 10 min, the "
                                   "previous run was 2.0 h ago)")


# -- the checks against real servers ------------------------------------------------------------
def test_a_healthy_server_passes(project: Project, redis_server: Start) -> None:
    url = redis_server("maxmemory 64mb", "maxclients 100")
    result, checks = run(project, url)
    assert outcomes(checks) == {MEMORY: "PASS", EVICTED: "PASS", REJECTED: "PASS",
                                CLIENTS: "PASS", TREND: "SKIP"}, result.output
    memory = measured(checks[MEMORY])
    assert 0 < memory["redis.memory_used_pct"] < 10
    assert memory["maxmemory"] == "64.0 MiB"
    assert measured(checks[CLIENTS])["maxclients"] == 100
    evicted = measured(checks[EVICTED])
    assert (evicted["redis.evicted_keys"], evicted["redis.evicted_keys_total"]) == (0, 0)
    assert evicted["counted"].startswith("no previous run: counted since the server started")
    assert checks[TREND]["message"].startswith("insufficient history: 1 samples over 0.0 hours")
    assert PASSWORD not in result.output
    # The raw counters and the percentages went to the history, for the next run.
    history = [json.loads(line) for line in
               (project.path / "reports/kv/history.jsonl").read_text().splitlines()]
    metrics = {h["metric"]: h for h in history}
    assert {"redis.evicted_keys_total", "redis.rejected_connections_total",
            "redis.memory_used_pct", "redis.clients_used_pct"} <= set(metrics)
    assert metrics["redis.memory_used_pct"]["capacity"] == 100


def test_no_maxmemory_is_noted_never_failed(project: Project, redis_server: Start) -> None:
    url = redis_server()
    client = admin(url)
    client.set("blob", "x" * 1_000_000)
    result, checks = run(project, url)
    assert outcomes(checks)[MEMORY] == "PASS", result.output
    memory = measured(checks[MEMORY])
    assert memory["maxmemory"] == "no maxmemory: Redis grows until the host's memory runs out"
    assert memory["redis.used_memory_bytes"] > 1_000_000
    assert "redis.memory_used_pct" not in memory
    assert checks[TREND]["outcome"] == "SKIP"
    assert checks[TREND]["message"] == ("no maxmemory: Redis grows until the host's memory "
                                        "runs out: no limit to count the days to")


def test_memory_filled_to_maxmemory_fails(project: Project, redis_server: Start) -> None:
    url = redis_server("maxmemory 4mb", "maxmemory-policy noeviction")
    client = admin(url)
    written = 0
    with contextlib.suppress(redis.exceptions.OutOfMemoryError):  # full: writes refused
        for i in range(10_000):
            client.set(f"blob:{i}", "x" * 16 * 1024)
            written += 1
    assert 0 < written < 10_000
    result, checks = run(project, url)
    assert {k: v for k, v in outcomes(checks).items() if v == "FAIL"} == {MEMORY: "FAIL"}, \
        result.output
    assert verdicts(checks[MEMORY]) == {"redis.memory_used_pct": "FAIL"}
    assert measured(checks[MEMORY])["redis.memory_used_pct"] > 90
    assert "writes are refused once full" in measured(checks[MEMORY])["maxmemory-policy"]
    assert f"FAIL  checks/capacity/test_redis.py::{MEMORY}: cache: redis.memory_used_pct" in \
        result.stdout


def test_evicted_keys_fail(project: Project, redis_server: Start) -> None:
    url = redis_server("maxmemory 2mb", "maxmemory-policy allkeys-lru")
    client = admin(url)
    for batch in range(20):
        with client.pipeline(transaction=False) as pipe:
            for i in range(1000):
                pipe.set(f"cache:{batch}:{i}", "x" * 200)
            pipe.execute()
    evicted = int(client.info("stats")["evicted_keys"])
    assert evicted > 1000
    result, checks = run(project, url)
    assert outcomes(checks)[EVICTED] == "FAIL", result.output
    check = measured(checks[EVICTED])
    assert check["redis.evicted_keys"] == check["redis.evicted_keys_total"] >= evicted
    assert check["counted"].startswith("no previous run: counted since the server started")
    assert check["maxmemory-policy"] == "allkeys-lru"
    assert outcomes(checks)[REJECTED] == "PASS"


def test_rejected_connections_fail(project: Project, redis_server: Start) -> None:
    url = redis_server("maxclients 20")
    held = hold(url, 20)
    refuse_connections(port_of(url), 150)
    for client in held:
        client.close()
    result, checks = run(project, url)
    assert {k: v for k, v in outcomes(checks).items() if v == "FAIL"} == {REJECTED: "FAIL"}, \
        result.output
    check = measured(checks[REJECTED])
    assert check["redis.rejected_connections"] == 150
    assert verdicts(checks[REJECTED]) == {"redis.rejected_connections": "FAIL"}


def test_clients_near_maxclients_fail(project: Project, redis_server: Start) -> None:
    url = redis_server("maxclients 20")
    held = hold(url, 18)
    try:
        result, checks = run(project, url)
    finally:
        for client in held:
            client.close()
    assert {k: v for k, v in outcomes(checks).items() if v == "FAIL"} == {CLIENTS: "FAIL"}, \
        result.output
    check = measured(checks[CLIENTS])
    assert check["redis.clients_used_pct"] >= 95  # 18 held, and the check's own
    assert (check["maxclients"], check["connected_clients"]) == (20, 19)


def test_counters_since_the_previous_run(project: Project, redis_server: Start) -> None:
    """A seeded history: evictions counted since the previous reading (after the server
    started); a rejected-connections counter lower than before is a restart."""
    url = redis_server("maxclients 2")
    held = hold(url, 2)
    refuse_connections(port_of(url), 3)
    for client in held:
        client.close()
    previous = datetime.now(UTC).replace(microsecond=0)
    seed(project, [(previous, "redis.evicted_keys_total", 0, None),
                   (previous - timedelta(hours=2), "redis.rejected_connections_total", 120,
                    None),
                   (previous, "redis.rejected_connections_total", 120, None)])
    result, checks = run(project, url)
    assert outcomes(checks)[EVICTED] == "PASS", result.output
    evicted = measured(checks[EVICTED])
    assert evicted["redis.evicted_keys"] == 0
    assert evicted["counted"].startswith("since the previous run, ")
    assert evicted["counted"].endswith(" ago (counter 0 → 0)")
    assert evicted["previous reading"].startswith(f"{previous:%Y-%m-%d %H:%M:%S} UTC (")
    assert outcomes(checks)[REJECTED] == "WARN", result.output
    rejected = measured(checks[REJECTED])
    assert rejected["redis.rejected_connections"] == 3
    assert rejected["counted"].startswith("restarted since the previous run (counter 120 → 3)"
                                          ": counted since the server started")


# -- the memory trend, from a seeded history --------------------------------------------------
def daily(values: list[float]) -> list[tuple[datetime, str, float, float | None]]:
    """One reading a day, the last one a day ago."""
    now = datetime.now(UTC)
    return [(now - timedelta(days=len(values) - i), "redis.memory_used_pct", v, 100.0)
            for i, v in enumerate(values)]


def test_memory_trend(project: Project, redis_server: Start) -> None:
    url = redis_server("maxmemory 8mb", "maxmemory-policy noeviction")
    fill_to(url, 76)
    now = memory_pct(url)
    # Growing 4 %/day to today's reading: full in (100 - now) / 4 days, under 7: FAIL.
    seed(project, daily([now - 4 * k for k in range(14, 0, -1)]))
    result, checks = run(project, url, "-k", "trend")
    assert outcomes(checks) == {TREND: "FAIL"}, result.output
    days = measured(checks[TREND])["redis.memory.days_left"]
    assert abs(days - (100 - now) / 4) < 0.5, days
    assert measured(checks[TREND])["trend"].startswith(f"full in {days:.1f} days (90 % ")
    assert measured(checks[TREND])["trend"].endswith("+4.0 %/day, 15 samples over 14 days")

    # Flat at today's reading: no growth, a PASS.
    seed(project, daily([now] * 14))
    result, checks = run(project, url, "-k", "trend")
    assert outcomes(checks) == {TREND: "PASS"}, result.output
    assert measured(checks[TREND])["redis.memory.days_left"] == "no growth"

    # Three days: too short to fit.
    seed(project, daily([now] * 3))
    result, checks = run(project, url, "-k", "trend")
    assert outcomes(checks) == {TREND: "SKIP"}, result.output
    assert checks[TREND]["message"].startswith("insufficient history: 4 samples over ")


# -- the sandbox's fault ----------------------------------------------------------------------
FAULT_CHECKS = ("checks/health/test_redis.py", "checks/backup/test_redis.py", CHECK,
                "checks/health/test_http.py")


@pytest.mark.parametrize("fault", ["none", "redis-memory-full"])
def test_sandbox_fault_redis_memory_full(project: Project, fault: str) -> None:
    """The sandbox's Redis (its app, health and backup checks too): healthy, every check
    green; with ``redis-memory-full``, exactly the memory check red."""
    for check in FAULT_CHECKS:
        project.copy_check(check)
    project.write_env(sandbox_subset({"redis", "app"}))
    args = ["--sandbox-fault", fault] if fault != "none" else []
    result = project.run("-m", "daily", *args, timeout=180)
    checks = project.checks()
    red = {n for n, c in checks.items() if c["outcome"] in ("FAIL", "ERROR")}
    ours = {n: c["outcome"] for n, c in checks.items() if n in ALL}
    assert set(ours) == set(ALL), result.output
    if fault == "none":
        assert red == set(), result.output
        assert ours[MEMORY] == "PASS"
        return
    assert red == {MEMORY}, result.output
    value = measured(checks[MEMORY])["redis.memory_used_pct"]
    assert 90 < value < 100, value
    assert measured(checks[MEMORY])["maxmemory"] == "32.0 MiB"
