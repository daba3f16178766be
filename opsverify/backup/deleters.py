"""Write-capable counterparts of the backup readers, for retention in destructive checks only.

The readers (:mod:`opsverify.backup.locations`) never change anything. A deleter per kind
(:func:`deleter_for`) lists regular files only (never a symbolic link), deletes exactly the
file it was given, checked again just before (size, modification time and inode; in S3 the
ETag and version), and proves it gone by listing again. It is built by the
``backup_writer`` fixture, which exists only inside an allowed destructive check.
"""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlsplit

from opsverify.backup.locations import (
    S3_PAGES,
    FileLocation,
    S3Location,
    SshLocation,
    _last_line,
    _utc,
)
from opsverify.targets.aws_api import AwsApi
from opsverify.targets.backup import BackupFile, BackupTarget
from opsverify.targets.s3 import S3Target


class DeleteFailed(Exception):
    """A delete did not happen, or not as planned; the message is one line."""


@dataclass(frozen=True)
class Stored:
    """One regular file as a deleter sees it: the listing's :class:`BackupFile` and what must
    still match for it to be deleted (``inode 12 mtime 1767232800.123``; in S3 the ETag and
    version). ``version`` is the S3 version id to delete ("" when the bucket has none)."""

    file: BackupFile
    token: str
    version: str = ""


class Deleter(Protocol):
    """Where backups live, write-capable: list, re-read one, delete exactly that one."""

    name: str  # the target's
    spec: BackupTarget

    def check(self) -> None: ...
    def files(self) -> list[Stored]: ...
    def stat(self, name: str) -> Stored | None: ...
    def delete(self, stored: Stored) -> None: ...
    def where(self, name: str) -> str: ...
    def close(self) -> None: ...


class FileDeleter:
    """Deletes in a ``file://`` directory: ``lstat`` again, then ``unlink``."""

    def __init__(self, name: str, spec: BackupTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.reader = FileLocation(name, spec, timeout_s)
        self.directory = self.reader.directory

    def check(self) -> None:
        self.reader.check()

    def files(self) -> list[Stored]:
        found = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        found.append(_stored(entry.name, entry.stat(follow_symlinks=False)))
        except OSError as exc:
            raise self.reader._unavailable(f"cannot list: {exc.strerror}") from None
        return found

    def stat(self, name: str) -> Stored | None:
        try:
            st = os.lstat(self.directory / name)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.reader._unavailable(f"cannot stat {name}: {exc.strerror}") from None
        return _stored(name, st) if stat.S_ISREG(st.st_mode) else None

    def delete(self, stored: Stored) -> None:
        name = stored.file.name
        now = self.stat(name)
        if now != stored:
            raise DeleteFailed(f"{name} changed just before the delete: {_was(now)}")
        try:
            os.unlink(self.directory / name)
        except OSError as exc:
            raise DeleteFailed(f"cannot delete {name}: {exc.strerror}") from None
        _gone(self, stored)

    def where(self, name: str) -> str:
        return f"file://{self.directory / name}"

    def close(self) -> None:
        pass


def _stored(name: str, st: os.stat_result) -> Stored:
    return Stored(BackupFile(name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)),
                  f"inode {st.st_ino} mtime {st.st_mtime_ns / 1e9:.9f}")


# find's view of one regular file (-P: a symbolic link is not one): name, size, mtime, inode.
_FIND = r"LC_ALL=C find -P {paths} -type f -printf '%f\0%s\0%T@\0%i\0'"


