"""The redis health checks (PING, role, last BGSAVE, persistence, last save age) PASS and
FAIL against real ``redis-server`` processes in good and bad states, as a user runs the
suite; and the read-only client allows CONFIG GET but never CONFIG SET."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.sandbox.process import free_port, wait_until
from opsverify.targets.redis import RedisClient, RedisTarget
from tests.conftest import DripServer, Project, Result

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not found (apt-get install redis-server)")
PASSWORD = "redis-test-pw-7c1e"  # a test value that must never be shown

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


def run_checks(project: Project, env: str, *args: str,
               variables: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    """Run the stock redis health checks; outcomes keyed ``test[id]``."""
    project.copy_check("checks/health/test_redis.py")
    return project.run_checks("kv", env, *args, env=variables)


def failing(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"] if m["verdict"] == "FAIL"}


# -- schema and the read-only client ---------------------------------------------------------
def test_schema() -> None:
    spec = RedisTarget(type="redis", url="redis://:pw@cache:6379/0", role="replica",
                       persistence={"rdb": True})
    assert spec.persistence is not None
    assert spec.persistence.declared() == [("rdb", True)]
    with pytest.raises(ValidationError, match="give rdb, aof or both"):
        RedisTarget(type="redis", url="redis://cache", persistence={})
    with pytest.raises(ValidationError, match="Input should be 'master' or 'replica'"):
        RedisTarget(type="redis", url="redis://cache", role="slave")


def test_read_only_client_allows_config_get_and_refuses_config_set(redis_server: Start) -> None:
    url = redis_server("save 3600 1")
    client = RedisClient("cache", RedisTarget(type="redis", url=url), timeout_s=3)
    assert client.config_get("save") == "3600 1"
    for attempt in (lambda: client.call("CONFIG SET", "save", ""),
                    lambda: client.call("CONFIG", "SET", "save", ""),
                    lambda: client.redis.config_set("save", ""),
                    lambda: client.call("SLOWLOG", "RESET"),
                    lambda: client.call("MEMORY", "PURGE"),
                    lambda: client.call("CONFIG")):
        with pytest.raises(WriteRefused, match="refusing Redis"):
            attempt()
    assert admin(url).config_get("save") == {"save": "3600 1"}  # nothing reached the server
    client.close()


def test_config_refused_by_the_server_is_one_line(redis_server: Start) -> None:
    url = redis_server('rename-command CONFIG ""')
    client = RedisClient("cache", RedisTarget(type="redis", url=url), timeout_s=3)
    with pytest.raises(TargetUnavailable, match=r"CONFIG GET save refused .*allow \+config\|get"):
        client.config_get("save")
    client.close()


# -- against real servers ------------------------------------------------------------------
ENV = """
settings: {timeout_s: 3}
targets:
  cache:            # a healthy master with snapshots, written to since its last one
    type: redis
    url: ${GOOD}
    role: master
    persistence: {rdb: true, aof: false}
  follower:         # a healthy replica of cache
    type: redis
    url: ${FOLLOWER}
    role: replica
  promoted:         # declared the master, but it is a replica (a failover gone wrong)
    type: redis
    url: ${FOLLOWER}
    role: master
  orphan:           # a replica whose master is gone
    type: redis
    url: ${ORPHAN}
    role: replica
  volatile:         # snapshots switched off and AOF on, unlike what is declared
    type: redis
    url: ${VOLATILE}
    persistence: {rdb: true, aof: false}
  stale:            # changes unsaved for longer than its threshold
    type: redis
    url: ${STALE}
    persistence: {rdb: true}
    thresholds: {redis.last_save_age_s: {crit: 1}}
  locked:           # CONFIG renamed away: persistence cannot be evaluated
    type: redis
    url: ${LOCKED}
    persistence: {aof: false}
