"""Backups as the runbooks' nightly jobs leave them, seeded once every server is up.

- ``backups/postgres``: ``pg_dump -Fc | gzip`` of the sandbox's PostgreSQL database, one a
  night for five nights, each with a ``.sha256`` sidecar (read through ``file://``);
- ``backups/sqlite``: ERPFTS's ``sqlite3 erpfts.db ".backup"``, gzipped (read over ssh from
  the sandbox sshd, as from the ERPFTS host);
- ``backups/chroma``: a tar.gz of a ChromaDB data directory (``file://``);
- the bucket's ``backups/postgres/``: the same dumps in S3, uploaded with their SHA-256, the
  bucket versioned and replicated; a DynamoDB table with PITR and an on-demand backup.

It also makes what a restore drill needs: a scratch database ``scratch`` on the sandbox's
PostgreSQL, reached by a role that may create databases owned by the application's role.
No process of its own: everything happens in :meth:`BackupSeeder.inject`, which runs after
every component is ready, since it dumps from PostgreSQL and uploads to the moto server.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shutil
import sqlite3
import subprocess
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from opsverify.sandbox import sqlite as sqlite_seed
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import APP_ROLE, DYNAMODB_TABLE, FAULTS_OF, MISSING_ROLE, TOO_MANY
from opsverify.sandbox.moto import ACCESS_KEY_ID
from opsverify.sandbox.postgres import WAL_ARCHIVE, bindir
from opsverify.sandbox.process import port_open, wait_until
from opsverify.sandbox.spec import BackupsComponent

# psycopg is imported by the functions that use it: a sandbox imports every
# component (runtime.COMPONENTS), and many start only some of them.
if TYPE_CHECKING:
    import psycopg

RESTORE_ROLE = "opsverify_restore"
SCRATCH_DATABASE = "scratch"
NIGHTLY = 5  # dumps kept normally (the environment keeps 3 to 7)
BACKUP_HOUR = 2  # the nightly job runs at 02:00


class BackupSeeder:
    """Writes the sandbox's backups and the scratch database; no server of its own."""

    name: ClassVar[str] = "backups"
    install_hint: ClassVar[str] = "apt-get install postgresql-client"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["backups"]

    def __init__(self, spec: BackupsComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.ctx = ctx
        self.port = 0  # files and seeded state only: nothing listens
        self.dir = ctx.workdir / "backups"
        self.password = ctx.password
        self.now = datetime.now(UTC)

    def variables(self) -> dict[str, str]:
        out = {"SANDBOX_BACKUP_DIR": str(self.dir)}
        if "postgres" in self.ctx.ports:
            out["SANDBOX_SCRATCH_DSN"] = (
                f"postgresql://{RESTORE_ROLE}:{self.password}@127.0.0.1:"
                f"{self.ctx.ports['postgres']}/{SCRATCH_DATABASE}")
        return out

    def prepare(self) -> None:
        if self._pg_dump() is None:
            raise FileNotFoundError(f"pg_dump not found ({self.install_hint})")
        for sub in ("postgres", "sqlite", "chroma", "sources"):
            (self.dir / sub).mkdir(parents=True)

    def launch(self) -> None:
        pass

    def ready(self) -> None:
        pass

    def inject(self, faults: frozenset[str]) -> None:
        """Seed every backup, each fault applied as its backup is written."""
        self.now = datetime.now(UTC)
        dumps: dict[str, bytes] = {}
        if self._postgres_up():
            self._scratch()
            self._archive_wal(failing="wal-archive-failing" in faults)
            dumps = self._dumps(faults)
        self._sqlite(corrupt="corrupt-sqlite-backup" in faults)
        self._chroma(truncated="truncated-backup" in faults)
        if self._moto_up():
            self._s3(dumps, "empty-dump" in faults)
            self._dynamodb(pitr="dynamodb-pitr-off" not in faults)

    def stop(self) -> None:
        pass  # files live in the work directory, which the sandbox removes

    # -- PostgreSQL ---------------------------------------------------------------------
    def _postgres_up(self) -> bool:
        port = self.ctx.ports.get("postgres")
        return port is not None and port_open(port)

    def _admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        return psycopg.connect(host=str(self.ctx.workdir / "pg-socket"),
                               port=self.ctx.ports["postgres"], user="postgres", dbname=dbname,
                               autocommit=True, connect_timeout=10)

    def _scratch(self) -> None:
        """The drill's role: it may create databases, owned by the application's role as in
        production (so the dump's ownership restores), and read statistics; nothing else."""
        from psycopg import sql

        with self._admin() as conn:
            conn.execute("SET log_statement = 'none'")  # the password stays out of the log
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                sql.Identifier(RESTORE_ROLE), sql.Literal(self.password)))
            conn.execute("RESET log_statement")
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP_ROLE),
                                                          sql.Identifier(RESTORE_ROLE)))
            # The daily capacity checks of scratch-db count every role's sessions; the
            # statistics grant only (pg_hba.conf stays out of its reach).
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(
                sql.Identifier(RESTORE_ROLE)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(SCRATCH_DATABASE), sql.Identifier(RESTORE_ROLE)))

    def _archive_wal(self, failing: bool) -> None:
        """Switch to a new WAL segment and wait until the archiver has dealt with it: it
        is archived, or (``wal-archive-failing``) its archiving failed."""
        archive = self.ctx.workdir / WAL_ARCHIVE
        with self._admin() as conn:
            if conn.execute("SHOW archive_mode").fetchone() == ("off",):
                return
            if failing:
                shutil.rmtree(archive, ignore_errors=True)
            conn.execute("CHECKPOINT")  # WAL to switch away from
            conn.execute("SELECT pg_switch_wal()")

            def settled() -> bool:
                row = conn.execute("SELECT archived_count, failed_count FROM pg_stat_archiver"
                                   ).fetchone()
                return row is not None and (row[1] > 0 if failing else row[0] > 0)

            wait_until(settled, timeout_s=15, what="the WAL archiver")

    def _pg_dump(self) -> Path | None:
        binaries = bindir()
        if binaries is not None and (binaries / "pg_dump").exists():
            return binaries / "pg_dump"
        found = shutil.which("pg_dump")
        return Path(found) if found else None

    def _dump(self, database: str) -> bytes:
        binary = self._pg_dump()
        assert binary is not None
        env = {**os.environ, "PGHOST": str(self.ctx.workdir / "pg-socket"),
               "PGPORT": str(self.ctx.ports["postgres"]), "PGUSER": "postgres"}
        return subprocess.run([str(binary), "--format=custom", "--dbname", database],
                              env=env, capture_output=True, check=True, timeout=60).stdout

    def _database(self) -> str:
        with self._admin() as conn:
            row = conn.execute("SELECT datname FROM pg_database WHERE datname NOT IN "
                               "('postgres', 'template0', 'template1', %s) ORDER BY oid LIMIT 1",
                               (SCRATCH_DATABASE,)).fetchone()
        assert row is not None, "the sandbox PostgreSQL has no application database"
        return str(row[0])

    def _dumps(self, faults: frozenset[str]) -> dict[str, bytes]:
        """Nightly dumps with sidecars; returns the dumps S3 also gets."""
        database = self._database()
        dump = self._dump(database)
        nights = TOO_MANY if "retention-exceeded" in faults else NIGHTLY
        late = timedelta(days=3) if "stale-backup" in faults else timedelta(0)
        newest = dump
        if "restore-fails" in faults:
            newest = self._dump_with_missing_role(database)
        written: dict[str, bytes] = {}
        for night in range(nights):
            when = self._night(night) - late
            name = f"full_{when:%Y%m%d_%H%M}.dump.gz"
            content = _gzip(newest if night == 0 else dump, when)
            path = self.dir / "postgres" / name
            _write(path, content, when)
            _sidecar(path, content, when)
            if night == 0 and "checksum-mismatch" in faults:
                # Rewritten (re-compressed at another time) after its checksum was recorded:
                # still a valid dump, but not the bytes the job vouched for.
                _write(path, _gzip(newest, when + timedelta(minutes=7)), when)
            written[name] = content
        return {name: content for name, content in list(written.items())[:3]}

    def _dump_with_missing_role(self, database: str) -> bytes:
        """A dump taken while a table belonged to a role that has since been dropped, as a
        hand-made ETL role on the old primary that no restore server ever had."""
        from psycopg import sql

        table = sql.Identifier("etl_watermarks")
        with self._admin(database) as conn:
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(MISSING_ROLE)))
            conn.execute(sql.SQL("CREATE TABLE {} (source text PRIMARY KEY, "
                                 "watermark timestamptz)").format(table))
            conn.execute(sql.SQL("INSERT INTO {} VALUES ('prices', now())").format(table))
            conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                table, sql.Identifier(MISSING_ROLE)))
        try:
            return self._dump(database)
        finally:
            with self._admin(database) as conn:
                conn.execute(sql.SQL("DROP TABLE {}").format(table))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(MISSING_ROLE)))

    def _night(self, nights_ago: int) -> datetime:
        """02:00 UTC of the last night (or the one before, if it is not yet 03:00)."""
        today = self.now.replace(hour=BACKUP_HOUR, minute=0, second=0, microsecond=0)
        last = today if self.now - today >= timedelta(hours=1) else today - timedelta(days=1)
        return last - timedelta(days=nights_ago)

    # -- SQLite ----------------------------------------------------------------------------
    def _sqlite(self, corrupt: bool) -> None:
        source = self.dir / "sources" / "erpfts.db"
        sqlite_seed.seed(source)
        for night in range(3):
            when = self._night(night) + timedelta(minutes=30)
            snapshot = self.dir / "sources" / f"erpfts_{night}.db"
            with sqlite3.connect(source) as src, sqlite3.connect(snapshot) as dest:
                src.backup(dest)  # what `sqlite3 erpfts.db ".backup ..."` does
            src.close()
            dest.close()
            if night == 0 and corrupt:
                sqlite_seed.corrupt(snapshot)  # the live file was damaged: so is its backup
            content = _gzip(snapshot.read_bytes(), when)
            path = self.dir / "sqlite" / f"erpfts_{when:%Y%m%d_%H%M}.db.gz"
            _write(path, content, when)
            _sidecar(path, content, when)

    # -- a ChromaDB data directory -------------------------------------------------------
    def _chroma(self, truncated: bool) -> None:
        rng = random.Random(7)  # the same "embeddings" every run: sizes stay comparable
        source = self.dir / "sources" / "chroma"
        segment = source / "6f1a3c1e-collection-knowledge_chunks"
        segment.mkdir(parents=True)
        with sqlite3.connect(source / "chroma.sqlite3") as conn:
            conn.execute("CREATE TABLE embeddings (id INTEGER PRIMARY KEY, segment_id TEXT, "
                         "embedding_id TEXT)")
            conn.executemany("INSERT INTO embeddings (segment_id, embedding_id) VALUES (?, ?)",
                             [(segment.name, f"knowledge_chunks-{i}") for i in range(800)])
        conn.close()
        for part, size in (("data_level0.bin", 96_000), ("header.bin", 100),
                           ("length.bin", 3_200), ("link_lists.bin", 8_000)):
            (segment / part).write_bytes(rng.randbytes(size))
        for night in range(3):
            when = self._night(night) + timedelta(minutes=45)
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as archive:
                archive.add(source, arcname="chroma")
            content = _gzip(buffer.getvalue(), when)
            if night == 0 and truncated:
                content = content[: len(content) * 85 // 100]  # the disk filled up mid-write
            path = self.dir / "chroma" / f"chroma_{when:%Y%m%d_%H%M}.tar.gz"
            _write(path, content, when)
            _sidecar(path, content, when)  # the job checksummed what it had written

    # -- moto: S3 and DynamoDB -------------------------------------------------------------
    def _moto_up(self) -> bool:
        port = self.ctx.ports.get("moto")
        return port is not None and port_open(port)

    def _client(self, service: str) -> Any:
        import boto3  # deferred: a run without AWS targets never loads it
        from botocore.config import Config

        return boto3.client(
            service, endpoint_url=f"http://127.0.0.1:{self.ctx.ports['moto']}",
            region_name=self.spec.region, aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=self.password,
            config=Config(connect_timeout=5, read_timeout=30, retries={"total_max_attempts": 1},
                          s3={"addressing_style": "path"}))

    def _s3(self, dumps: dict[str, bytes], empty: bool) -> None:
        """The bucket keeps versions and replicates; the dumps go under backups/postgres/,
        oldest first, each with its SHA-256 stored by S3."""
        s3 = self._client("s3")
        bucket, replica = self.spec.bucket, f"{self.spec.bucket}-replica"
        location = ({} if self.spec.region == "us-east-1" else
                    {"CreateBucketConfiguration": {"LocationConstraint": self.spec.region}})
        s3.create_bucket(Bucket=replica, **location)
        for name in (bucket, replica):
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_replication(Bucket=bucket, ReplicationConfiguration={
            "Role": "arn:aws:iam::123456789012:role/s3-replication",
            "Rules": [{"ID": "offsite-copy", "Status": "Enabled", "Priority": 1,
                       "Filter": {"Prefix": ""},
                       "DeleteMarkerReplication": {"Status": "Disabled"},
                       "Destination": {"Bucket": f"arn:aws:s3:::{replica}"}}]})
        uploads = sorted(dumps.items())
        if empty:
            # pg_dump ran against the maintenance database: valid, and nothing in it.
            when = self.now - timedelta(minutes=20)
            uploads.append((f"full_{when:%Y%m%d_%H%M}.dump.gz", _gzip(self._dump("postgres"),
                                                                        when)))
        for name, content in uploads:
            s3.put_object(Bucket=bucket, Key=f"backups/postgres/{name}", Body=content,
                          ChecksumAlgorithm="SHA256")

    def _dynamodb(self, pitr: bool) -> None:
        dynamodb = self._client("dynamodb")
        dynamodb.create_table(
            TableName=DYNAMODB_TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "project_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "project_id", "AttributeType": "S"}])
        for i in range(5):
            dynamodb.put_item(TableName=DYNAMODB_TABLE, Item={
                "project_id": {"S": f"proj-{i:04d}"}, "status": {"S": "generated"}})
        if pitr:
            dynamodb.update_continuous_backups(
                TableName=DYNAMODB_TABLE,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
        dynamodb.create_backup(TableName=DYNAMODB_TABLE,
                               BackupName=f"nightly-{self._night(0):%Y%m%d}")


def _gzip(data: bytes, when: datetime) -> bytes:
    """gzip as the job ran it at ``when`` (the header records that time)."""
    return gzip.compress(data, compresslevel=6, mtime=int(when.timestamp()))


def _write(path: Path, content: bytes, when: datetime) -> None:
    path.write_bytes(content)
    stamp = when.timestamp()
    os.utime(path, (stamp, stamp))


def _sidecar(path: Path, content: bytes, when: datetime) -> None:
    """``sha256sum name > name.sha256``, as the backup job writes it."""
    sidecar = path.with_name(path.name + ".sha256")
    _write(sidecar, f"{hashlib.sha256(content).hexdigest()}  {path.name}\n".encode(), when)

