"""Backup targets: the ``backup`` section and readers of the places backups live.

``location`` is ``file:///path``, ``ssh://user@host:port/path`` (through the host target's
client: testinfra's SSH backend, host key verified) or ``s3://bucket/prefix`` (boto3, through
the ``s3`` target's read-only client). A reader lists the backups in that one directory or
prefix, reads a small sidecar file, and copies one backup into a local temporary directory
under a size cap and a deadline: checks that read a backup's content (checksums, structure,
restore drills) never read it in place on the target's disk.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

import botocore.exceptions
import urllib3.exceptions
from pydantic import Field, field_validator, model_validator

from opsverify.errors import TargetUnavailable
from opsverify.targets.base import Deadline, Section, TargetSpec
from opsverify.targets.host import HostClient, HostTarget, ssh_cause
from opsverify.targets.s3 import S3Client, S3Target

Format = Literal[
    "pg_dump_custom", "pg_dump_custom_gz", "sqlite", "sqlite_gz", "tar", "tar_gz", "gzip",
]
PG_FORMATS = frozenset({"pg_dump_custom", "pg_dump_custom_gz"})
SQLITE_FORMATS = frozenset({"sqlite", "sqlite_gz"})
GZIP_FORMATS = frozenset({"pg_dump_custom_gz", "sqlite_gz", "tar_gz", "gzip"})
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
SIDECAR_BYTES = 4096  # a sha256sum line, with room for a long file name
S3_PAGES = 20  # ListObjectsV2 pages read at most (20,000 keys) before a listing is cut short


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


class Location(Protocol):
    """Where backups live: list, read a sidecar, copy one out."""

    def check(self) -> None: ...
    def files(self) -> list[BackupFile]: ...
    def read_small(self, name: str, limit: int) -> bytes | None: ...
    def copy(self, name: str, dest: Path, max_bytes: int, timeout_s: float) -> None: ...
    def stored_sha256(self, name: str) -> str | None: ...
    def close(self) -> None: ...


class TooLarge(Exception):
    """The backup is larger than ``max_copy_bytes``: not copied."""


class FileLocation:
    """A directory on the machine that runs the checks."""

    def __init__(self, name: str, spec: BackupTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.directory = Path(spec.directory)

    def check(self) -> None:
        if not self.directory.is_dir():
            what = "is not a directory" if self.directory.exists() else "no such directory"
            raise self._unavailable(what)
        if not os.access(self.directory, os.R_OK | os.X_OK):
            raise self._unavailable("directory not readable")

    def files(self) -> list[BackupFile]:
        found = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.is_file():
                        stat = entry.stat()
                        found.append(BackupFile(entry.name, stat.st_size,
                                                datetime.fromtimestamp(stat.st_mtime, UTC)))
        except OSError as exc:
            raise self._unavailable(f"cannot list: {exc.strerror}") from None
        return found

    def read_small(self, name: str, limit: int) -> bytes | None:
        try:
            with (self.directory / name).open("rb") as handle:
                return handle.read(limit)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unavailable(f"cannot read {name}: {exc.strerror}") from None

    def copy(self, name: str, dest: Path, max_bytes: int, timeout_s: float) -> None:
        deadline = Deadline.start(timeout_s)
        try:
            with (self.directory / name).open("rb") as src, dest.open("wb") as out:
                _copy_stream(src.read, out, max_bytes, deadline)
        except OSError as exc:
            raise self._unavailable(f"cannot copy {name}: {exc.strerror}") from None
        except TimeoutError:
            raise self._unavailable(f"copying {name} took more than {timeout_s:g} s "
                                    "(read_timeout_s)") from None

    def stored_sha256(self, name: str) -> str | None:
        return None

    def close(self) -> None:
        pass

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.spec.address(), cause)


class SshLocation:
    """A directory on another host, read through the host target's client: testinfra's
    OpenSSH backend, host key verified, every command under a deadline."""

    def __init__(self, name: str, spec: BackupTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        parts = urlsplit(spec.location)
        user = f"{parts.username}@" if parts.username else ""
        host = HostTarget(type="host", url=f"ssh://{user}{parts.hostname}:{parts.port or 22}",
                          ssh_identity_file=spec.ssh_identity_file,
                          known_hosts=spec.known_hosts)
        self.client = HostClient(name, host, timeout_s)
        self.directory = spec.directory

    def check(self) -> None:
        self.client.connect()
        result = self.client.run(f"test -d {shlex.quote(self.directory)} && "
                                 f"test -r {shlex.quote(self.directory)}")
        if result.exit_status != 0:
            raise self._unavailable("no such directory, or not readable")

    def files(self) -> list[BackupFile]:
        # NUL-separated: file names may hold anything but NUL and "/".
        result = self.client.run(
            f"LC_ALL=C find -L {shlex.quote(self.directory)} -mindepth 1 -maxdepth 1 "
            r"-type f -printf '%f\0%s\0%T@\0'")
        if result.exit_status != 0:
            raise self._unavailable(f"cannot list: {_last_line(result.stderr)}")
        fields = result.stdout.split("\0")
        found = []
        for i in range(0, len(fields) - 2, 3):
            found.append(BackupFile(fields[i], int(fields[i + 1]),
                                    datetime.fromtimestamp(float(fields[i + 2]), UTC)))
        return found

    def read_small(self, name: str, limit: int) -> bytes | None:
        path = shlex.quote(str(PurePosixPath(self.directory) / name))
        result = self.client.run(f"test -f {path} || exit 3; head -c {int(limit)} -- {path}")
        if result.exit_status == 3:
            return None
        if result.exit_status != 0:
            raise self._unavailable(f"cannot read {name}: {_last_line(result.stderr)}")
        return result.stdout.encode()

    def copy(self, name: str, dest: Path, max_bytes: int, timeout_s: float) -> None:
        """``head -c`` streamed through the client's verified ssh connection into ``dest``;
        killed locally at the deadline, and by ``timeout`` on the host."""
        path = shlex.quote(str(PurePosixPath(self.directory) / name))
        limit = max(1, math.ceil(timeout_s))
        remote = f"timeout -k 1 {limit} head -c {int(max_bytes) + 1} -- {path}"
        backend = self.client.backend
        # testinfra's own ssh command line: our ssh_config, identity, known_hosts, master.
        cmd, cmd_args = backend._build_ssh_command(remote)
        line = backend.quote(" ".join(cmd), *cmd_args)
        with dest.open("wb") as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(line, shell=True, stdin=subprocess.DEVNULL,  # noqa: S602 - quoted by testinfra
                                    stdout=out, stderr=err, start_new_session=True)
            try:
                proc.wait(timeout=timeout_s + 2)
            except subprocess.TimeoutExpired:
                _kill(proc)
                raise self._unavailable(f"copying {name} took more than {timeout_s:g} s "
                                        "(read_timeout_s)") from None
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if proc.returncode == 255:
            raise self._unavailable(ssh_cause(stderr, backend))
        if proc.returncode in (124, 137):
            raise self._unavailable(f"copying {name} took more than {timeout_s:g} s "
                                    "(read_timeout_s)")
        if proc.returncode != 0:
            raise self._unavailable(f"cannot copy {name}: {_last_line(stderr)}")
        if dest.stat().st_size > max_bytes:
            raise TooLarge(name)

    def stored_sha256(self, name: str) -> str | None:
        return None

    def close(self) -> None:
        self.client.close()

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.spec.address(), cause)


class S3Location:
    """A key prefix in a bucket, through the ``s3`` target's read-only client (connect and
    read deadlines, one attempt, only Get/List/Head operations leave it)."""

    def __init__(self, name: str, spec: BackupTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.bucket = urlsplit(spec.location).netloc
        self.prefix = spec.directory
        bucket_spec = S3Target(type="s3", bucket=self.bucket, region=spec.region,
                               endpoint_url=spec.endpoint_url, access_key_id=spec.access_key_id,
                               secret_access_key=spec.secret_access_key,
                               session_token=spec.session_token)
        self.client = S3Client(name, bucket_spec, timeout_s)
        self.api = self.client.api
        self.api.where = f"s3://{self.bucket}/{self.prefix}"

    def check(self) -> None:
        head = self.client.head_bucket()
        if head.status != 200:
            raise self._unavailable(f"HeadBucket answered {head.error or head.status}")

    def files(self) -> list[BackupFile]:
        found: list[BackupFile] = []
        token: str | None = None
        for _ in range(S3_PAGES):
            params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix,
                                      "Delimiter": "/"}
            if token:
                params["ContinuationToken"] = token
            reply = self.api.call("s3", "list_objects_v2", **params)
            for item in reply.data.get("Contents", []):
                key = str(item["Key"])
                found.append(BackupFile(key[len(self.prefix):], int(item.get("Size", 0)),
                                        _utc(item["LastModified"])))
            token = reply.data.get("NextContinuationToken")
            if not reply.data.get("IsTruncated") or not token:
                return found
        raise self._unavailable(f"more than {S3_PAGES * 1000} objects under the prefix: "
                                "narrow the location")

    def read_small(self, name: str, limit: int) -> bytes | None:
        reply = self.api.call("s3", "get_object", Bucket=self.bucket, Key=self.prefix + name,
                              Range=f"bytes=0-{int(limit) - 1}",
                              handled=("NoSuchKey", "404", "InvalidRange"))
        if reply.error == "InvalidRange":  # an empty object: no byte to range over
            return b""
        if reply.error:
            return None
        body = reply.data["Body"]
        try:
            return bytes(body.read(limit))
        finally:
            body.close()

    def copy(self, name: str, dest: Path, max_bytes: int, timeout_s: float) -> None:
        deadline = Deadline.start(timeout_s)
        reply = self.api.call("s3", "get_object", Bucket=self.bucket, Key=self.prefix + name,
                              deadline=Deadline.start(self.timeout_s))
        body = reply.data["Body"]
        # A server that drips its answer keeps each read alive: at the deadline the socket
        # is shut down under the reader, which then fails.
        watchdog = threading.Timer(timeout_s, _shutdown, (body,))
        watchdog.daemon = True
        watchdog.start()
        try:
            if int(reply.data.get("ContentLength", 0)) > max_bytes:
                raise TooLarge(name)
            with dest.open("wb") as out:
                _copy_stream(body.read, out, max_bytes, deadline)
        except TimeoutError:
            raise self._unavailable(f"downloading {name} took more than {timeout_s:g} s "
                                    "(read_timeout_s)") from None
        except (OSError, ValueError, botocore.exceptions.BotoCoreError,
                urllib3.exceptions.HTTPError) as exc:
            # The socket's read timeout, a reset connection, or the watchdog's close.
            cause = (f"took more than {timeout_s:g} s (read_timeout_s)" if deadline.expired()
                     else f"failed: {type(exc).__name__}")
            raise self._unavailable(f"downloading {name} {cause}") from None
        finally:
            watchdog.cancel()
            body.close()

    def stored_sha256(self, name: str) -> str | None:
        """The object's stored SHA-256 in hex (with ``-N`` for a multipart upload's checksum
        of part checksums), or ``None`` when it was uploaded without one."""
        reply = self.api.call("s3", "head_object", Bucket=self.bucket, Key=self.prefix + name,
                              ChecksumMode="ENABLED")
        value = reply.data.get("ChecksumSHA256")
        if not value:
            return None
        digest, _, parts = str(value).partition("-")
        try:
            hexdigest = binascii.hexlify(base64.b64decode(digest, validate=True)).decode()
        except (binascii.Error, ValueError):
            return f"unreadable: {value}"
        return f"{hexdigest}-{parts}" if parts else hexdigest

    def close(self) -> None:
        self.client.close()

    def _unavailable(self, cause: str) -> TargetUnavailable:
        return TargetUnavailable(self.name, self.spec.address(), cause)


def location_for(name: str, spec: BackupTarget, timeout_s: float) -> Location:
    if spec.scheme == "file":
        return FileLocation(name, spec, timeout_s)
    if spec.scheme == "ssh":
        return SshLocation(name, spec, timeout_s)
    return S3Location(name, spec, timeout_s)


# -- the client ----------------------------------------------------------------------------
class BackupClient:
    """One backup target: what its location holds (listed once per run, so every level
    judges the same newest backup) and a local copy of the newest, made once."""

    def __init__(self, name: str, spec: BackupTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.timeout_s = timeout_s
        self.location = location_for(name, spec, timeout_s)
        self._listing: list[BackupFile] | None = None
        self._listed_at: datetime | None = None
        self._workdir: Path | None = None
        self._copies: dict[str, Path] = {}

    def check(self) -> None:
        """Prove the location answers and can be read (raises TargetUnavailable)."""
        self.location.check()

    def backups(self) -> list[BackupFile]:
        """The backups matching ``pattern`` (sidecars excluded), newest first."""
        if self._listing is None:
            suffix = self.spec.sidecar_suffix
            found = [f for f in self.location.files()
                     if fnmatchcase(f.name, self.spec.pattern) and not f.name.endswith(suffix)]
            self._listing = sorted(found, key=lambda f: (f.modified, f.name), reverse=True)
            self._listed_at = datetime.now(UTC)
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
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="opsverify-backup-"))
        return self._workdir

    def close(self) -> None:
        self.location.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._copies.clear()


# -- helpers -------------------------------------------------------------------------------
CHUNK = 1024 * 1024


def _copy_stream(read: Any, out: Any, max_bytes: int, deadline: Deadline) -> None:
    copied = 0
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return
        copied += len(chunk)
        if copied > max_bytes:
            raise TooLarge(f"more than {max_bytes} bytes")
        out.write(chunk)
        if deadline.expired():
            raise TimeoutError


def _shutdown(body: Any) -> None:
    """Shut down the socket under a botocore streaming body (urllib3's connection), so that
    a read blocked in it returns; closing the body instead would wait for that read."""
    raw = getattr(body, "_raw_stream", None)
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is None:
        sock = getattr(getattr(getattr(getattr(raw, "_fp", None), "fp", None), "raw", None),
                       "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value)).astimezone(UTC)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"

