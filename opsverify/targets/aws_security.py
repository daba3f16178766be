"""What the security checks of an ``aws`` target judge: the results of the reads
:class:`~opsverify.targets.aws.AwsClient` makes for them (metadata only, never a secret's
value) and the pure judgements behind them (world-open ingress, secret-looking values).

Split from :mod:`opsverify.targets.aws`, which makes the reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from opsverify.secrets import MIN_SECRET_LEN

# -- security: results and the pure judgements behind them ---------------------------------
# Ports never to be open to the whole internet (Prowler's ec2_securitygroup_allow_ingress_
# from_internet_to_tcp_port_* set): remote administration and databases.
RISKY_PORTS = {22: "SSH", 3389: "RDP", 5432: "PostgreSQL", 3306: "MySQL", 6379: "Redis",
               27017: "MongoDB", 9200: "Elasticsearch"}
WORLD = ("0.0.0.0/0", "::/0")
SECURITY_ITEMS_MAX = 1000  # security groups, secrets, log groups read (one page call each)
PER_ITEM_MAX = 100  # ECR repositories, task definition families (calls per item)
IMAGE_PAGES_MAX = 10  # pages of DescribeImages searched for a repository's newest image
HIGH_SEVERITIES = ("CRITICAL", "HIGH")
# Variable names that say "this is a credential" (AWS Config's ecs-no-environment-secrets
# idea), and values that are one whatever their name.
SECRET_NAME = re.compile(r"PASSW(OR)?D|PASSPHRASE|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|"
                         r"PRIVATE_?KEY|CREDENTIAL|AUTH_?KEY|SIGNING_?KEY|DSN", re.IGNORECASE)
NOT_A_VALUE_NAME = re.compile(r"_(ARN|NAME|FILE|PATH|ID|TTL|LENGTH|EXPIRY|ENABLED)$",
                              re.IGNORECASE)
SECRET_VALUE = re.compile(
    r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"  # an AWS access key id
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@"  # a URL or DSN with a password
    r"|\b(gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,})")
HARMLESS = re.compile(r"^(true|false|yes|no|on|off|none|null|\d+(\.\d+)?)$", re.IGNORECASE)


def looks_secret(name: str, value: str) -> bool:
    """Whether a plain environment variable holds what looks like a credential: a value
    shaped like one, or a credential's name with a real value (not a flag, a number, or a
    reference to where the secret lives)."""
    if SECRET_VALUE.search(value):
        return True
    return (bool(SECRET_NAME.search(name)) and not NOT_A_VALUE_NAME.search(name)
            and len(value) >= MIN_SECRET_LEN and not HARMLESS.match(value.strip())
            and not value.startswith(("arn:aws:", "${", "{{")))


def world_open(permission: dict[str, Any]) -> list[tuple[str, str]]:
    """``(rule, what it exposes)`` for each world source (0.0.0.0/0, ::/0) of an ingress
    permission that opens all ports or a port of :data:`RISKY_PORTS`."""
    sources = [r.get("CidrIp") for r in permission.get("IpRanges", [])]
    sources += [r.get("CidrIpv6") for r in permission.get("Ipv6Ranges", [])]
    world = [s for s in sources if s in WORLD]
    if not world:
        return []
    protocol = str(permission.get("IpProtocol", ""))
    protocol = {"6": "tcp", "17": "udp", "all": "-1"}.get(protocol, protocol)
    low, high = int(permission.get("FromPort", -1)), int(permission.get("ToPort", -1))
    if protocol == "-1":
        rule, exposes = "all traffic", "all ports"
    elif protocol in ("tcp", "udp") and (low, high) == (0, 65535):
        rule, exposes = f"{protocol} 0-65535", "all ports"
    elif protocol == "tcp":
        hit = [f"{RISKY_PORTS[p]} ({p})" for p in sorted(RISKY_PORTS) if low <= p <= high]
        if not hit:
            return []
        rule = f"tcp {low}" if low == high else f"tcp {low}-{high}"
        exposes = ", ".join(hit)
    else:
        return []
    return [(f"{rule} from {source}", exposes) for source in world]


def epoch(value: Any) -> float | None:
    """A timestamp as botocore parses it (datetime) or as a JSON number, in epoch seconds."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)


@dataclass(frozen=True)
class OpenIngress:
    group: str  # sg-0123 (name)
    rule: str  # "tcp 5432 from 0.0.0.0/0"
    exposes: str  # "PostgreSQL (5432)", "all ports"

    def describe(self) -> str:
        return f"{self.group}: {self.rule} exposes {self.exposes}"


@dataclass(frozen=True)
class SecurityGroups:
    count: int
    open: tuple[OpenIngress, ...]
    capped: bool = False


@dataclass(frozen=True)
class SecretRotation:
    """What Secrets Manager says of a secret's rotation (no value is ever read)."""

    name: str
    rotation_enabled: bool
    last_rotated: float | None  # epoch seconds; None: never rotated
    created: float | None
    rotate_after_days: int | None = None

    def age_days(self, now: float) -> float | None:
        """Days the current value has been in place: since the last rotation, or since the
        secret was created when it never was rotated."""
        since = self.last_rotated if self.last_rotated is not None else self.created
        return None if since is None else max(0.0, (now - since) / 86400)


@dataclass(frozen=True)
class LogRetention:
    group: str
    retention_days: int | None  # None: events never expire


@dataclass(frozen=True)
class EcrImageScan:
    image: str  # tag, or digest when untagged
    pushed_at: float
    status: str  # COMPLETE, FAILED, IN_PROGRESS, ...; NOT_SCANNED when there is no scan
    severities: tuple[tuple[str, int], ...] = ()  # findingSeverityCounts

    def high_or_worse(self) -> dict[str, int]:
        return {s: n for s, n in self.severities if s in HIGH_SEVERITIES and n}


@dataclass(frozen=True)
class EcrRepository:
    name: str
    scan_on_push: bool
    latest: EcrImageScan | None  # None: the repository holds no image


@dataclass(frozen=True)
class ContainerSecurity:
    name: str
    privileged: bool
    secret_env: tuple[str, ...] = ()  # names only: their values are registered secrets


@dataclass(frozen=True)
class TaskDefinitionSecurity:
    task_definition: str  # family:revision
    containers: tuple[ContainerSecurity, ...]
