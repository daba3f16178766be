"""L3: a backup's structure, read to its end, on a local copy.

A header that looks fine proves nothing: a gzip cut mid-stream has a perfect header, and so
has a tar whose last member is missing. Every reader here consumes the whole archive: the
gzip stream to its end-of-stream marker and CRC, every tar header and the end-of-archive
marker, a pg_dump custom archive through ``pg_restore --list`` (its table of contents) and,
for the full read, ``pg_restore -f /dev/null`` (every data block), an SQLite file through
``PRAGMA integrity_check``.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsverify.backup import pgtools
from opsverify.errors import TargetUnavailable
from opsverify.targets.base import Deadline

# The backup checks import this module in every run: the backup and sqlite types' modules
# are imported by the readers, when a backup is read.

CHUNK = 64 * 1024  # small reads: a broken stream is reported with how far it got
TAR_BLOCK = 512
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Finding:
    """One reader's verdict on one archive."""

    reader: str  # "gzip stream", "tar listing", "pg_restore --list", ...
    ok: bool
    detail: str  # one line: what was read, or where it broke
    facts: dict[str, Any] = field(default_factory=dict)


def unpack(copy: Path, fmt: str, workdir: Path, deadline: Deadline) -> tuple[Finding | None, Path]:
    """For gzip formats, decompress ``copy`` whole into ``workdir`` (once: a later call
    reuses it) and say whether the stream was complete; other formats are used as they are.
    Returns (the gzip finding or ``None``, the path of the archive inside)."""
    from opsverify.targets.backup import GZIP_FORMATS

    if fmt not in GZIP_FORMATS:
        return None, copy
    inner = workdir / "unpacked" / (copy.name.removesuffix(".gz") or "archive")
    done = inner.with_name(inner.name + ".complete")
    if done.exists():
        size = int(done.read_text())
        return Finding("gzip stream", True, f"complete: {size} bytes uncompressed",
                       {"uncompressed_bytes": size}), inner
    inner.parent.mkdir(parents=True, exist_ok=True)
    finding = gunzip(copy, inner, deadline)
    if finding.ok:
        done.write_text(str(finding.facts["uncompressed_bytes"]))
    return finding, inner


def gunzip(source: Path, dest: Path, deadline: Deadline) -> Finding:
    """Decompress every member of a gzip file; the CRC and length of each are verified."""
    size = 0
    try:
        with gzip.open(source, "rb") as stream, dest.open("wb") as out:
            while chunk := stream.read(CHUNK):
                out.write(chunk)
                size += len(chunk)
                if deadline.expired():
                    return Finding("gzip stream", False,
                                   f"not read to its end within {deadline.seconds:g} s "
                                   f"({size} bytes so far)", {"uncompressed_bytes": size})
    except EOFError as exc:  # truncated: the header was fine, the end never came
        return Finding("gzip stream", False, f"ends early after {size} bytes: {exc}",
                       {"uncompressed_bytes": size})
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        return Finding("gzip stream", False, f"corrupt after {size} bytes: {exc}",
                       {"uncompressed_bytes": size})
    return Finding("gzip stream", True, f"complete: {size} bytes uncompressed",
                   {"uncompressed_bytes": size})


def tar_listing(path: Path, deadline: Deadline) -> Finding:
    """Every member header, each member's data within the file, and the end-of-archive
    marker (two zero blocks): Python's tarfile, like ``tar -t``, stops quietly at a
    truncation that falls on a header boundary; the marker is what proves the end."""
    total = path.stat().st_size
    members = files = data = 0
    try:
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                members += 1
                if member.isfile():
                    files += 1
                    data += member.size
                    if member.offset_data + member.size > total:
                        return Finding("tar listing", False,
                                       f"member {member.name!r} ends past the end of the "
                                       f"archive (after {members} members)",
                                       {"members": members})
                if deadline.expired():
                    return Finding("tar listing", False,
                                   f"not listed within {deadline.seconds:g} s "
                                   f"({members} members so far)", {"members": members})
            end = archive.offset
    except (tarfile.TarError, EOFError, OSError) as exc:
        return Finding("tar listing", False, f"unreadable after {members} members: {exc}",
                       {"members": members})
    with path.open("rb") as handle:
        handle.seek(end)
        marker = handle.read(2 * TAR_BLOCK)
    facts = {"members": members, "files": files, "file_bytes": data}
    if marker != b"\0" * (2 * TAR_BLOCK):
        return Finding("tar listing", False,
                       f"no end-of-archive marker after {members} members: the archive "
                       "was cut short", facts)
    if members == 0:
        return Finding("tar listing", False, "the archive holds no member", facts)
    return Finding("tar listing", True, f"complete: {members} members, {files} files, "
                   f"{data} bytes", facts)


# "3373; 0 16389 TABLE DATA public experiments ts_app": id; catalog oid; description.
TOC_LINE = re.compile(r"^\d+; \d+ \d+ (?P<description>.+)$")


