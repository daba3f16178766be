"""Redis health: the runbook's ``redis-cli ping``, with authentication."""

import pytest

from opsverify.evidence import EvidenceLog
from opsverify.targets.redis import RedisClient


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_ping(redis: RedisClient, evidence: EvidenceLog) -> None:
    """The server answers PING after authenticating."""
    evidence.expect("PING", redis.ping(), equals=True)
    server = redis.info("server")
    evidence.note("redis_version", server.get("redis_version"))
    evidence.note("uptime", server.get("uptime_in_seconds"), unit="s")