class SshDeleter:
    """Deletes in an ``ssh://`` directory through the host target's client: ``find`` the
    file again and ``rm`` it in one command, only if it is still the one planned."""

    def __init__(self, name: str, spec: BackupTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.reader = SshLocation(name, spec, timeout_s)
        self.client = self.reader.client
        self.directory = PurePosixPath(spec.directory)

    def check(self) -> None:
        self.reader.check()

    def files(self) -> list[Stored]:
        paths = f"{shlex.quote(str(self.directory))} -mindepth 1 -maxdepth 1"
        result = self.client.run(_FIND.format(paths=paths))
        if result.exit_status != 0:
            raise self.reader._unavailable(f"cannot list: {_last_line(result.stderr)}")
        return _found(result.stdout)

    def stat(self, name: str) -> Stored | None:
        paths = f"{shlex.quote(str(self.directory / name))} -maxdepth 0"
        result = self.client.run(_FIND.format(paths=paths) + " 2>/dev/null")
        found = _found(result.stdout)
        return found[0] if found else None

    def delete(self, stored: Stored) -> None:
        name = stored.file.name
        path = shlex.quote(str(self.directory / name))
        want = _record(stored)
        # One command: the file is still the one planned when rm runs (as near as a shell
        # gets), and rm's own complaint is the reason when it cannot.
        result = self.client.run(
            f"now=$({_FIND.format(paths=path + ' -maxdepth 0')} 2>/dev/null | "
            f"tr '\\0' '|'); [ \"$now\" = {shlex.quote(want)} ] || "
            f"{{ echo \"changed just before the delete: ${{now:-gone}}\" >&2; exit 10; }}; "
            f"rm -f -- {path}")
        if result.exit_status != 0:
            raise DeleteFailed(f"cannot delete {name}: {_last_line(result.stderr)}")
        _gone(self, stored)

    def where(self, name: str) -> str:
        return f"{self.reader.spec.address().rstrip('/')}/{name}"

    def close(self) -> None:
        self.reader.close()


def _found(stdout: str) -> list[Stored]:
    fields = stdout.split("\0")
    return [Stored(BackupFile(fields[i], int(fields[i + 1]),
                              datetime.fromtimestamp(float(fields[i + 2]), UTC)),
                   f"inode {fields[i + 3]} mtime {fields[i + 2]}")
            for i in range(0, len(fields) - 3, 4)]


def _record(stored: Stored) -> str:
    """What ``find -printf`` prints for ``stored``, NULs as ``|``."""
    inode, _, mtime = stored.token.removeprefix("inode ").partition(" mtime ")
    return f"{stored.file.name}|{stored.file.size}|{mtime}|{inode}|"


class S3Deleter:
    """Deletes in an ``s3://`` prefix with a write-capable client of its own: HeadObject
    again, then DeleteObject of exactly that version (in a versioned bucket: that version
    for good, not a delete marker over whatever is current by then)."""

    def __init__(self, name: str, spec: BackupTarget, timeout_s: float) -> None:
        self.name = name
        self.spec = spec
        self.reader = S3Location(name, spec, timeout_s)  # check() and the address
        self.bucket = self.reader.bucket
        self.prefix = self.reader.prefix
        style = "path" if spec.endpoint_url else "auto"
        bucket = S3Target(type="s3", bucket=urlsplit(spec.location).netloc, region=spec.region,
                          endpoint_url=spec.endpoint_url, access_key_id=spec.access_key_id,
                          secret_access_key=spec.secret_access_key,
                          session_token=spec.session_token)
        self.api = AwsApi(name, bucket, timeout_s, writable=True,
                          where=f"s3://{self.bucket}/{self.prefix}",
                          s3={"addressing_style": style})

    def check(self) -> None:
        self.reader.check()

    def files(self) -> list[Stored]:
        found: list[Stored] = []
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix,
                                  "Delimiter": "/"}
        for _ in range(S3_PAGES):
            reply = self.api.call("s3", "list_objects_v2", **params)
            for item in reply.data.get("Contents", []):
                if str(item["Key"]) == self.prefix:
                    continue  # a "folder" marker: the prefix itself is never a backup
                found.append(Stored(BackupFile(str(item["Key"])[len(self.prefix):],
                                               int(item.get("Size", 0)),
                                               _utc(item["LastModified"])),
                                    f"etag {item.get('ETag', '')}"))
            token = reply.data.get("NextContinuationToken")
            if not reply.data.get("IsTruncated") or not token:
                return found
            params["ContinuationToken"] = token
        raise self.reader._unavailable(f"more than {S3_PAGES * 1000} objects under the "
                                       "prefix: narrow the location")

    def stat(self, name: str) -> Stored | None:
        reply = self.api.call("s3", "head_object", Bucket=self.bucket, Key=self.prefix + name,
                              handled=("404", "NoSuchKey"))
        if reply.error:
            return None
        version = str(reply.data.get("VersionId") or "")
        return Stored(BackupFile(name, int(reply.data.get("ContentLength", 0)),
                                 _utc(reply.data["LastModified"])),
                      f"etag {reply.data.get('ETag', '')} version {version or 'none'}", version)

    def delete(self, stored: Stored) -> None:
        name = stored.file.name
        now = self.stat(name)
        if now != stored:
            raise DeleteFailed(f"{name} changed just before the delete: {_was(now)}")
        version: dict[str, Any] = {"VersionId": stored.version} if stored.version else {}
        reply = self.api.call("s3", "delete_object", Bucket=self.bucket, Key=self.prefix + name,
                              handled=("AccessDenied", "InvalidRequest"), **version)
        if reply.error:
            raise DeleteFailed(f"cannot delete {name}: DeleteObject refused: {reply.error}"
                               + (f" ({_last_line(reply.message)})" if reply.message else ""))
        _gone(self, stored)

    def versions(self, name: str) -> list[str]:
        """The versions S3 still keeps of ``name`` (ListObjectVersions)."""
        key = self.prefix + name
        reply = self.api.call("s3", "list_object_versions", Bucket=self.bucket, Prefix=key)
        return [str(v.get("VersionId")) for v in reply.data.get("Versions", [])
                if v.get("Key") == key]

    def where(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}"

    def close(self) -> None:
        self.api.close()
        self.reader.close()


def _gone(deleter: FileDeleter | SshDeleter | S3Deleter, stored: Stored) -> None:
    """Success is the file missing from a new listing (in S3: that version, too)."""
    name = stored.file.name
    if any(f.file.name == name for f in deleter.files()):
        raise DeleteFailed(f"{name} is still listed after the delete")
    if isinstance(deleter, S3Deleter) and stored.version in deleter.versions(name):
        raise DeleteFailed(f"version {stored.version} of {name} is still kept after the delete")


def _was(now: Stored | None) -> str:
    if now is None:
        return "gone, or no longer a regular file"
    return f"{now.file.size} bytes, modified {now.file.modified:%Y-%m-%dT%H:%M:%SZ}, {now.token}"


def deleter_for(name: str, spec: BackupTarget, timeout_s: float) -> Deleter:
    """The write-capable counterpart of :func:`location_for`; for destructive checks only."""
    if spec.scheme == "file":
        return FileDeleter(name, spec, timeout_s)
    if spec.scheme == "ssh":
        return SshDeleter(name, spec, timeout_s)
    return S3Deleter(name, spec, timeout_s)