def pg_restore_list(path: Path, deadline: Deadline) -> Finding:
    """``pg_restore --list``: the archive's header and table of contents are readable."""
    binary = pgtools.newest()
    result = _run([str(binary), "--list", str(path)], deadline, "pg_restore --list")
    if isinstance(result, Finding):
        return result
    if result.returncode != 0:
        return Finding("pg_restore --list", False, _error_line(result.stderr))
    header: dict[str, str] = {}
    tables: list[str] = []
    entries = 0
    for line in result.stdout.splitlines():
        if line.startswith(";") and ":" in line:
            key, _, value = line[1:].partition(":")
            header[key.strip()] = value.strip()
        elif (match := TOC_LINE.match(line)) is not None:
            entries += 1
            words = match.group("description").split()
            if words[:2] == ["TABLE", "DATA"] and len(words) >= 4:
                tables.append(f"{words[2]}.{words[3]}")
    facts = {
        "toc_entries": entries, "tables_with_data": len(tables), "tables": tables,
        "dumped_from": header.get("Dumped from database version", ""),
        "archive_version": header.get("Dump Version", ""),
        "database": header.get("dbname", ""),
    }
    return Finding("pg_restore --list", True,
                   f"{entries} TOC entries, {len(tables)} tables with data", facts)


def pg_restore_full(path: Path, deadline: Deadline) -> Finding:
    """``pg_restore -f /dev/null``: every data block decompressed and read to its end."""
    binary = pgtools.newest()
    result = _run([str(binary), "--file", os.devnull, str(path)], deadline,
                  "pg_restore -f /dev/null")
    if isinstance(result, Finding):
        return result
    if result.returncode != 0:
        return Finding("pg_restore -f /dev/null", False, _error_line(result.stderr))
    return Finding("pg_restore -f /dev/null", True,
                   f"read to its end by pg_restore {pgtools.version_of(binary)}",
                   {"pg_restore": pgtools.version_of(binary)})


def sqlite_integrity(path: Path, deadline: Deadline) -> Finding:
    """``PRAGMA integrity_check`` on a copy, opened read-only, with the remaining deadline."""
    from opsverify.targets.sqlite import SqliteClient, SqliteTarget, UnreadableDatabase

    spec = SqliteTarget(type="sqlite", path=str(path))
    client = SqliteClient("backup-copy", spec, max(0.1, deadline.remaining()))
    problems: list[str] = []
    try:
        tables = sorted(client.tables())
        for (text,) in client.rows(f"PRAGMA integrity_check({MAX_PROBLEMS})"):
            problems += [line.strip() for line in str(text).splitlines() if line.strip()]
        pages = int(client.query("PRAGMA page_count")[0][0])
    except UnreadableDatabase as exc:
        return Finding("PRAGMA integrity_check", False, exc.cause)
    except TargetUnavailable as exc:
        return Finding("PRAGMA integrity_check", False, exc.cause)
    finally:
        client.close()
    facts = {"tables": tables, "pages": pages}
    if problems != ["ok"]:
        shown = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)"
                                           if len(problems) > 3 else "")
        facts["problems"] = len(problems)
        return Finding("PRAGMA integrity_check", False, shown, facts)
    return Finding("PRAGMA integrity_check", True, f"ok: {len(tables)} tables, {pages} pages",
                   facts)


def read_structure(copy: Path, fmt: str, workdir: Path, deadline: Deadline) -> list[Finding]:
    """The daily structure check: the whole compressed stream, then the format's own
    reader of its structure (tar listing, pg_restore --list, integrity_check)."""
    from opsverify.targets.backup import PG_FORMATS, SQLITE_FORMATS

    gz, inner = unpack(copy, fmt, workdir, deadline)
    findings = [gz] if gz is not None else []
    if gz is not None and not gz.ok:
        return findings
    if fmt in ("tar", "tar_gz"):
        findings.append(tar_listing(inner, deadline))
    elif fmt in PG_FORMATS:
        findings.append(pg_restore_list(inner, deadline))
    elif fmt in SQLITE_FORMATS:
        findings.append(sqlite_integrity(inner, deadline))
    return findings


def read_fully(copy: Path, fmt: str, workdir: Path, deadline: Deadline) -> list[Finding]:
    """The weekly full read of a pg_dump: every data block, through pg_restore."""
    gz, inner = unpack(copy, fmt, workdir, deadline)
    findings = [gz] if gz is not None else []
    if gz is not None and not gz.ok:
        return findings
    findings.append(pg_restore_full(inner, deadline))
    return findings


def _run(argv: list[str], deadline: Deadline, reader: str,
         ) -> subprocess.CompletedProcess[str] | Finding:
    try:
        return subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=max(0.1, deadline.remaining()),
                              env={**os.environ, "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        return Finding(reader, False, f"not finished within {deadline.seconds:g} s")


def _error_line(stderr: str) -> str:
    """pg_restore's first error, without its program-name prefix."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in lines:
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return lines[-1] if lines else "failed without a message"
