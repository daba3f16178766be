"""Redis security, after the Redis security docs: nobody talks to the server without
authenticating, no ACL user takes any password, protected mode stays on.

Read-only, and no secret is read: the unauthenticated PING goes over a connection of its own
that sends no credentials, and passwords are judged from ``ACL LIST``, which shows only
hashes (never ``CONFIG GET requirepass``: the client refuses it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog

if TYPE_CHECKING:
    from opsverify.targets.redis import AclUser, RedisClient

# Every read here is a fixed command, prefetched in the probe pool.


@probe
def security_redis_anonymous_ping(redis: RedisClient) -> str:
    return redis.unauthenticated_ping()


@probe
def security_redis_acl_users(redis: RedisClient) -> tuple[AclUser, ...] | None:
    users = redis.acl_users()
    return None if users is None else tuple(users)


@probe
def security_redis_protected_mode(redis: RedisClient) -> str:
    return redis.protected_mode()


@pytest.mark.daily
@pytest.mark.deploy_gate
@pytest.mark.security_check("auth_required")
def test_auth_required(security_redis_anonymous_ping: str, evidence: EvidenceLog) -> None:
    """A client without credentials is refused (NOAUTH): a PING without AUTH gets no PONG."""
    reply = security_redis_anonymous_ping
    evidence.note("PING without credentials", reply)
    evidence.expect("unauthenticated PING refused", reply != "PONG", equals=True)


@pytest.mark.daily
@pytest.mark.deploy_gate
@pytest.mark.security_check("acl_passwords")
def test_acl_passwords(security_redis_acl_users: tuple[AclUser, ...] | None,
                       evidence: EvidenceLog) -> None:
    """No enabled ACL user is ``nopass`` (any password logs in as it), the default user,
    which every new connection starts as, above all."""
    users = security_redis_acl_users
    if users is None:
        pytest.skip("Redis before 6 has no ACL: test_auth_required covers requirepass")
    default = next((u for u in users if u.name == "default"), None)
    if default is not None:
        evidence.note("default user", ("on" if default.enabled else "off")
                      + (", nopass" if default.nopass else f", {default.passwords} password(s)"))
    open_users = [u.name for u in users if u.enabled and u.nopass]
    evidence.expect("enabled users with nopass", ", ".join(open_users) or "none", equals="none")


@pytest.mark.monthly
@pytest.mark.security_check("protected_mode")
def test_protected_mode(security_redis_protected_mode: str, evidence: EvidenceLog) -> None:
    """Protected mode is on: a server left without a password and bound to every
    interface refuses clients from other hosts."""
    evidence.expect("protected-mode", security_redis_protected_mode, equals="yes")
