"""Backups, from "it exists" to "it restores": every runbook's "check the backup", as four
levels per backup target. L1 present and recent (daily), L2 checksum (daily), L3 structure
read to its end (daily; the full pg_restore read weekly), L4 restore drill (weekly).

Each check is marked with the level it proves (``backup_level``, noted in its evidence as
``backup.level``); the report shows the highest level every backup reached."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.backup import checksums, drill, structure
from opsverify.backup.presence import human_size, size_change
from opsverify.evidence import EvidenceLog
from opsverify.targets.base import Deadline
from opsverify.thresholds import Threshold

if TYPE_CHECKING:
    from opsverify.targets.backup import BackupClient, BackupFile, RestoreDrill

# What is cheap and declared is prefetched in the probe pool: the location's listing (one
# per run, so every level judges the same newest backup) and the checksums recorded for the
# newest. Reading a backup's content stays inline in its check: the copy, its SHA-256, the
# structure and full reads and the restore drills take up to read_timeout_s each (a drill
# writes into its scratch database), and the prefetching burst must stay short.


@dataclass(frozen=True)
class BackupListing:
    """The backups matching ``pattern``, newest first, and when they were listed."""

    backups: tuple[BackupFile, ...]
    listed_at: datetime

    @property
    def newest(self) -> BackupFile | None:
        return self.backups[0] if self.backups else None


@dataclass(frozen=True)
class RecordedChecksums:
    """What was recorded for the newest backup when it was written, as declared in
    ``checksum``: its sidecar's content (``None``: no sidecar) and the object store's
    SHA-256 (``None``: uploaded without one)."""

    sidecar: bytes | None = None
    stored: str | None = None


@probe(key=lambda backup: "listing")
def backup_listing(backup: BackupClient) -> BackupListing:
    return BackupListing(tuple(backup.backups()), backup.listed_at)


@probe
def backup_recorded_checksums(backup: BackupClient) -> RecordedChecksums:
    declared = backup.spec.checksum
    newest = backup.newest()
    if newest is None or not declared:
        return RecordedChecksums()
    return RecordedChecksums(
        sidecar=backup.sidecar(newest) if "sidecar" in declared else None,
        stored=backup.stored_sha256(newest) if "s3" in declared else None)


def newest_or_fail(backup: BackupClient, listing: BackupListing,
                   evidence: EvidenceLog) -> BackupFile | None:
    """The newest backup, noted; with none, a FAIL that says what was looked for."""
    newest = listing.newest
    if newest is None:
        evidence.expect(f"backups matching {backup.spec.pattern!r}", 0, at_least=1,
                        source=evidence.source_of("targets", backup.name, "pattern"))
        return None
    evidence.note("newest backup", newest.name)
    return newest


def newest_copy(backup: BackupClient, listing: BackupListing,
                evidence: EvidenceLog) -> tuple[BackupFile, Path] | None:
    """The newest backup and its copy in a temporary directory (never read in place);
    ``None`` once why not is recorded as a FAIL (nothing found, too large to copy)."""
    # Not at the top: a run without backup targets never imports the type.
    from opsverify.targets.backup import TooLarge

    newest = newest_or_fail(backup, listing, evidence)
    if newest is None:
        return None
    try:
        return newest, backup.local_copy(newest)
    except TooLarge:
        evidence.expect("size", newest.size, at_most=backup.spec.max_copy_bytes, unit="bytes",
                        source=evidence.source_of("targets", backup.name, "max_copy_bytes"))
        return None


def unpacked_newest(backup: BackupClient, listing: BackupListing,
                    evidence: EvidenceLog) -> Path | None:
    """The newest backup's payload, decompressed from a local copy, ready to restore."""
    found = newest_copy(backup, listing, evidence)
    if found is None:
        return None
    gz, payload = structure.unpack(found[1], backup.spec.format, backup.workdir(),
                                   Deadline.start(backup.spec.read_timeout_s))
    if gz is not None and not gz.ok:
        evidence.expect("restore", f"cannot restore: gzip stream {gz.detail}", equals="ok")
        return None
    return payload


# What the structure readers found, as the report names it.
FACTS = {"archive_version": "archive", "dumped_from": "dumped from PostgreSQL",
         "tables_with_data": "tables with data", "members": "tar members", "tables": "tables",
         "uncompressed_bytes": "uncompressed bytes"}


