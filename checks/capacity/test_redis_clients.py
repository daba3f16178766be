"""Redis client connections: few sit idle longer than ``idle_client_max_age_s`` (a pool that
leaks connections holds them open until ``maxclients`` refuses the next one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.redis import Connection, RedisClient

SHOWN = 5  # idle connections listed in the evidence


@probe(key=lambda redis: "CLIENT LIST")
def redis_connections(redis: RedisClient) -> tuple[Connection, ...]:
    return tuple(redis.client_list())


@pytest.mark.daily
def test_idle_clients(redis: RedisClient, redis_connections: tuple[Connection, ...],
                      evidence: EvidenceLog) -> None:
    """Few client connections sit idle longer than ``idle_client_max_age_s`` (1 h unless
    the target says otherwise); replicas' links, subscribers, blocked clients and
    opsverify's own are not counted."""
    # Not at the top: a run without redis targets never imports the type.
    from opsverify.targets.redis import idle_clients

    max_idle = redis.spec.idle_client_max_age_s
    idle = idle_clients(redis_connections, max_idle)
    evidence.note("idle longer than", max_idle, unit="s")
    if idle:
        evidence.note("longest idle", ", ".join(f"{c.describe()} idle {c.idle_s} s"
                                                for c in idle[:SHOWN]))
    evidence.within("redis.idle_clients", len(idle), unit="clients",
                    default=Threshold(warn=5, crit=20))
    evidence.note("connections", len(redis_connections))
