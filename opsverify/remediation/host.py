"""Host fixes, each enabled per target under ``remediation:`` in its section:

    remediation:
      delete_old_files: {path: /var/log/app, pattern: "*.log", older_than_days: 7}

The runbooks' ``find logs/ -mtime +7 -delete``, made safe: regular files only (a symbolic
link is never followed, never deleted; ``find -P`` and ``stat`` read the link itself), under
``path`` and never outside it (each file's directory is resolved again just before its
``rm``), matching ``pattern`` by name at any depth, last modified more than
``older_than_days`` ago by the host's own clock. ``path`` must hold one of the target's
declared ``paths:`` (checked when the environment is loaded), whose size is the re-check.

The action takes a write-capable :class:`HostFiles`, which exists only inside an allowed
destructive check (``host_admin``); the ``host`` fixture's client has no way to delete.
Every command is a POSIX shell line built with ``shlex.quote``: local, ``ssh://`` and
``docker://`` (busybox) hosts alike.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, field_validator

from opsverify.remediation import Item
from opsverify.targets.base import Section

if TYPE_CHECKING:
    from opsverify.targets.host import HostClient, HostTarget
    from opsverify.targets.host_capacity import DeclaredPath

DAY_S = 86400


class DeleteOldFilesSettings(Section):
    path: str  # an absolute directory; files are deleted under it, at any depth
    pattern: str  # a file-name glob: "*.log", "app-*.log.gz"
    older_than_days: float = Field(gt=0)

    @field_validator("path")
    @classmethod
    def _directory(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected an absolute directory: a relative one would depend on "
                             "the login's directory")
        if "\n" in value or "\0" in value:
            raise ValueError("a path holds no newline")
        if posixpath.normpath(value) != value or value.startswith("//"):
            raise ValueError(f"expected a normalised path ({posixpath.normpath(value)!r}): "
                             "no '..', '.', '//' or trailing '/'")
        if value == "/":
            raise ValueError("refusing the root directory: name the directory the files are in")
        return value

    @field_validator("pattern")
    @classmethod
    def _glob(cls, value: str) -> str:
        if not value or "/" in value or ".." in value or value == ".":
            raise ValueError("expected a file-name glob such as '*.log': no '/', no '..'")
        if "\n" in value or "\0" in value:
            raise ValueError("a pattern holds no newline")
        return value


class HostRemediation(Section):
    """``remediation:`` of a host target: an action runs only where it is listed."""

    delete_old_files: DeleteOldFilesSettings | None = None


def declared_under(paths: Sequence[DeclaredPath], directory: str) -> list[DeclaredPath]:
    """The declared paths whose size deleting files under ``directory`` changes: a glob
    that matches ``directory``, an ancestor of it, or something in it."""
    parts = directory.strip("/").split("/")
    return [p for p in paths
            if all(fnmatchcase(part, glob)
                   for part, glob in zip(parts, p.path.strip("/").split("/"), strict=False))]


def refusal(name: str, spec: HostTarget) -> str | None:
    """Why the target's ``delete_old_files`` must not be enabled as written, or ``None``."""
    settings = spec.remediation.delete_old_files
    if settings is None or declared_under(spec.paths, settings.path):
        return None
    return ("the directory holds none of the target's declared paths: declare it (or a glob "
            "in it) under paths:, so that its size is checked, and re-checked after the "
            "cleanup")


# -- the write-capable client -------------------------------------------------------------
@dataclass(frozen=True)
class HostFile:
    """A regular file as ``stat`` saw it: what identifies it across plan and apply."""

    path: str
    inode: int
    size: int
    mtime: int  # seconds since the epoch

    @property
    def stat_line(self) -> str:
        return f"{self.inode} {self.size} {self.mtime}"

    @property
    def modified(self) -> str:
        return f"{datetime.fromtimestamp(self.mtime, UTC):%Y-%m-%dT%H:%M:%SZ}"


@dataclass(frozen=True)
class Found:
    """What ``find`` listed under a directory, resolved, by the host's clock."""

    root: str  # the directory with every symbolic link in its path resolved (pwd -P)
    now: int
    files: tuple[HostFile, ...]


class DeleteFailed(Exception):
    """A file was not deleted, or not as planned; one line."""


STAT = "stat -c '%i %s %Y' --"
# The directory must be one (not a link to one); then the host's clock, and each regular
# file matching the name at any depth, its stat line and path NUL-terminated (a name may
# hold a newline). find -P: no symbolic link is followed, none is a regular file.
_FIND = ("LC_ALL=C; export LC_ALL; d={path}; "
         "if [ -L \"$d\" ] || [ ! -d \"$d\" ]; then "
         "echo 'not a directory, or a symbolic link to one' >&2; exit 3; fi; "
         "cd -P -- \"$d\" && pwd -P && date +%s && "
         "exec find \"$d\" -type f -name {pattern} -exec sh -c {each} sh {{}} +")
_EACH = (f"for f; do s=$({STAT} \"$f\" 2>/dev/null) && "
         "printf '%s\\n%s\\0' \"$s\" \"$f\"; done; true")
# One file: a link, not regular, gone, or its stat line; then its directory, resolved.
_STAT = ("LC_ALL=C; export LC_ALL; f={path}; "
         "if [ -L \"$f\" ]; then echo link; elif [ -f \"$f\" ]; then {stat} \"$f\"; "
         "elif [ -e \"$f\" ]; then echo other; else echo gone; fi; "
         "cd -P -- \"$(dirname -- \"$f\")\" 2>/dev/null && pwd -P")
