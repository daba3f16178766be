"""PostgreSQL security, after dev-sec's postgres-baseline: connections encrypted, passwords
hashed with SCRAM, connections logged, no pg_hba.conf line that lets anyone in without a
password or sends one in clear, few superusers, no weakly stored password.

Every check applies to every postgres target; ``security: {ssl: false}`` (by check name)
switches one off. What the monitoring role may not read is a SKIP naming the grant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.postgres import HbaRule, PostgresClient, RolePassword

SETTINGS = ("ssl", "password_encryption", "log_connections")
# trust admits anyone who can reach the line; password sends the password in clear text.
UNSAFE_METHODS = frozenset({"trust", "password"})
WEAK_PASSWORDS = frozenset({"md5", "empty", "plain text"})

# Every read here is a fixed query, prefetched in the probe pool.


@dataclass(frozen=True)
class SecuritySettings:
    """The server settings these checks judge, and how our own session is connected."""

    values: tuple[tuple[str, str], ...]
    session_ssl: bool
    session_protocol: str

    def get(self, name: str) -> str:
        return dict(self.values)[name]


@probe
def security_postgres_settings(postgres: PostgresClient) -> SecuritySettings:
    values = postgres.settings(SETTINGS)
    encrypted, protocol = postgres.session_ssl()
    return SecuritySettings(tuple(sorted(values.items())), encrypted, protocol)


@probe
def security_postgres_hba_rules(postgres: PostgresClient) -> tuple[HbaRule, ...]:
    return tuple(postgres.hba_rules())


@probe
def security_postgres_superusers(postgres: PostgresClient) -> tuple[str, ...]:
    return tuple(postgres.superusers())


@probe
def security_postgres_password_kinds(postgres: PostgresClient) -> tuple[RolePassword, ...]:
    return tuple(postgres.password_kinds())


@pytest.mark.monthly
@pytest.mark.security_check("ssl")
def test_ssl(security_postgres_settings: SecuritySettings, evidence: EvidenceLog) -> None:
    """The server accepts TLS connections (``ssl = on``)."""
    settings = security_postgres_settings
    evidence.expect("ssl", settings.get("ssl"), equals="on")
    evidence.note("this session", f"encrypted, {settings.session_protocol}"
                  if settings.session_ssl else "not encrypted")


@pytest.mark.monthly
@pytest.mark.security_check("password_encryption")
def test_password_encryption(security_postgres_settings: SecuritySettings,
                             evidence: EvidenceLog) -> None:
    """New passwords are stored as SCRAM-SHA-256, not MD5."""
    evidence.expect("password_encryption", security_postgres_settings.get("password_encryption"),
                    equals="scram-sha-256")


@pytest.mark.monthly
@pytest.mark.security_check("log_connections")
def test_log_connections(security_postgres_settings: SecuritySettings,
                         evidence: EvidenceLog) -> None:
    """Connections are logged, so a security review can see who logged in: WARN when not
    (``postgres.log_connections_off: {crit: 0}`` makes it a FAIL)."""
    value = security_postgres_settings.get("log_connections")
    evidence.note("log_connections", value)
    evidence.within("postgres.log_connections_off", 0 if value == "on" else 1,
                    default=Threshold(warn=0))


@pytest.mark.monthly  # a configuration review, like the others here (only the cheap checks
# of unauthenticated access, certificates and protocols are daily)
@pytest.mark.security_check("hba_auth")
def test_hba_auth(security_postgres_hba_rules: tuple[HbaRule, ...],
                  evidence: EvidenceLog) -> None:
    """No pg_hba.conf line admits a connection without a password (``trust``) or takes
    one in clear text (``password``)."""
    rules = security_postgres_hba_rules
    evidence.note("pg_hba.conf lines", len(rules))
    for rule in rules:
        if rule.error:
            evidence.note(f"line {rule.line} not loadable", rule.error)
    unsafe = [rule.describe() for rule in rules if rule.method in UNSAFE_METHODS]
    evidence.expect("trust or password lines", "; ".join(unsafe) or "none", equals="none")


@pytest.mark.monthly
@pytest.mark.security_check("superusers")
def test_superusers(postgres: PostgresClient, security_postgres_superusers: tuple[str, ...],
                    evidence: EvidenceLog) -> None:
    """No more superusers than ``security.max_superusers`` (default 1, the bootstrap one)."""
    names = security_postgres_superusers
    evidence.note("superusers", ", ".join(names) or "none")
    evidence.expect("superuser count", len(names), at_most=postgres.spec.security.max_superusers,
                    unit="roles", source=evidence.source_of(
                        "targets", postgres.name, "security", "max_superusers"))


@pytest.mark.monthly
@pytest.mark.security_check("password_hashes")
def test_password_hashes(security_postgres_password_kinds: tuple[RolePassword, ...],
                         evidence: EvidenceLog) -> None:
    """No login role's password is stored as MD5, empty or in plain text. A role with no
    password at all (NULL) is noted, not failed: password login always fails for it, and
    what lets it in without one is a trust line, which test_hba_auth catches."""
    kinds = security_postgres_password_kinds
    without = [p.role for p in kinds if p.kind == "none"]
    if without:
        evidence.note("login roles without a password", ", ".join(without))
    evidence.note("login roles with a SCRAM password",
                  sum(1 for p in kinds if p.kind == "scram-sha-256"))
    weak = [f"{p.role} ({p.kind})" for p in kinds if p.kind in WEAK_PASSWORDS]
    evidence.expect("roles with an md5, empty or plain-text password",
                    ", ".join(weak) or "none", equals="none")
