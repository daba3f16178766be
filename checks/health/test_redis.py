"""Redis health: the runbook's ``redis-cli ping``, the declared role and persistence, and
whether the last snapshot ("Redis SAVE succeeded") worked."""

import pytest

from opsverify.evidence import EvidenceLog
from opsverify.targets.redis import RedisClient
from opsverify.thresholds import Threshold

PERSISTENCE_SETTING = {"rdb": "save", "aof": "appendonly"}


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_ping(redis: RedisClient, evidence: EvidenceLog) -> None:
    """The server answers PING with PONG after authenticating."""
    evidence.expect("PING", redis.ping_reply(), equals="PONG")
    server = redis.info("server")
    evidence.note("redis_version", server.get("redis_version"))
    evidence.note("uptime", server.get("uptime_in_seconds"), unit="s")


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_role(redis: RedisClient, redis_role: str, evidence: EvidenceLog) -> None:
    """The server is the master or the replica it is declared to be; a replica's link to
    its master is up."""
    replication = redis.replication()
    where = evidence.source_of("targets", redis.name, "role")
    evidence.expect("role", replication.role, equals=redis_role, source=where)
    if replication.role == "master":
        evidence.note("connected replicas", replication.connected_replicas)
    else:
        evidence.note("master", replication.master)
    if redis_role == "replica" and replication.role == "replica":
        evidence.expect("master_link_status", replication.link_status, equals="up")


@pytest.mark.daily
def test_last_bgsave(redis: RedisClient, evidence: EvidenceLog) -> None:
    """The last background save succeeded (a failed one makes Redis refuse writes while
    stop-writes-on-bgsave-error is on); with AOF on, its last write and rewrite too."""
    info = redis.info("persistence")
    evidence.expect("rdb_last_bgsave_status", info.get("rdb_last_bgsave_status"), equals="ok")
    evidence.note("rdb_changes_since_last_save", info.get("rdb_changes_since_last_save"))
    if info.get("aof_enabled"):
        evidence.expect("aof_last_write_status", info.get("aof_last_write_status"), equals="ok")
        evidence.expect("aof_last_bgrewrite_status", info.get("aof_last_bgrewrite_status"),
                        equals="ok")


@pytest.mark.daily
def test_persistence(redis: RedisClient, redis_persistence: tuple[str, bool],
                     evidence: EvidenceLog) -> None:
    """RDB snapshots / the append-only file are on or off as declared (CONFIG GET)."""
    mode, declared = redis_persistence
    setting = PERSISTENCE_SETTING[mode]
    value = redis.config_get(setting)
    enabled = value.strip() not in ("", "no") if mode == "rdb" else value == "yes"
    evidence.note(f"CONFIG GET {setting}", value)
    evidence.expect(f"{mode} enabled", enabled, equals=declared,
                    source=evidence.source_of("targets", redis.name, "persistence", mode))


@pytest.mark.daily
def test_last_save_age(redis: RedisClient, redis_rdb: str, evidence: EvidenceLog) -> None:
    """With RDB snapshots declared, changes do not stay unsaved for long: the last
    successful save is recent, by the server's clock, unless nothing changed since."""
    info = redis.info("persistence")
    age = redis.server_time() - float(info["rdb_last_save_time"])
    changes = int(info.get("rdb_changes_since_last_save", 0))
    evidence.note("rdb_changes_since_last_save", changes)
    if changes == 0:
        # Nothing to lose: an old snapshot of an unchanged dataset is still complete.
        evidence.note("last save age", age, unit="s")
        return
    evidence.within("redis.last_save_age_s", age, unit="s",
                    default=Threshold(warn=2 * 3600, crit=26 * 3600))
