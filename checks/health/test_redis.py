"""Redis health: the runbook's ``redis-cli ping``, the declared role and persistence, and
whether the last snapshot ("Redis SAVE succeeded") worked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.redis import RedisClient, Replication

PERSISTENCE_SETTING = {"rdb": "save", "aof": "appendonly"}

# Every read here is a fixed command (or the CONFIG GET of a declared mode), prefetched in
# the probe pool.


@dataclass(frozen=True)
class PingReading:
    """The answer to PING and what INFO server says about the process."""

    reply: str
    version: Any
    uptime_s: Any


@dataclass(frozen=True)
class LastSave:
    """How old the last successful RDB save is, by the server's clock, and what changed
    since."""

    age_s: float
    changes: int


@probe
def redis_ping_reading(redis: RedisClient) -> PingReading:
    reply = redis.ping_reply()
    server = redis.info("server")
    return PingReading(reply, server.get("redis_version"), server.get("uptime_in_seconds"))


@probe
def redis_replication(redis: RedisClient) -> Replication:
    return redis.replication()


@probe
def redis_persistence_info(redis: RedisClient) -> dict[str, Any]:
    """``INFO persistence``."""
    return redis.info("persistence")


@probe
def redis_config_value(redis: RedisClient, redis_persistence: tuple[str, bool]) -> str:
    """``CONFIG GET`` of the setting behind the declared persistence mode."""
    mode, _declared = redis_persistence
    return redis.config_get(PERSISTENCE_SETTING[mode])


@probe
def redis_last_save(redis: RedisClient) -> LastSave:
    info = redis.info("persistence")
    age = redis.server_time() - float(info["rdb_last_save_time"])
    return LastSave(age, int(info.get("rdb_changes_since_last_save", 0)))


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_ping(redis_ping_reading: PingReading, evidence: EvidenceLog) -> None:
    """The server answers PING with PONG after authenticating."""
    reading = redis_ping_reading
    evidence.expect("PING", reading.reply, equals="PONG")
    evidence.note("redis_version", reading.version)
    evidence.note("uptime", reading.uptime_s, unit="s")


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_role(redis: RedisClient, redis_role: str, redis_replication: Replication,
              evidence: EvidenceLog) -> None:
    """The server is the master or the replica it is declared to be; a replica's link to
    its master is up."""
    replication = redis_replication
    where = evidence.source_of("targets", redis.name, "role")
    evidence.expect("role", replication.role, equals=redis_role, source=where)
    if replication.role == "master":
        evidence.note("connected replicas", replication.connected_replicas)
    else:
        evidence.note("master", replication.master)
    if redis_role == "replica" and replication.role == "replica":
        evidence.expect("master_link_status", replication.link_status, equals="up")


@pytest.mark.daily
def test_last_bgsave(redis_persistence_info: dict[str, Any], evidence: EvidenceLog) -> None:
    """The last background save succeeded (a failed one makes Redis refuse writes while
    stop-writes-on-bgsave-error is on); with AOF on, its last write and rewrite too."""
    info = redis_persistence_info
    evidence.expect("rdb_last_bgsave_status", info.get("rdb_last_bgsave_status"), equals="ok")
    evidence.note("rdb_changes_since_last_save", info.get("rdb_changes_since_last_save"))
    if info.get("aof_enabled"):
        evidence.expect("aof_last_write_status", info.get("aof_last_write_status"), equals="ok")
        evidence.expect("aof_last_bgrewrite_status", info.get("aof_last_bgrewrite_status"),
                        equals="ok")


@pytest.mark.daily
def test_persistence(redis: RedisClient, redis_persistence: tuple[str, bool],
                     redis_config_value: str, evidence: EvidenceLog) -> None:
    """RDB snapshots / the append-only file are on or off as declared (CONFIG GET)."""
    mode, declared = redis_persistence
    setting = PERSISTENCE_SETTING[mode]
    value = redis_config_value
    enabled = value.strip() not in ("", "no") if mode == "rdb" else value == "yes"
    evidence.note(f"CONFIG GET {setting}", value)
    evidence.expect(f"{mode} enabled", enabled, equals=declared,
                    source=evidence.source_of("targets", redis.name, "persistence", mode))


@pytest.mark.daily
def test_last_save_age(redis_rdb: str, redis_last_save: LastSave,
                       evidence: EvidenceLog) -> None:
    """With RDB snapshots declared, changes do not stay unsaved for long: the last
    successful save is recent, by the server's clock, unless nothing changed since."""
    age, changes = redis_last_save.age_s, redis_last_save.changes
    evidence.note("rdb_changes_since_last_save", changes)
    if changes == 0:
        # Nothing to lose: an old snapshot of an unchanged dataset is still complete.
        evidence.note("last save age", age, unit="s")
        return
    evidence.within("redis.last_save_age_s", age, unit="s",
                    default=Threshold(warn=2 * 3600, crit=26 * 3600))