def record(evidence: EvidenceLog, findings: list[structure.Finding]) -> None:
    for finding in findings:
        evidence.expect(finding.reader, "ok" if finding.ok else finding.detail, equals="ok")
        if finding.ok:
            evidence.note(f"{finding.reader} read", finding.detail)


# -- L1 --------------------------------------------------------------------------------------
@pytest.mark.daily
@pytest.mark.backup_level(1)
def test_newest_is_recent(backup: BackupClient, backup_listing: BackupListing,
                          evidence: EvidenceLog) -> None:
    """L1: the newest backup is younger than ``max_age_hours`` (the RPO)."""
    newest = newest_or_fail(backup, backup_listing, evidence)
    if newest is None:
        return
    evidence.note("modified", f"{newest.modified:%Y-%m-%d %H:%M:%S} UTC")
    evidence.expect("age", round(newest.age_hours(backup_listing.listed_at), 2),
                    at_most=backup.spec.max_age_hours, unit="h",
                    source=evidence.source_of("targets", backup.name, "max_age_hours"))


@pytest.mark.daily
@pytest.mark.backup_level(1)
def test_newest_size(backup: BackupClient, backup_listing: BackupListing,
                     evidence: EvidenceLog) -> None:
    """L1: the newest backup is at least ``min_size_bytes`` and not much smaller than the
    previous one (threshold ``backup.size_drop_pct``): a sudden drop is how an empty dump,
    or a dump of the wrong database, shows up."""
    newest = newest_or_fail(backup, backup_listing, evidence)
    if newest is None:
        return
    evidence.expect("size", newest.size, at_least=backup.spec.min_size_bytes, unit="bytes",
                    source=evidence.source_of("targets", backup.name, "min_size_bytes"))
    change = size_change(backup_listing.backups)
    if change is None:
        evidence.note("previous backup", "none to compare with")
        return
    evidence.note("previous backup",
                  f"{backup_listing.backups[1].name} ({human_size(change.previous)})")
    evidence.within("backup.size_drop_pct", round(change.drop_pct, 1), unit="%",
                    default=Threshold(warn=25, crit=50))


@pytest.mark.daily
@pytest.mark.backup_level(1)
def test_retention(backup: BackupClient, backup_listing: BackupListing,
                   evidence: EvidenceLog) -> None:
    """L1: at least ``keep_min`` and at most ``keep_max`` backups are kept."""
    kept = backup_listing.backups
    spec = backup.spec
    evidence.expect("backups kept", len(kept), at_least=spec.keep_min,
                    source=evidence.source_of("targets", backup.name, "keep_min"))
    if spec.keep_max is not None:
        evidence.expect("backups kept", len(kept), at_most=spec.keep_max,
                        source=evidence.source_of("targets", backup.name, "keep_max"))
    if kept:
        evidence.note("oldest backup", f"{kept[-1].name}, "
                      f"{kept[-1].age_hours(backup_listing.listed_at) / 24:.1f} days old")


# -- L2 --------------------------------------------------------------------------------------
@pytest.mark.daily
@pytest.mark.backup_level(2)
def test_checksum(backup: BackupClient, backup_listing: BackupListing,
                  backup_recorded_checksums: RecordedChecksums, evidence: EvidenceLog) -> None:
    """L2: the newest backup's SHA-256 is the one recorded when it was written: in its
    sidecar file and/or by the object store."""
    declared = backup.spec.checksum
    if not declared:
        pytest.skip("no checksum declared (checksum: sidecar or s3): L2 does not apply")
    # The copy and its SHA-256 read the whole backup: inline (see above).
    found = newest_copy(backup, backup_listing, evidence)
    if found is None:
        return
    newest, copy = found
    actual = checksums.sha256_of(copy, Deadline.start(backup.spec.read_timeout_s))
    evidence.note("sha256", actual)
    where = evidence.source_of("targets", backup.name, "checksum")
    if "sidecar" in declared:
        content = backup_recorded_checksums.sidecar
        recorded = checksums.parse_sidecar(content) if content is not None else None
        shown = (recorded.digest if recorded else
                 "missing" if content is None else "no SHA-256 in it")
        evidence.expect(f"sha256 in {newest.name}{backup.spec.sidecar_suffix}", shown,
                        equals=actual, source=where)
    if "s3" in declared:
        stored = backup_recorded_checksums.stored
        evidence.expect("sha256 stored by S3", stored or "none (uploaded without one)",
                        equals=actual, source=where)


