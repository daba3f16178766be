"""Redis capacity: memory against ``maxmemory``, clients against ``maxclients``, and the
``evicted_keys`` / ``rejected_connections`` counters as counts since the previous run.

One ``INFO`` (its default sections: server, clients, memory, stats) holds all of it on Redis
7; older servers do not show ``maxclients`` (nor, before 3.2, ``maxmemory``) in INFO, and
only then is ``CONFIG GET`` asked. A user denied it is recorded, not raised, so that the
checks that do not need the limit still judge (the others SKIP naming the grant).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opsverify.errors import MissingPrivilege
from opsverify.history import Sample

# The check modules import this one in every run: redis and the redis type are imported
# by the reads, which only a run with redis targets makes.
if TYPE_CHECKING:
    from opsverify.targets.redis import RedisClient

# The fields the checks judge, all in INFO's default sections since Redis 2.8.
COUNTED = ("used_memory", "connected_clients", "evicted_keys", "rejected_connections",
           "uptime_in_seconds")
# History times and uptime_in_seconds are whole seconds: a server up 1 s less than the
# time since the previous reading was not restarted for that.
SLACK_S = 2.0


@dataclass(frozen=True)
class RedisCapacity:
    """What one ``INFO`` says about how full a Redis server is."""

    used_memory: int  # bytes
    maxmemory: int | None  # 0: no limit; None: not in INFO and CONFIG GET refused
    maxmemory_policy: str
    connected_clients: int
    maxclients: int | None  # None: not in INFO and CONFIG GET refused
    evicted_keys: int  # counters since the server started
    rejected_connections: int
    uptime_s: int
    refused: tuple[str, ...] = ()  # limits whose CONFIG GET this user may not run
    grant: str = ""  # what to grant for them
    read_at: datetime | None = None  # when INFO was read (by our clock): counters' "now"

    @property
    def memory_used_pct(self) -> float | None:
        """``used_memory`` as a percentage of ``maxmemory``; ``None`` without a limit."""
        if not self.maxmemory:
            return None
        return round(100.0 * self.used_memory / self.maxmemory, 2)

    @property
    def clients_used_pct(self) -> float | None:
        if not self.maxclients:
            return None
        return round(100.0 * self.connected_clients / self.maxclients, 2)

    def limit(self, target: str, name: str) -> int:
        """``maxmemory`` or ``maxclients``; a limit this user may not read raises
        :class:`MissingPrivilege` (a SKIP naming the grant)."""
        value = self.maxmemory if name == "maxmemory" else self.maxclients
        if value is None:
            raise MissingPrivilege(target, f"CONFIG GET {name} (not in this server's INFO)",
                                   self.grant)
        return value


def parse_info(info: Mapping[str, Any]) -> RedisCapacity:
    """The capacity fields of a parsed ``INFO``; a missing counter is an error naming it
    (the limits may be missing: older servers, see :func:`read_capacity`)."""
    missing = [name for name in COUNTED if name not in info]
    if missing:
        raise ValueError(f"INFO has no {', '.join(missing)}: not a Redis server this check "
                         "knows (fields of INFO since Redis 2.8)")
    return RedisCapacity(
        used_memory=_int(info, "used_memory"),
        maxmemory=_int(info, "maxmemory") if "maxmemory" in info else None,
        maxmemory_policy=str(info.get("maxmemory_policy", "")),
        connected_clients=_int(info, "connected_clients"),
        maxclients=_int(info, "maxclients") if "maxclients" in info else None,
        evicted_keys=_int(info, "evicted_keys"),
        rejected_connections=_int(info, "rejected_connections"),
        uptime_s=_int(info, "uptime_in_seconds"),
    )


def read_capacity(client: RedisClient) -> RedisCapacity:
    """One ``INFO`` (default sections); ``CONFIG GET`` only for a limit INFO lacks."""
    read_at = datetime.now(UTC)
    found = replace(parse_info(dict(client.call("INFO"))), read_at=read_at)
    missing = [name for name, value in (("maxmemory", found.maxmemory),
                                        ("maxclients", found.maxclients)) if value is None]
    if not missing:
        return found
    import redis

    values: dict[str, int | None] = {}
    refused: list[str] = []
    for name in missing:
        try:
            values[name] = _config_int(client.call("CONFIG GET", name), name)
        except redis.exceptions.NoPermissionError:
            values[name] = None
            refused.append(name)
    user = urlsplit(client.spec.url).username or "default"
    return replace(found, maxmemory=values.get("maxmemory", found.maxmemory),
                   maxclients=values.get("maxclients", found.maxclients),
                   refused=tuple(refused),
                   grant=f"ACL SETUSER {user} +config|get" if refused else "")


@dataclass(frozen=True)
class CounterDelta:
    """How much a counter grew over the window a check judges, and what that window is."""

    value: int
    window: str  # "since the previous run, 2.0 h ago", "since the server started ..."
    elapsed_s: float | None  # since the previous reading; None: there is none
    restarted: bool = False


def counter_delta(current: int, uptime_s: float, previous: Sample | None,
                  now: datetime) -> CounterDelta:
    """``current`` (read at ``now``) against the previous run's reading of the counter.

    A counter lower than before, or a server up for less time than has passed since the
    previous reading, was restarted: what it counted before is gone, and the count since
    the restart is what is left to judge (never a negative rate). With no previous run,
    the count since the server started is judged.
    """
    started = f"the server started {duration_text(uptime_s)} ago (uptime_in_seconds " \
              f"{int(uptime_s)})"
    if previous is None:
        return CounterDelta(current, f"no previous run: counted since {started}", None)
    elapsed = max(0.0, (now - previous.time).total_seconds())
    before = int(previous.value)
    if current < before:
        return CounterDelta(current, f"restarted since the previous run (counter {before} → "
                            f"{current}): counted since {started}", elapsed, restarted=True)
    if uptime_s + SLACK_S < elapsed:
        return CounterDelta(current, f"restarted since the previous run (up "
                            f"{duration_text(uptime_s)}, the previous run was "
                            f"{duration_text(elapsed)} ago): counted since {started}",
                            elapsed, restarted=True)
    return CounterDelta(current - before, f"since the previous run, "
                        f"{duration_text(elapsed)} ago (counter {before} → {current})", elapsed)


def duration_text(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.1 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _int(info: Mapping[str, Any], name: str) -> int:
    try:
        return int(info[name])
    except (TypeError, ValueError):
        raise ValueError(f"INFO {name}: {info[name]!r} is not a number") from None


def _config_int(reply: Any, name: str) -> int:
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2],
                                                               strict=True)
    values = {_text(k): _text(v) for k, v in pairs}
    if name not in values:
        raise ValueError(f"CONFIG GET {name}: the server has no such setting")
    return int(values[name])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
