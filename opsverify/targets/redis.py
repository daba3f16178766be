"""Redis targets: the ``redis`` section and a client that only sends read commands (and,
inside a destructive check, ``CLIENT KILL``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import redis
from pydantic import Field, field_validator, model_validator
from redis.backoff import NoBackoff
from redis.retry import Retry

from opsverify.errors import MissingPrivilege, TargetUnavailable, WriteRefused
from opsverify.remediation.redis import RedisRemediation
from opsverify.targets.base import DeadlinePassed, Section, TargetSpec, run_within

READ_COMMANDS = frozenset({
    "PING", "INFO", "DBSIZE", "LASTSAVE", "ROLE", "TIME", "GET", "EXISTS", "TTL", "PTTL",
    "TYPE", "SCAN", "STRLEN", "LLEN", "SCARD", "HLEN", "ZCARD", "MEMORY", "SLOWLOG", "CONFIG",
    "ACL", "CLIENT",
})
# Commands whose subcommands differ in kind: only these subcommands are reads
# (CONFIG SET, SLOWLOG RESET and MEMORY PURGE change the server).
READ_SUBCOMMANDS: dict[str, frozenset[str]] = {
    "CONFIG": frozenset({"GET"}),
    "SLOWLOG": frozenset({"GET", "LEN"}),
    "MEMORY": frozenset({"USAGE", "STATS", "DOCTOR"}),
    # ACL LIST shows password hashes, never passwords; SETUSER, DELUSER, LOAD, SAVE write.
    "ACL": frozenset({"LIST", "WHOAMI"}),
    # CLIENT LIST shows connections (address, name, idle time), never credentials; KILL,
    # PAUSE, SETNAME… change them.
    "CLIENT": frozenset({"LIST"}),
}
# What a write-capable client (kill_idle_clients) sends besides reads: CLIENT KILL only.
REMEDIATION_SUBCOMMANDS = {**READ_SUBCOMMANDS, "CLIENT": frozenset({"LIST", "KILL"})}
# CLIENT LIST flags of connections that are never idle clients: a replica's link (S), a
# replica's link to its master (M), a subscriber (P) or a blocked client (b), which wait by
# design.
NOT_IDLE_FLAGS = frozenset("SMPb")
APPLICATION_NAME = "opsverify"
# CONFIG GET of these would hand us a secret's value: refused even though CONFIG GET reads.
SECRET_SETTINGS = frozenset({"REQUIREPASS", "MASTERAUTH", "MASTERUSER", "TLS-KEY-FILE-PASS",
                             "TLS-CLIENT-KEY-FILE-PASS"})


class Persistence(Section):
    """Which persistence the server must have on: ``{rdb: true, aof: false}``."""

    rdb: bool | None = None  # RDB snapshots: CONFIG GET save is not empty
    aof: bool | None = None  # append-only file: CONFIG GET appendonly is yes

    @model_validator(mode="after")
    def _something(self) -> Persistence:
        if self.rdb is None and self.aof is None:
            raise ValueError("give rdb, aof or both")
        return self

    def declared(self) -> list[tuple[str, bool]]:
        return [(mode, value) for mode, value in (("rdb", self.rdb), ("aof", self.aof))
                if value is not None]


class RedisSecurity(Section):
    """``security:`` of a redis target: every check of checks/security/test_redis.py is on
    unless switched off here by its name."""

    auth_required: bool = True  # a PING without credentials is refused (NOAUTH)
    acl_passwords: bool = True  # no enabled ACL user, the default one above all, is nopass
    protected_mode: bool = True


@dataclass(frozen=True)
class AclUser:
    """A user as ``ACL LIST`` describes it, without its password hashes."""

    name: str
    enabled: bool  # on / off
    nopass: bool  # any password (or none) authenticates as this user
    passwords: int  # how many password hashes it has


class RedisTarget(TargetSpec):
    type: Literal["redis"]
    url: str  # redis://[:password@]host:port/db, rediss:// for TLS
    role: Literal["master", "replica"] | None = None
    persistence: Persistence | None = None
    # A client connection idle longer than this counts as idle (test_idle_clients).
    idle_client_max_age_s: float = Field(default=3600, gt=0)
    security: RedisSecurity = Field(default_factory=RedisSecurity)
    # Fixes checks/remediation/ may apply here (each also needs -m destructive and
    # --allow-destructive naming the environment).
    remediation: RedisRemediation = Field(default_factory=RedisRemediation)

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError("expected a redis:// or rediss:// URL")
        return value

    def address(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 6379}"

    def secrets(self) -> list[str]:
        return [self.url, self.password() or ""]

    def password(self) -> str | None:
        return urlsplit(self.url).password


class ReadOnlyRedis(redis.Redis):
    """redis-py, with every command outside :data:`READ_COMMANDS` refused before sending."""

    subcommands: dict[str, frozenset[str]] = READ_SUBCOMMANDS

    def execute_command(self, *args: Any, **options: Any) -> Any:
        # redis-py sends some commands as one string ("CONFIG GET"), others as two words.
        words = [str(a).upper() for a in args[:2]]
        words = (words[0].split() if words else []) + words[1:]
        name = words[0] if words else ""
        if name not in READ_COMMANDS:
            raise WriteRefused(f"refusing Redis {name} from a non-destructive check")
        allowed = self.subcommands.get(name)
        if allowed is not None and (len(words) < 2 or words[1] not in allowed):
            sub = words[1] if len(words) > 1 else ""
            raise WriteRefused(f"refusing Redis {name} {sub} from a non-destructive check "
                               f"(read-only: {', '.join(f'{name} {s}' for s in sorted(allowed))})")
        if name == "CONFIG" and any(_secret_setting(str(a)) for a in args[1:]):
            raise WriteRefused("refusing CONFIG GET of a secret's value (requirepass, "
                               "masterauth) or of a pattern that could match one")
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        # A pipeline sends its commands without execute_command: it would bypass the guard.
        raise WriteRefused("refusing a Redis pipeline from a non-destructive check")

    def pubsub(self, **kwargs: Any) -> Any:
        raise WriteRefused("refusing Redis PUBSUB from a non-destructive check")


class KillCapableRedis(ReadOnlyRedis):
    """The write-capable client's redis-py: reads, and ``CLIENT KILL`` (remediation only)."""

    subcommands = REMEDIATION_SUBCOMMANDS