"""


def test_each_check_passes_and_fails_for_the_right_reason(project: Project,
                                                          redis_server: Start) -> None:
    good = redis_server("save 3600 1")
    port = good.rsplit(":", 1)[1].split("/")[0]
    follower = redis_server(f"replicaof 127.0.0.1 {port}", f"masterauth {PASSWORD}")
    orphan = redis_server(f"replicaof 127.0.0.1 {free_port()}", f"masterauth {PASSWORD}")
    variables = {
        "GOOD": good, "FOLLOWER": follower, "ORPHAN": orphan,
        "VOLATILE": redis_server("appendonly yes"), "STALE": redis_server("save 3600 1"),
        "LOCKED": redis_server('rename-command CONFIG ""'),
    }
    wait_until(lambda: admin(follower).info("replication")["master_link_status"] == "up",
               timeout_s=10, what="the replica to sync")
    for name in ("GOOD", "STALE"):
        admin(variables[name]).set("forecast:last-run", "ok")
    time.sleep(1.2)  # the stale server's unsaved change is now older than its 1 s threshold

    result, checks = run_checks(project, ENV, variables=variables)
    assert result.returncode == 1, result.output
    outcomes = {k: c["outcome"] for k, c in checks.items()}
    assert {k for k, o in outcomes.items() if o == "PASS"} >= {
        "test_ping[cache]", "test_role[cache:master]", "test_last_bgsave[cache]",
        "test_persistence[cache:rdb]", "test_persistence[cache:aof]",
        "test_last_save_age[cache:rdb]", "test_role[follower:replica]",
        "test_last_bgsave[volatile]",  # with AOF on, its statuses are checked too
    }
    assert failing(checks["test_role[promoted:master]"]) == {"role": "replica"}
    assert failing(checks["test_role[orphan:replica]"]) == {"master_link_status": "down"}
    assert failing(checks["test_persistence[volatile:rdb]"]) == {"rdb enabled": False}
    assert failing(checks["test_persistence[volatile:aof]"]) == {"aof enabled": True}
    assert failing(checks["test_last_save_age[stale:rdb]"])["redis.last_save_age_s"] >= 1
    assert outcomes["test_persistence[locked:aof]"] == "ERROR"
    assert "locked (redis 127.0.0.1:" in result.stdout
    assert "CONFIG GET appendonly refused" in result.stdout
    # Only the checks whose expectation is violated fail.
    assert sorted(k for k, o in outcomes.items() if o in ("FAIL", "ERROR")) == sorted([
        "test_role[promoted:master]", "test_role[orphan:replica]",
        "test_persistence[volatile:rdb]", "test_persistence[volatile:aof]",
        "test_last_save_age[stale:rdb]", "test_persistence[locked:aof]"])
    assert PASSWORD not in result.output
    # Not declared, not collected: nothing judges the role or persistence of `volatile`.
    assert not [k for k in checks if k.startswith(("test_role[volatile", "test_role[stale"))]


def test_sandbox_fault_redis_bgsave_failed(project: Project) -> None:
    """Redis's data directory is gone: a real BGSAVE fails, and Redis answers even PING with
    MISCONF (stop-writes-on-bgsave-error)."""
    env = """
settings: {timeout_s: 3}
sandbox: {redis: {}}
targets:
  cache: {type: redis, url: "${SANDBOX_REDIS_URL}", role: master,
          persistence: {rdb: true, aof: false}}
"""
    result, checks = run_checks(project, env, "--sandbox-fault", "redis-bgsave-failed")
    assert result.returncode == 1, result.output
    assert failing(checks["test_last_bgsave[cache]"]) == {"rdb_last_bgsave_status": "err"}
    assert failing(checks["test_ping[cache]"])["PING"].startswith("MISCONF")
    assert sorted(k for k, c in checks.items() if c["outcome"] == "FAIL") == [
        "test_last_bgsave[cache]", "test_ping[cache]"]


def test_a_server_dripping_its_reply_is_cut_at_the_deadline() -> None:
    """A reply one byte every 0.2 s passes every socket read timeout; the whole command's
    deadline still holds, and the connection is hung up on."""
    server = DripServer(b"", b"+" + b"A" * 10_000 + b"\r\n")
    try:
        client = RedisClient("cache", RedisTarget(type="redis",
                                                  url=f"redis://127.0.0.1:{server.port}/0"), 1.0)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable) as caught:
            client.reachable()
        assert time.monotonic() - started < 1.0 + 1  # timeout_s + 1 s
        assert str(caught.value) == (
            f"cache (redis 127.0.0.1:{server.port}): no complete answer within 1 s")
        deadline = time.monotonic() + 3
        while server.cut_after_s is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.cut_after_s is not None
    finally:
        server.close()
