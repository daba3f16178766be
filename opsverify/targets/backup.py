"""Backup targets: the ``backup`` section and the client that reads one backup location.

``location`` is ``file:///path``, ``ssh://user@host:port/path`` (through the host target's
client: testinfra's SSH backend, host key verified) or ``s3://bucket/prefix`` (boto3, through
the ``s3`` target's read-only client); the readers are in :mod:`opsverify.backup.locations`.
A reader lists the backups in that one directory or prefix, reads a small sidecar file, and
copies one backup into a local temporary directory under a size cap and a deadline: checks
that read a backup's content (checksums, structure, restore drills) never read it in place
on the target's disk.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator

from opsverify.remediation.backup import BackupRemediation
from opsverify.targets.base import Section, TargetSpec

Format = Literal[
    "pg_dump_custom", "pg_dump_custom_gz", "sqlite", "sqlite_gz", "tar", "tar_gz", "gzip",
]
PG_FORMATS = frozenset({"pg_dump_custom", "pg_dump_custom_gz"})
SQLITE_FORMATS = frozenset({"sqlite", "sqlite_gz"})
GZIP_FORMATS = frozenset({"pg_dump_custom_gz", "sqlite_gz", "tar_gz", "gzip"})
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
SIDECAR_BYTES = 4096  # a sha256sum line, with room for a long file name


class RowBounds(Section):
    """How many rows a restored table must hold: ``{min: 100}``; ``{}`` only asks that it
    exists."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    def violated_by(self, rows: int) -> str | None:
        if self.min is not None and rows < self.min:
            return f"expected ≥ {self.min}"
        if self.max is not None and rows > self.max:
            return f"expected ≤ {self.max}"
        return None

    def describe(self) -> str:
        parts = ([f"≥ {self.min}"] if self.min is not None else []) + (
            [f"≤ {self.max}"] if self.max is not None else [])
        return " and ".join(parts) or "exists"


