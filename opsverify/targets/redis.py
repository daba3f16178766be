"""Redis targets: the ``redis`` section and a client that only sends read commands."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import redis
from pydantic import field_validator
from redis.backoff import NoBackoff
from redis.retry import Retry

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.targets.base import TargetSpec

READ_COMMANDS = frozenset({
    "PING", "INFO", "DBSIZE", "LASTSAVE", "ROLE", "TIME", "GET", "EXISTS", "TTL", "PTTL",
    "TYPE", "SCAN", "STRLEN", "LLEN", "SCARD", "HLEN", "ZCARD", "MEMORY", "SLOWLOG",
})


class RedisTarget(TargetSpec):
    type: Literal["redis"]
    url: str  # redis://[:password@]host:port/db, rediss:// for TLS

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

    def execute_command(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper() if args else ""
        if name not in READ_COMMANDS:
            raise WriteRefused(f"refusing Redis {name} from a non-destructive check")
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


class RedisClient:
    """One Redis target with connect and read deadlines and no retries."""

    def __init__(self, name: str, spec: RedisTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.redis = ReadOnlyRedis.from_url(
            spec.url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            client_name="opsverify",
            protocol=2,
        )

    def call(self, command: str, *args: Any) -> Any:
        """Send one read command; failures to reach the server raise TargetUnavailable."""
        try:
            return self.redis.execute_command(command, *args)  # type: ignore[no-untyped-call]
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
        return bool(self.call("PING"))

    def info(self, section: str) -> dict[str, Any]:
        result = self.call("INFO", section)
        return dict(result)

    def close(self) -> None:
        self.redis.close()

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, f"redis {self.spec.address()}", cause)


def _cause(exc: Exception) -> str:
    text = str(exc)
    if "Connection refused" in text or "111" in text:
        return "connection refused"
    if "Timeout" in text or "timed out" in text:
        return "connect timed out"
    return text.split(".")[0] or type(exc).__name__
