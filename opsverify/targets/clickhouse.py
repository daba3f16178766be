"""ClickHouse targets: the ``clickhouse`` section and a client over the HTTP interface.

Read-only is enforced on the server's side: every request is a GET, which ClickHouse runs
with ``readonly`` set (writes, DDL and ``readonly`` itself are refused). ``readonly=1`` is not
sent as a URL setting: under GET, ClickHouse 18.16 refuses any change of ``readonly`` (Code
164), and a monitoring user whose profile is already read-only refuses every other setting,
so the deadline is the client's own (connect, read and the whole answer). On our side only
single SELECT/SHOW/EXISTS/DESCRIBE statements leave the client. Credentials travel in the
``X-ClickHouse-User``/``X-ClickHouse-Key`` headers, never in a URL.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from opsverify.errors import MissingPrivilege, TargetUnavailable, WriteRefused
from opsverify.targets.base import TargetSpec
from opsverify.targets.http_session import ReadOnlySession, get_within, pinned

READ_ONLY_VERBS = frozenset({"select", "show", "exists", "describe", "desc", "with"})
# UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD, IP_ADDRESS_NOT_ALLOWED, AUTHENTICATION_FAILED
AUTH_CODES = frozenset({192, 193, 194, 195, 516})
_CODE = re.compile(r"Code: (\d+)[.,] (?:e\.displayText\(\) = )?(?:DB::Exception: )?(.*)")


class ClickHouseTarget(TargetSpec):
    type: Literal["clickhouse"]
    url: str  # the HTTP interface: http://host:8123 or https://host:8443
    user: str = "default"
    password: str = ""
    verify_tls: bool | str = True  # True, False, or a CA bundle path
    # Databases that must exist, each with the tables it must hold: {gogooku3: [prices]}
    databases: dict[str, list[str]] = Field(default_factory=dict)
    # Space left on each disk of system.disks (checks/capacity/); false for a server older
    # than ClickHouse 19.15, which has no system.disks (its host's df says instead).
    system_disks: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected the HTTP interface's URL, such as http://host:8123")
        if parts.username or parts.password:
            raise ValueError("credentials do not belong in the URL; use user: and password:")
        return value

    def address(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or (8443 if parts.scheme == 'https' else 8123)}"

    def secrets(self) -> list[str]:
        return [self.password]


@dataclass(frozen=True)
class Database:
    """A database declared in a target, with the tables it must hold."""

    name: str
    tables: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    elapsed_ms: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class DiskSpace:
    """One disk of ``system.disks`` (bytes): ClickHouse leaves the disk's
    ``keep_free_space`` out of both its ``total_space`` and its ``free_space``."""

    name: str
    path: str
    free_bytes: int
    total_bytes: int
    keep_free_bytes: int

    @property
    def used_pct(self) -> float | None:
        """Used of what ClickHouse may fill; ``None`` when the disk reports no size (broken,
        read-only, or object storage)."""
        if self.total_bytes <= 0:
            return None
        used = self.total_bytes - min(self.free_bytes, self.total_bytes)
        return round(100.0 * used / self.total_bytes, 1)


@dataclass(frozen=True)
class Disks:
    """The server's version and its disks; ``disks`` is ``None`` on a server without
    ``system.disks`` (before 19.15)."""

    version: str
    disks: tuple[DiskSpace, ...] | None


class QueryRefused(TargetUnavailable):
    """The server answered a query with an error other than authentication (quota, load,
    a proxy in front of it): a check of the query itself judges this, others cannot run."""


class ClickHouseClient:
    """One ClickHouse target over HTTP GET, with connect, read and whole-answer deadlines.

    Safe to share between threads as it is: its only shared state is the requests session
    (headers set once here; urllib3's connection pool is thread-safe), and each GET keeps
    its deadline and the response a deadline cuts to itself (:func:`get_within`).
    """

    def __init__(self, name: str, spec: ClickHouseTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.base = spec.url.rstrip("/") + "/"
        self.session = pinned(ReadOnlySession(), spec.url, spec.verify_tls)
        self.session.headers["X-ClickHouse-User"] = spec.user
        if spec.password:
            self.session.headers["X-ClickHouse-Key"] = spec.password

    def ping(self) -> Answer:
        """``GET /ping``: ClickHouse answers ``Ok.`` without authentication."""
        return self._get("ping", {})

    def authenticate(self) -> None:
        """Prove the server reachable and the credentials accepted. A query refused for
        another reason (quota, load) is left for the checks to judge."""
        with contextlib.suppress(QueryRefused):
            self.query("SELECT 1")

    def query(self, sql: str) -> list[list[Any]]:
        """The rows of one read statement; a refused query raises :class:`QueryRefused`."""
        refuse_writes(sql)
        answer = self._get("", {"query": sql, "default_format": "JSONCompact"})
        if answer.status == 200:
            try:
                rows = json.loads(answer.body)["data"]
            except (ValueError, KeyError, TypeError):
                raise self._refused(f"answer to {sql!r} is not ClickHouse JSON") from None
            return list(rows)
        code, message = _error(answer)
        if answer.status in (401, 403) or code in AUTH_CODES:
            raise self._unavailable(
                f"authentication failed for user {self.spec.user!r}: {message}")
        raise self._refused(message)

    def scalar(self, sql: str) -> Any:
        rows = self.query(sql)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise ValueError(f"{self.name}: expected one value from {sql!r}, "
                             f"got {len(rows)} row(s)")
        return rows[0][0]

    def tables(self, database: str) -> set[str] | None:
        """The tables of ``database``, or ``None`` if it does not exist."""
        name = literal(database)
        if int(self.scalar(f"SELECT count() FROM system.databases WHERE name = {name}")) == 0:
            return None
        rows = self.query(f"SELECT name FROM system.tables WHERE database = {name}")
        return {str(row[0]) for row in rows}

    def disks(self) -> Disks:
        """``system.disks``: each disk's free and total space, in one round trip."""
        try:
            rows = self.query("SELECT version(), name, path, free_space, total_space, "
                              "keep_free_space FROM system.disks ORDER BY name")
        except QueryRefused as exc:
            if exc.cause.startswith("Code 60:"):  # UNKNOWN_TABLE: a server before 19.15
                return Disks(str(self.scalar("SELECT version()")), None)
            if exc.cause.startswith("Code 497:"):  # ACCESS_DENIED
                raise MissingPrivilege(self.name, "system.disks",
                                       f"GRANT SELECT ON system.disks TO {self.spec.user}"
                                       ) from None
            raise
        try:
            disks = tuple(DiskSpace(str(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5]))
                          for r in rows)
        except (IndexError, TypeError, ValueError):
            raise self._refused(f"unexpected system.disks rows {rows[:2]!r}") from None
        version = str(rows[0][0]) if rows else str(self.scalar("SELECT version()"))
        return Disks(version, disks)

    def close(self) -> None:
        self.session.close()

    def _get(self, path: str, params: dict[str, str]) -> Answer:
        fetched = get_within(self.session, self.base + path, params=params,
                             timeout_s=self.timeout_s, verify_tls=self.spec.verify_tls,
                             unavailable=self._unavailable)
        return Answer(fetched.status, fetched.body, fetched.elapsed_ms)

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, f"clickhouse {self.spec.address()}", cause)

    def _refused(self, cause: str) -> QueryRefused:
        return QueryRefused(self.name, f"clickhouse {self.spec.address()}", cause)


def refuse_writes(sql: str) -> None:
    """Client-side guard: only single read statements leave the client."""
    text = sql.strip().rstrip(";").strip()
    verb = text.split(None, 1)[0].lower() if text else ""
    if verb not in READ_ONLY_VERBS:
        raise WriteRefused(
            f"refusing to send {verb.upper() or 'an empty statement'} to ClickHouse from a "
            "non-destructive check (read-only: SELECT, SHOW, EXISTS, DESCRIBE, WITH)"
        )
    if ";" in text:
        raise WriteRefused("refusing to send several statements from a non-destructive check")


def literal(value: str) -> str:
    """A ClickHouse string literal (no query parameters before 19.x, so quote by hand)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _error(answer: Answer) -> tuple[int | None, str]:
    """ClickHouse's ``Code: N, ... DB::Exception: message`` in one line, or the HTTP status."""
    lines = [line.strip() for line in answer.text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    match = _CODE.search(first)
    if match is None:
        return None, f"HTTP {answer.status}" + (f": {first[:160]}" if first else "")
    message = re.sub(r", e\.what\(\) = .*$| \(version [^)]*\)$", "", match.group(2)).strip()
    return int(match.group(1)), f"Code {match.group(1)}: {message[:240]}"