@dataclass(frozen=True)
class Connection:
    """One line of ``CLIENT LIST``: what identifies a connection (its id is never reused
    while the server runs) and what it is doing."""

    id: int
    addr: str
    name: str
    age_s: int  # connected this long
    idle_s: int  # since its last command
    flags: str  # N: normal; S: replica; M: master; P: subscriber; b: blocked…
    cmd: str  # its last command
    user: str

    def describe(self) -> str:
        """``id 12 127.0.0.1:50312 'forecast-worker'``."""
        return f"id {self.id} {self.addr} {self.name!r}"


def parse_client_list(text: str) -> list[Connection]:
    """``CLIENT LIST``'s lines of ``key=value`` fields."""
    found = []
    for line in text.splitlines():
        fields = dict(word.partition("=")[::2] for word in line.split())
        if "id" not in fields:
            continue
        found.append(Connection(
            id=int(fields["id"]), addr=fields.get("addr", ""), name=fields.get("name", ""),
            age_s=int(fields.get("age", 0)), idle_s=int(fields.get("idle", 0)),
            flags=fields.get("flags", ""), cmd=fields.get("cmd", ""),
            user=fields.get("user", "")))
    return found


def idle_clients(connections: list[Connection] | tuple[Connection, ...],
                 idle_longer_than_s: float) -> list[Connection]:
    """Client connections idle longer than ``idle_longer_than_s``, the longest idle first:
    never a replica's or master's link, a subscriber or a blocked client (they wait by
    design), never opsverify's own."""
    return sorted((c for c in connections
                   if c.idle_s > idle_longer_than_s and not NOT_IDLE_FLAGS & set(c.flags)
                   and not c.name.startswith(APPLICATION_NAME)),
                  key=lambda c: (-c.idle_s, c.id))


@dataclass(frozen=True)
class Replication:
    """INFO replication, as a role check reads it."""

    role: str  # master | replica
    master: str  # host:port of its master, for a replica
    link_status: str  # up | down, for a replica
    connected_replicas: int