# Checked again in the command that deletes: still that file, still under the directory.
_DELETE = ("LC_ALL=C; export LC_ALL; f={path}; root={root}; "
           "if [ -L \"$f\" ] || [ ! -f \"$f\" ]; then "
           "echo 'no longer a regular file just before the delete' >&2; exit 10; fi; "
           "d=$(cd -P -- \"$(dirname -- \"$f\")\" && pwd -P) || exit 10; "
           "case \"$d/\" in \"$root\"/*) ;; *) "
           "echo \"its directory resolves outside the directory ($d)\" >&2; exit 10;; esac; "
           "[ \"$({stat} \"$f\")\" = {want} ] || "
           "{{ echo 'changed just before the delete' >&2; exit 10; }}; "
           "rm -f -- \"$f\" || exit 11; "
           "if [ -e \"$f\" ] || [ -L \"$f\" ]; then echo 'still there after rm' >&2; exit 12; fi")


class HostFiles:
    """Lists, re-reads and deletes files on one host through its client (local, ssh://,
    docker://); built only by the ``host_admin`` fixture, inside a destructive check."""

    def __init__(self, client: HostClient) -> None:
        self.client = client
        self.name = client.name
        self.spec = client.spec

    def connect(self) -> None:
        self.client.connect()

    def close(self) -> None:
        self.client.close()

    def find(self, directory: str, pattern: str) -> Found:
        result = self.client.run(_FIND.format(path=shlex.quote(directory),
                                              pattern=shlex.quote(pattern),
                                              each=shlex.quote(_EACH)))
        head, _, records = result.stdout.partition("\n")
        clock, _, records = records.partition("\n")
        if result.exit_status != 0 or not clock.strip().isdigit():
            why = _last_line(result.stderr) or f"exit status {result.exit_status}"
            raise self.client.unavailable(f"cannot list under {directory}: {why}")
        files = []
        for record in records.split("\0"):
            line, _, path = record.partition("\n")
            fields = line.split()
            if len(fields) == 3 and path and all(f.isdigit() for f in fields):
                files.append(HostFile(path, int(fields[0]), int(fields[1]), int(fields[2])))
        return Found(head.strip(), int(clock), tuple(files))

    def stat(self, path: str) -> tuple[HostFile | str, str]:
        """The file now (or ``link``, ``other``, ``gone``) and its directory, resolved."""
        result = self.client.run(_STAT.format(path=shlex.quote(path), stat=STAT))
        state, _, where = result.stdout.partition("\n")
        fields = state.split()
        if len(fields) == 3 and all(f.isdigit() for f in fields):
            return HostFile(path, int(fields[0]), int(fields[1]), int(fields[2])), where.strip()
        if state.strip() in ("link", "other", "gone"):
            return state.strip(), where.strip()
        raise self.client.unavailable(f"cannot stat {path}: {_last_line(result.stderr)}")

    def delete(self, file: HostFile, root: str) -> None:
        """``rm`` exactly ``file``, if it is still itself and under ``root``; then prove it
        gone."""
        result = self.client.run(_DELETE.format(path=shlex.quote(file.path),
                                                root=shlex.quote(root), stat=STAT,
                                                want=shlex.quote(file.stat_line)))
        if result.exit_status != 0:
            raise DeleteFailed(_last_line(result.stderr) or f"exit status {result.exit_status}")
        if self.stat(file.path)[0] != "gone":
            raise DeleteFailed("still there after rm")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- the action ------------------------------------------------------------------------------
class DeleteOldFiles:
    """Delete the regular files under ``path`` matching ``pattern`` whose last change is
    older than ``older_than_days``, each by its exact path, inode, size and time."""

    name: ClassVar[str] = "delete_old_files"

    def __init__(self, files: HostFiles, settings: DeleteOldFilesSettings) -> None:
        self.files = files
        self.target = files.name
        self.settings = settings

    def matching(self) -> Found:
        """Every file the pattern matches under the directory, old or not (the population)."""
        return self.files.find(self.settings.path, self.settings.pattern)

    def select(self) -> list[Item]:
        from opsverify.targets.host_capacity import bytes_text  # imports opsverify.targets

        found = self.matching()
        cutoff = found.now - self.settings.older_than_days * DAY_S
        old = sorted((f for f in found.files if f.mtime < cutoff),
                     key=lambda f: (f.mtime, f.path))
        return [Item(identity=f"{f.path} inode {f.inode} {f.size} bytes modified {f.modified}",
                     before=(f"{(found.now - f.mtime) / DAY_S:.1f} days old, "
                             f"{bytes_text(f.size)}"),
                     ref=(f, found.root)) for f in old]

    def drift(self, item: Item) -> str | None:
        planned, root = item.ref
        now, where = self.files.stat(planned.path)
        if now == "gone":
            return "gone"
        if now == "link":
            return "a symbolic link now"
        if isinstance(now, str):
            return "no longer a regular file"
        if now.inode != planned.inode:
            return f"another file now (inode {now.inode})"
        if (now.size, now.mtime) != (planned.size, planned.mtime):
            return f"changed: {now.size} bytes, modified {now.modified}"
        if not f"{where}/".startswith(f"{root}/"):
            return "its directory resolves outside the directory now"
        return None

    def apply(self, item: Item) -> str:
        planned, root = item.ref
        self.files.delete(planned, root)
        return "deleted"
