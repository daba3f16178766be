"""Redis capacity: memory against ``maxmemory``, clients against ``maxclients``, keys evicted
and connections refused since the previous run, and the days until memory is full."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from fixtures.history import judge_trend
from fixtures.probes import probe
from opsverify.backup.presence import human_size
from opsverify.evidence import EvidenceLog
from opsverify.history import History
from opsverify.targets.redis_capacity import counter_delta, duration_text, read_capacity
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.redis import RedisClient
    from opsverify.targets.redis_capacity import RedisCapacity

NO_LIMIT = "no maxmemory: Redis grows until the host's memory runs out"


# One INFO per target, prefetched in the probe pool, judged by every check here.
@probe(key=lambda redis: "capacity INFO")
def redis_capacity(redis: RedisClient) -> RedisCapacity:
    return read_capacity(redis)


@pytest.mark.daily
def test_memory_used_pct(redis: RedisClient, redis_capacity: RedisCapacity,
                         evidence: EvidenceLog) -> None:
    """``used_memory`` stays below ``maxmemory`` (then Redis evicts keys or refuses
    writes); a server without a limit is noted, never failed."""
    info = redis_capacity
    maxmemory = info.limit(redis.name, "maxmemory")
    evidence.note("used_memory", human_size(info.used_memory))
    if not maxmemory:
        evidence.note("maxmemory", NO_LIMIT)
        evidence.note("redis.used_memory_bytes", info.used_memory, unit="bytes")
        return
    evidence.within("redis.memory_used_pct", info.memory_used_pct or 0.0, unit="%",
                    default=Threshold(warn=80, crit=90), capacity=100)
    evidence.note("maxmemory", human_size(maxmemory))
    evidence.note("redis.used_memory_bytes", info.used_memory, unit="bytes",
                  capacity=maxmemory)
    evidence.note("maxmemory-policy", info.maxmemory_policy + (
        ": writes are refused once full" if info.maxmemory_policy == "noeviction" else
        ": keys are evicted once full"))


def _judge_counter(evidence: EvidenceLog, history: History, info: RedisCapacity, *,
                   counter: str, current: int, threshold: Threshold, unit: str) -> None:
    previous = history.previous(evidence.target, f"redis.{counter}_total")
    delta = counter_delta(current, info.uptime_s, previous, info.read_at or datetime.now(UTC))
    # The raw counter goes to the history: the next run's delta starts from it.
    evidence.note(f"redis.{counter}_total", current, unit=unit)
    evidence.note("counted", delta.window)
    if previous is not None and delta.elapsed_s is not None:
        evidence.note("previous reading", f"{previous.time:%Y-%m-%d %H:%M:%S} UTC "
                      f"({duration_text(delta.elapsed_s)} ago)")
    evidence.within(f"redis.{counter}", delta.value, unit=unit, default=threshold)


@pytest.mark.daily
def test_evicted_keys(redis_capacity: RedisCapacity, capacity_history: History,
                      evidence: EvidenceLog) -> None:
    """Few keys were evicted to make room since the previous run (any eviction warns: the
    working set does not fit; more than 1000 fails)."""
    _judge_counter(evidence, capacity_history, redis_capacity, counter="evicted_keys",
                   current=redis_capacity.evicted_keys, unit="keys",
                   threshold=Threshold(warn=0, crit=1000))
    evidence.note("maxmemory-policy", redis_capacity.maxmemory_policy or "?")


@pytest.mark.daily
def test_rejected_connections(redis_capacity: RedisCapacity, capacity_history: History,
                              evidence: EvidenceLog) -> None:
    """Few connections were refused for ``maxclients`` since the previous run (any warns;
    more than 100 fails)."""
    _judge_counter(evidence, capacity_history, redis_capacity,
                   counter="rejected_connections", current=redis_capacity.rejected_connections,
                   unit="connections", threshold=Threshold(warn=0, crit=100))


@pytest.mark.daily
def test_clients_used_pct(redis: RedisClient, redis_capacity: RedisCapacity,
                          evidence: EvidenceLog) -> None:
    """``connected_clients`` stays below ``maxclients`` (past it, Redis refuses new
    connections)."""
    maxclients = redis_capacity.limit(redis.name, "maxclients")
    evidence.within("redis.clients_used_pct", redis_capacity.clients_used_pct or 0.0,
                    unit="%", default=Threshold(warn=80, crit=90), capacity=100)
    evidence.note("connected_clients", redis_capacity.connected_clients)
    evidence.note("maxclients", maxclients)


@pytest.mark.daily
def test_memory_trend(redis: RedisClient, redis_capacity: RedisCapacity,
                      capacity_history: History, evidence: EvidenceLog) -> None:
    """Days until ``used_memory`` reaches ``maxmemory``, from the history (Theil-Sen)."""
    maxmemory = redis_capacity.limit(redis.name, "maxmemory")
    if not maxmemory:
        evidence.note("maxmemory", NO_LIMIT)
        pytest.skip(f"{NO_LIMIT}: no limit to count the days to")
    judge_trend(evidence, capacity_history, "redis.memory_used_pct",
                redis_capacity.memory_used_pct or 0.0, 100,
                days_left_id="redis.memory.days_left", unit="%")
