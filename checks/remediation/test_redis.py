"""Redis remediation: the runbooks' fixes, each enabled per target (``remediation:``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.safety import Gate
from opsverify.evidence import EvidenceLog
from opsverify.remediation.redis import KillIdleClients, KillIdleClientsSettings
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.redis import RedisClient


@pytest.mark.destructive
def test_kill_idle_clients(
    redis_admin: RedisClient, redis_kill_idle_clients: KillIdleClientsSettings,
    remediation: Gate, evidence: EvidenceLog,
) -> None:
    """Close client connections idle past ``idle_longer_than_s`` (never replicas), then
    re-check what test_idle_clients judges."""
    # Not at the top: a run without redis targets never imports the type.
    from opsverify.targets.redis import idle_clients

    action = KillIdleClients(redis_admin, redis_kill_idle_clients)
    remediation.run(action, population=action.considered())
    remaining = idle_clients(redis_admin.client_list(), redis_admin.spec.idle_client_max_age_s)
    evidence.within("redis.idle_clients", len(remaining), unit="clients",
                    default=Threshold(warn=5, crit=20))
