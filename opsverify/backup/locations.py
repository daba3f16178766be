"""Readers of the places backups live: ``file://``, ``ssh://`` and ``s3://`` locations.

A reader lists the backups in its one directory or prefix, reads a small sidecar file, and
copies one backup into a local temporary directory under a size cap and a deadline. The
``ssh://`` reader goes through the host target's client (:meth:`HostClient.fetch`, host key
verified); the ``s3://`` reader through the ``s3`` target's read-only client (boto3).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import shlex
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Protocol
from urllib.parse import urlsplit

import urllib3.exceptions

from opsverify.errors import TargetUnavailable
from opsverify.targets.backup import BackupFile, BackupTarget, TooLarge
from opsverify.targets.base import Deadline
from opsverify.targets.host import FetchFailed, FetchTooLarge, HostClient, HostTarget
from opsverify.targets.s3 import S3Client, S3Target

S3_PAGES = 20  # ListObjectsV2 pages read at most (20,000 keys) before a listing is cut short


class Location(Protocol):
    """Where backups live: list, read a sidecar, copy one out."""

    def check(self) -> None: ...
    def files(self) -> list[BackupFile]: ...
    def read_small(self, name: str, limit: int) -> bytes | None: ...
    def copy(self, name: str, dest: Path, max_bytes: int, timeout_s: float) -> None: ...
    def stored_sha256(self, name: str) -> str | None: ...
    def close(self) -> None: ...


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
        """Through the client's verified ssh connection (:meth:`HostClient.fetch`), told in
        this location's terms."""
        path = str(PurePosixPath(self.directory) / name)
        try:
            self.client.fetch(path, dest, max_bytes=max_bytes, timeout_s=timeout_s)
        except FetchTooLarge:
            raise TooLarge(name) from None
        except FetchFailed as exc:
            if exc.kind == "timeout":
                cause = f"copying {name} took more than {timeout_s:g} s (read_timeout_s)"
            elif exc.kind == "failed":
                cause = f"cannot copy {name}: {exc.detail or 'no message'}"
            else:  # ssh itself failed: its cause as it is
                cause = exc.cause
            raise self._unavailable(cause) from None

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
        import botocore.exceptions  # here: a run without an s3:// location never loads it

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


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"