# -- L3 --------------------------------------------------------------------------------------
@pytest.mark.daily
@pytest.mark.backup_level(3)
def test_structure(backup: BackupClient, backup_listing: BackupListing,
                   evidence: EvidenceLog) -> None:
    """L3: the newest backup, copied locally, reads to its end: the whole gzip stream, and
    the tar listing, pg_restore --list or integrity_check of what it holds."""
    # Reads the whole backup: inline (see above).
    found = newest_copy(backup, backup_listing, evidence)
    if found is None:
        return
    findings = structure.read_structure(found[1], backup.spec.format, backup.workdir(),
                                        Deadline.start(backup.spec.read_timeout_s))
    record(evidence, findings)
    for finding in findings:
        for fact, label in FACTS.items():
            value = finding.facts.get(fact)
            if finding.ok and value not in (None, ""):
                evidence.note(label, len(value) if isinstance(value, list) else value)


@pytest.mark.weekly
@pytest.mark.backup_level(3)
def test_full_read(backup: BackupClient, backup_full_read: str, backup_listing: BackupListing,
                   evidence: EvidenceLog) -> None:
    """L3, full: every data block of the newest pg_dump is read by
    ``pg_restore -f /dev/null``, which --list alone never reaches."""
    # Reads every data block of the backup: inline (see above).
    found = newest_copy(backup, backup_listing, evidence)
    if found is None:
        return
    record(evidence, structure.read_fully(found[1], backup_full_read, backup.workdir(),
                                          Deadline.start(backup.spec.read_timeout_s)))


# -- L4 --------------------------------------------------------------------------------------
def judge_drill(result: drill.DrillResult, spec: RestoreDrill, evidence: EvidenceLog,
                where: str) -> None:
    evidence.note("restored into", result.restored_into)
    evidence.note("restored by", result.tool)
    evidence.expect("restore", "ok" if result.restored else result.error, equals="ok")
    evidence.note("drill duration", round(result.duration_s, 2), unit="s")
    evidence.expect("drill cleaned up", result.cleaned_up, equals=True)
    if not result.restored:
        return
    if result.integrity:
        evidence.expect("integrity_check of the restored file", result.integrity,
                        equals="ok")
    for table in result.tables:
        bounds = spec.expect_tables[table.name]
        if not table.exists:
            evidence.expect(f"table {table.name}", "missing", equals="present", source=where)
            continue
        if bounds.min is None and bounds.max is None:
            evidence.note(f"rows in {table.name}", table.rows)
        else:
            evidence.expect(f"rows in {table.name}", table.rows, at_least=bounds.min,
                            at_most=bounds.max, source=where)
    evidence.note("tables restored", sum(t.exists for t in result.tables))
    evidence.note("rows restored", result.rows)


@pytest.mark.weekly
@pytest.mark.backup_level(4)
def test_restore_drill(backup: BackupClient, backup_pg_drill: RestoreDrill,
                       scratch_postgres: drill.ScratchPostgres, backup_listing: BackupListing,
                       evidence: EvidenceLog) -> None:
    """L4: the newest pg_dump restores into a fresh database on the scratch server, with
    the declared tables and row counts; the database is dropped afterwards."""
    # Copies, unpacks and restores, writing into the scratch database: inline (see above).
    dump = unpacked_newest(backup, backup_listing, evidence)
    if dump is None:
        return
    result = drill.restore_postgres(dump, backup.name, backup_pg_drill, scratch_postgres)
    judge_drill(result, backup_pg_drill, evidence,
                evidence.source_of("targets", backup.name, "restore_drill", "expect_tables"))


@pytest.mark.weekly
@pytest.mark.backup_level(4)
def test_restore_drill_sqlite(backup: BackupClient, backup_sqlite_drill: RestoreDrill,
                              backup_listing: BackupListing, evidence: EvidenceLog) -> None:
    """L4: the newest SQLite backup restores into a new temporary file (every row read back,
    the indexes rebuilt) that passes integrity_check and holds the declared tables."""
    # Copies, unpacks and restores into a temporary file: inline (see above).
    database = unpacked_newest(backup, backup_listing, evidence)
    if database is None:
        return
    result = drill.restore_sqlite(database, backup_sqlite_drill, backup.workdir())
    judge_drill(result, backup_sqlite_drill, evidence,
                evidence.source_of("targets", backup.name, "restore_drill", "expect_tables"))