class RedisClient:
    """One Redis target with connect and read deadlines and no retries; safe to share
    between threads (one command at a time, each with its own deadline)."""

    def __init__(self, name: str, spec: RedisTarget, timeout_s: float, *,
                 writable: bool = False) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        # writable: may CLIENT KILL (remediation only); every other write is still refused.
        self.writable = writable
        redis_class = KillCapableRedis if writable else ReadOnlyRedis
        self.redis = redis_class.from_url(
            spec.url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            client_name=APPLICATION_NAME + ("-remediation" if writable else ""),
            protocol=2,
        )
        # redis-py's pool is thread-safe, but a call past its deadline disconnects the whole
        # pool to end its abandoned read: that must not cut a concurrent call's connection
        # (it would fail with a cause that is not its own). Redis runs one command at a
        # time anyway, so serialising costs a round trip, not throughput.
        self._lock = threading.Lock()

    def call(self, command: str, *args: Any) -> Any:
        """Send one read command; failures to reach the server raise TargetUnavailable.
        The socket timeout bounds each read; the whole answer has the deadline too, so a
        server dripping its reply cannot hold the run (some grace: the socket's message wins
        a tie)."""
        with self._lock:
            return self._call(command, *args)

    def _call(self, command: str, *args: Any) -> Any:
        try:
            return run_within(
                lambda: self.redis.execute_command(command, *args),  # type: ignore[no-untyped-call]
                self.timeout_s + 0.5, name="opsverify-redis-call")
        except DeadlinePassed:
            self.redis.connection_pool.disconnect()  # ends the abandoned read now
            raise self._unavailable(f"no complete answer within {self.timeout_s:g} s") from None
        except redis.exceptions.AuthenticationError:
            raise self._unavailable("authentication failed (check the password)") from None
        except redis.exceptions.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise self._unavailable("authentication failed (check the password)") from None
            raise
        except redis.exceptions.TimeoutError:
            raise self._unavailable(f"no answer within {self.timeout_s:g} s") from None
        except redis.exceptions.ConnectionError as exc:
            raise self._unavailable(_cause(exc)) from None

    def ping(self) -> bool:
        return self.ping_reply() == "PONG"

    def ping_reply(self) -> str:
        """``PONG``, or the error the server answered instead: a master whose snapshots
        fail answers ``MISCONF ...`` even to PING (stop-writes-on-bgsave-error)."""
        try:
            reply = self.call("PING")
        except redis.exceptions.ResponseError as exc:
            return str(exc).split(". ")[0]
        return "PONG" if reply is True else _text(reply)

    def reachable(self) -> None:
        """Prove the server answers and accepts our credentials; an error reply to PING
        is an answer (its meaning is for the checks to judge)."""
        self.ping_reply()

    def info(self, section: str) -> dict[str, Any]:
        result = self.call("INFO", section)
        return dict(result)

    def replication(self) -> Replication:
        info = self.info("replication")
        role = str(info.get("role", "unknown"))
        master = f"{info['master_host']}:{info['master_port']}" if "master_host" in info else ""
        return Replication(
            "replica" if role == "slave" else role, master,
            str(info.get("master_link_status", "")), int(info.get("connected_slaves", 0)),
        )

    def config_get(self, parameter: str) -> str:
        """One configuration value. A server that refuses CONFIG (ACL, renamed command)
        cannot be evaluated: that raises :class:`TargetUnavailable` saying what to grant."""
        try:
            result = self.call("CONFIG GET", parameter)
        except redis.exceptions.ResponseError as exc:
            raise self._unavailable(
                f"CONFIG GET {parameter} refused ({str(exc).split(chr(10))[0][:80]}); "
                "allow +config|get for the monitoring user") from None
        return self._config_value(parameter, result)

    def _config_value(self, parameter: str, result: Any) -> str:
        pairs = result.items() if isinstance(result, dict) else zip(
            result[::2], result[1::2], strict=True)
        values = {_text(k): _text(v) for k, v in pairs}
        if parameter not in values:
            raise self._unavailable(f"CONFIG GET {parameter}: the server has no such setting")
        return values[parameter]

    # -- security (checks/security/test_redis.py) -----------------------------------------
    def unauthenticated_ping(self) -> str:
        """PING on a connection of its own that sends no credentials (nor any command
        before PING): ``PONG`` when anyone may talk to the server, else the refusal
        (``refused: Authentication required``: NOAUTH; DENIED in protected mode)."""
        parts = urlsplit(self.spec.url)
        host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
        url = urlunsplit((parts.scheme, f"{host}:{parts.port or 6379}", "/0", "", ""))
        anonymous = ReadOnlyRedis.from_url(
            url, socket_connect_timeout=self.timeout_s, socket_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0), protocol=2, driver_info=None)

        def ping() -> str:
            try:
                reply = anonymous.execute_command("PING")  # type: ignore[no-untyped-call]
            except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as exc:
                # redis-py drops the error code (NOAUTH, DENIED) from the message.
                return "refused: " + str(exc).split(". ")[0].rstrip(".")
            return "PONG" if reply is True else _text(reply)

        try:
            return run_within(ping, self.timeout_s + 0.5, name="opsverify-redis-anonymous")
        except DeadlinePassed:
            raise self._unavailable(f"no complete answer within {self.timeout_s:g} s "
                                    "(unauthenticated PING)") from None
        except redis.exceptions.TimeoutError:
            raise self._unavailable(f"no answer within {self.timeout_s:g} s") from None
        except redis.exceptions.ConnectionError as exc:
            raise self._unavailable(_cause(exc)) from None
        finally:
            anonymous.connection_pool.disconnect()

    def acl_users(self) -> list[AclUser] | None:
        """Every ACL user's state (``ACL LIST``), without hashes; ``None`` before Redis 6,
        which has no ACL. A user denied ACL LIST raises :class:`MissingPrivilege`."""
        try:
            lines = self.call("ACL LIST")
        except redis.exceptions.NoPermissionError:
            raise MissingPrivilege(self.name, "ACL LIST",
                                   f"ACL SETUSER {self._user()} +acl|list") from None
        except redis.exceptions.ResponseError as exc:
            if "unknown command" in str(exc).lower():
                return None
            raise
        users = []
        for line in lines:
            words = _text(line).split()
            if len(words) < 2 or words[0] != "user":
                continue
            flags = words[2:]
            users.append(AclUser(words[1], "on" in flags, "nopass" in flags,
                                 sum(1 for w in flags if w.startswith("#"))))
        return users

    def protected_mode(self) -> str:
        """``CONFIG GET protected-mode``; a user denied it raises :class:`MissingPrivilege`."""
        try:
            result = self.call("CONFIG GET", "protected-mode")
        except redis.exceptions.NoPermissionError:
            raise MissingPrivilege(self.name, "CONFIG GET protected-mode",
                                   f"ACL SETUSER {self._user()} +config|get") from None
        return self._config_value("protected-mode", result)

    def _user(self) -> str:
        return urlsplit(self.spec.url).username or "default"

    def client_list(self) -> list[Connection]:
        """Every connection to the server (``CLIENT LIST``); a user denied it raises
        :class:`MissingPrivilege`."""
        try:
            reply = self.call("CLIENT", "LIST")
        except redis.exceptions.NoPermissionError:
            raise MissingPrivilege(self.name, "CLIENT LIST",
                                   f"ACL SETUSER {self._user()} +client|list") from None
        return parse_client_list(_text(reply))

    # -- writing (remediation only) ------------------------------------------------------
    def kill_client(self, client_id: int) -> int:
        """``CLIENT KILL ID <id>``: how many connections it closed (0 or 1)."""
        if not self.writable:
            raise WriteRefused(f"{self.name}: CLIENT KILL from a read-only client")
        return int(self.call("CLIENT", "KILL", "ID", str(client_id)))

    def server_time(self) -> float:
        """The server's clock (TIME), so ages do not depend on ours."""
        seconds, micros = self.call("TIME")
        return float(seconds) + float(micros) / 1e6

    def close(self) -> None:
        self.redis.close()

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, f"redis {self.spec.address()}", cause)


def _secret_setting(word: str) -> bool:
    return word.upper() in SECRET_SETTINGS or any(c in word for c in "*?[")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cause(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "111" in text:
        return "connection refused"
    if "Timeout" in text or "timed out" in text:
        return "connect timed out"
    return text.split(".")[0] or type(exc).__name__