class RestoreDrill(Section):
    """Restore the newest backup and verify what came back.

    PostgreSQL dumps restore into a fresh database that the drill creates on ``into`` (a
    ``postgres`` target marked ``scratch: true``; any other is refused before any write)
    and drops afterwards. SQLite backups restore into a temporary file.
    """

    into: str | None = None
    # Table -> row bounds; a list of names only asks that each table exists.
    expect_tables: dict[str, RowBounds] = Field(min_length=1)
    # The role that owns the drill's database, as the production database's owner does:
    # then the dump's ``ALTER ... OWNER TO`` statements can be restored as they are.
    database_owner: str | None = Field(default=None, pattern=IDENTIFIER)
    no_owner: bool = False  # pg_restore --no-owner: skip ownership (roles need not exist)
    timeout_s: float = Field(default=600, gt=0, le=86400)

    @field_validator("expect_tables", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {str(name): {} for name in value}
        return value

    @field_validator("expect_tables")
    @classmethod
    def _table_names(cls, value: dict[str, RowBounds]) -> dict[str, RowBounds]:
        for name in value:
            if not re.fullmatch(r"^[A-Za-z_][A-Za-z0-9_.]{0,126}$", name):
                raise ValueError(f"{name!r}: expected a table name (schema.table or table)")
        return value


class BackupTarget(TargetSpec):
    type: Literal["backup"]
    location: str  # file:///dir, ssh://user@host:port/dir, s3://bucket/prefix/
    pattern: str = "*"  # shell-style, matched against file names in that directory
    format: Format
    max_age_hours: float = Field(gt=0)  # the RPO: the newest backup is younger than this
    min_size_bytes: int = Field(default=1, ge=0)
    keep_min: int = Field(default=1, ge=0)
    keep_max: int | None = Field(default=None, ge=1)
    # sidecar: <backup><sidecar_suffix> holds its SHA-256 (sha256sum's format);
    # s3: the SHA-256 the object store keeps for the object (uploaded with ChecksumSHA256).
    checksum: list[Literal["sidecar", "s3"]] = Field(default_factory=list)
    sidecar_suffix: str = Field(default=".sha256", pattern=r"^\.[A-Za-z0-9_.-]+$")
    restore_drill: RestoreDrill | None = None
    # Fixes checks/remediation/ may apply here (each also needs -m destructive and
    # --allow-destructive): retention: {keep_last, keep_days}.
    remediation: BackupRemediation = Field(default_factory=BackupRemediation)
    # Copies to the temporary directory: at most this big; the copy, and each full read of
    # it (checksum, structure), within read_timeout_s.
    max_copy_bytes: int = Field(default=8 * 1024**3, gt=0)
    read_timeout_s: float = Field(default=600, gt=0, le=86400)
    # ssh:// only
    ssh_identity_file: str | None = None
    known_hosts: str | None = None
    # s3:// only
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]+$")
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None

    @field_validator("checksum", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise ValueError("expected file:///absolute/path")
        elif parts.scheme == "ssh":
            if not parts.hostname or not parts.path.startswith("/"):
                raise ValueError("expected ssh://user@host:port/absolute/path")
            if parts.password is not None:
                raise ValueError("a password in an ssh:// URL is not supported: authenticate "
                                 "with ssh_identity_file")
            _ = parts.port  # raises ValueError for a port that is not a number
        elif parts.scheme == "s3":
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", parts.netloc):
                raise ValueError("expected s3://bucket/prefix/ with a valid bucket name")
        else:
            raise ValueError("expected a file://, ssh:// or s3:// location")
        if parts.query or parts.fragment:
            raise ValueError("a location has no query or fragment")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BackupTarget:
        scheme = self.scheme
        if scheme != "ssh" and (self.ssh_identity_file or self.known_hosts):
            raise ValueError("ssh_identity_file and known_hosts apply to ssh:// locations only")
        s3_keys = [k for k in ("endpoint_url", "access_key_id", "secret_access_key",
                               "session_token") if getattr(self, k) is not None]
        if scheme != "s3" and s3_keys:
            raise ValueError(f"{', '.join(s3_keys)}: for s3:// locations only")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give access_key_id and secret_access_key together, or neither")
        if "s3" in self.checksum and scheme != "s3":
            raise ValueError("checksum: s3 needs an s3:// location")
        if self.keep_max is not None and self.keep_max < self.keep_min:
            raise ValueError(f"keep_max ({self.keep_max}) is below keep_min ({self.keep_min})")
        drill = self.restore_drill
        if drill is not None:
            if self.format in PG_FORMATS and drill.into is None:
                raise ValueError("restore_drill of a pg_dump needs into: a postgres target "
                                 "marked scratch: true")
            if self.format in SQLITE_FORMATS and drill.into is not None:
                raise ValueError("restore_drill of an SQLite backup restores into a temporary "
                                 "file: leave out into")
            if self.format not in PG_FORMATS | SQLITE_FORMATS:
                raise ValueError(f"restore_drill supports pg_dump and SQLite backups, "
                                 f"not {self.format}")
        return self

    @property
    def scheme(self) -> str:
        return urlsplit(self.location).scheme

    @property
    def directory(self) -> str:
        """The directory (file://, ssh://) or key prefix (s3://) holding the backups."""
        parts = urlsplit(self.location)
        if parts.scheme == "s3":
            prefix = unquote(parts.path).lstrip("/")
            return prefix if not prefix or prefix.endswith("/") else prefix + "/"
        return unquote(parts.path).rstrip("/") or "/"

    def address(self) -> str:
        parts = urlsplit(self.location)
        if parts.scheme == "file":
            return f"file://{self.directory}"
        if parts.scheme == "ssh":
            user = f"{unquote(parts.username)}@" if parts.username else ""
            return f"ssh://{user}{parts.hostname}:{parts.port or 22}{self.directory}"
        endpoint = urlsplit(self.endpoint_url) if self.endpoint_url else None
        via = f" via {endpoint.hostname}:{endpoint.port or 443}" if endpoint else ""
        return f"s3://{parts.netloc}/{self.directory}{via}"

    def secrets(self) -> list[str]:
        return [v for v in (self.access_key_id, self.secret_access_key, self.session_token) if v]


def drill_refusal(spec: BackupTarget, targets: dict[str, TargetSpec]) -> str | None:
    """Why the restore drill of ``spec`` must not run where it points, or ``None``: a
    PostgreSQL drill writes, so only into a ``postgres`` target marked ``scratch: true``."""
    drill = spec.restore_drill
    if drill is None or drill.into is None:
        return None
    into = targets.get(drill.into)
    if into is None:
        return f"{drill.into!r} is not a target of this environment"
    if into.type != "postgres":
        return (f"{drill.into!r} is a {into.type} target; a pg_dump restores into a postgres "
                "target marked scratch: true")
    if not into.scratch:
        return (f"refusing to restore into {drill.into!r}: it is not marked scratch: true "
                "(a restore drill writes only into scratch targets)")
    return None


# -- what is listed ------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupFile:
    """One backup as its location lists it."""

    name: str  # the file name (s3: the key below the prefix)
    size: int
    modified: datetime  # UTC

    def age_hours(self, now: datetime) -> float:
        return (now - self.modified).total_seconds() / 3600


class TooLarge(Exception):
    """The backup is larger than ``max_copy_bytes``: not copied."""


# -- the client ----------------------------------------------------------------------------
class BackupClient:
    """One backup target: what its location holds (listed once per run, so every level
    judges the same newest backup) and a local copy of the newest, made once.

    Used from several threads at once: the listing and each copy are made once under a
    lock (a second reader waits for the first one's answer, never lists or copies again);
    the locations' own reads are safe to run side by side.
    """

    def __init__(self, name: str, spec: BackupTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        # Imported here, not at the top: the readers import this module's schema, and
        # importing any target module first runs opsverify.targets, which imports this one.
        from opsverify.backup.locations import location_for

        self.location = location_for(name, spec, timeout_s)
        self._listing: list[BackupFile] | None = None
        self._listed_at: datetime | None = None
        self._workdir: Path | None = None
        self._copies: dict[str, Path] = {}
        self._listing_lock = threading.Lock()
        self._copy_lock = threading.Lock()  # held for a whole copy: listing need not wait
        self._workdir_lock = threading.Lock()

    def check(self) -> None:
        """Prove the location answers and can be read (raises TargetUnavailable)."""
        self.location.check()

    def backups(self) -> list[BackupFile]:
        """The backups matching ``pattern`` (sidecars excluded), newest first."""
        with self._listing_lock:
            if self._listing is None:
                suffix = self.spec.sidecar_suffix
                found = [f for f in self.location.files()
                         if fnmatchcase(f.name, self.spec.pattern)
                         and not f.name.endswith(suffix)]
                self._listed_at = datetime.now(UTC)
                self._listing = sorted(found, key=lambda f: (f.modified, f.name),
                                       reverse=True)
            return self._listing

    @property
    def listed_at(self) -> datetime:
        self.backups()
        assert self._listed_at is not None
        return self._listed_at

    def newest(self) -> BackupFile | None:
        found = self.backups()
        return found[0] if found else None

    def sidecar(self, backup: BackupFile) -> bytes | None:
        return self.location.read_small(backup.name + self.spec.sidecar_suffix, SIDECAR_BYTES)

    def stored_sha256(self, backup: BackupFile) -> str | None:
        return self.location.stored_sha256(backup.name)

    def local_copy(self, backup: BackupFile) -> Path:
        """A copy of ``backup`` in this client's temporary directory (made once)."""
        with self._copy_lock:
            if backup.name not in self._copies:
                if backup.size > self.spec.max_copy_bytes:
                    raise TooLarge(backup.name)
                dest = self.workdir() / "copies" / PurePosixPath(backup.name).name
                dest.parent.mkdir(exist_ok=True)
                self.location.copy(backup.name, dest, self.spec.max_copy_bytes,
                                   self.spec.read_timeout_s)
                self._copies[backup.name] = dest
            return self._copies[backup.name]

    def workdir(self) -> Path:
        """A private temporary directory for copies and what is unpacked from them."""
        with self._workdir_lock:
            if self._workdir is None:
                self._workdir = Path(tempfile.mkdtemp(prefix="opsverify-backup-"))
            return self._workdir

    def close(self) -> None:
        self.location.close()
        with self._workdir_lock:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
                self._copies.clear()
