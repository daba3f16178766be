"""The backup engine on real files and a real PostgreSQL: the schema, the readers, what each
structure reader catches (a truncated gzip and a tar cut on a header boundary, although
their headers are fine; a custom dump whose TOC lists but whose data is cut), the scratch
refusal before any connection, the SQLite drill, and the per-backup levels."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import socket
import sqlite3
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.backup import checksums, drill, levels, structure
from opsverify.backup.presence import size_change
from opsverify.errors import TargetUnavailable
from opsverify.sandbox import sqlite as sqlite_seed
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.postgres import PostgresServer, bindir
from opsverify.sandbox.spec import PostgresComponent
from opsverify.targets.backup import (
    BackupClient,
    BackupTarget,
    RestoreDrill,
    TooLarge,
    drill_refusal,
)
from opsverify.targets.base import Deadline
from opsverify.targets.postgres import PostgresTarget
from tests.conftest import HungServer

NO_POSTGRES = pytest.mark.skipif(bindir() is None,
                                 reason="PostgreSQL not found (apt-get install postgresql)")


def target(**keys: Any) -> BackupTarget:
    base: dict[str, Any] = {"type": "backup", "location": "file:///backups/postgres",
                            "format": "pg_dump_custom_gz", "max_age_hours": 26}
    return BackupTarget.model_validate(base | keys)


def deadline(seconds: float = 30) -> Deadline:
    return Deadline.start(seconds)


# -- schema --------------------------------------------------------------------------------
def test_schema_accepts_the_design_example_and_shorthands() -> None:
    spec = target(location="ssh://ops@db1.example.com/backup/postgres", pattern="full_*.dump.gz",
                  min_size_bytes=1048576, keep_min=7, checksum="sidecar",
                  restore_drill={"into": "scratch-db", "expect_tables": ["runs", "models"]})
    assert spec.scheme == "ssh"
    assert spec.directory == "/backup/postgres"
    assert spec.address() == "ssh://ops@db1.example.com:22/backup/postgres"
    assert spec.checksum == ["sidecar"]
    assert spec.restore_drill is not None
    assert spec.restore_drill.expect_tables["runs"].describe() == "exists"
    s3 = target(location="s3://ts-backups/nightly", checksum=["s3", "sidecar"],
                access_key_id="AKIAEXAMPLE", secret_access_key="s3cr3t-key-value")
    assert s3.directory == "nightly/"
    assert s3.secrets() == ["AKIAEXAMPLE", "s3cr3t-key-value"]


@pytest.mark.parametrize(("keys", "message"), [
    ({"location": "ftp://host/backups"}, "file://, ssh:// or s3://"),
    ({"location": "file://relative/dir"}, "file:///absolute/path"),
    ({"location": "ssh://ops:pw@db1/backups"}, "password in an ssh:// URL"),
    ({"location": "s3://Bad_Bucket/x"}, "valid bucket name"),
    ({"ssh_identity_file": "/k"}, "ssh:// locations only"),
    ({"endpoint_url": "http://127.0.0.1:9000"}, "for s3:// locations only"),
    ({"checksum": "s3"}, "checksum: s3 needs an s3:// location"),
    ({"keep_min": 7, "keep_max": 3}, "keep_max (3) is below keep_min (7)"),
    ({"restore_drill": {"expect_tables": ["runs"]}}, "needs into: a postgres target"),
    ({"format": "sqlite_gz", "restore_drill": {"into": "db", "expect_tables": ["t"]}},
     "leave out into"),
    ({"format": "tar_gz", "restore_drill": {"expect_tables": ["t"]}}, "not tar_gz"),
    ({"restore_drill": {"into": "x", "expect_tables": []}}, "at least 1 item"),
    ({"format": "zip"}, "Input should be"),
    ({"max_age": 26}, "Extra inputs are not permitted"),
])
def test_schema_errors_say_what_is_expected(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        target(**keys)


def test_drill_refusal_allows_only_a_scratch_postgres_target() -> None:
    spec = target(restore_drill={"into": "db", "expect_tables": ["runs"]})
    pg = PostgresTarget(type="postgres", dsn="postgresql://u:p@127.0.0.1:5432/app")
    scratch = pg.model_copy(update={"scratch": True})
    assert "not marked scratch: true" in str(drill_refusal(spec, {"db": pg}))
    assert "not a target" in str(drill_refusal(spec, {}))
    assert "is a backup target" in str(drill_refusal(spec, {"db": spec}))
    assert drill_refusal(spec, {"db": scratch}) is None


def test_scratch_postgres_refuses_a_non_scratch_target_before_connecting(
        hung_server: HungServer) -> None:
    spec = PostgresTarget(type="postgres",
                          dsn=f"postgresql://u:p@127.0.0.1:{hung_server.port}/app")
    with pytest.raises(drill.ScratchRefused, match="not marked scratch: true"):
        drill.ScratchPostgres("db", spec, 1.0)
    time.sleep(0.2)
    assert hung_server.accepted == []  # not even a TCP connection was made


# -- readers -------------------------------------------------------------------------------
def write(path: Path, content: bytes, hours_ago: float) -> None:
    path.write_bytes(content)
    stamp = time.time() - hours_ago * 3600
    os.utime(path, (stamp, stamp))


def test_file_location_lists_matching_backups_newest_first(tmp_path: Path) -> None:
    write(tmp_path / "full_1.dump.gz", b"x" * 100, 50)
    write(tmp_path / "full_2.dump.gz", b"x" * 90, 26)
    write(tmp_path / "full_3.dump.gz", b"x" * 5, 1)
    write(tmp_path / "full_3.dump.gz.sha256", b"0" * 64, 1)
    write(tmp_path / "notes.txt", b"", 0)
    client = BackupClient("dumps", target(location=f"file://{tmp_path}",
                                          pattern="full_*"), 2)
    client.check()
    names = [b.name for b in client.backups()]
    assert names == ["full_3.dump.gz", "full_2.dump.gz", "full_1.dump.gz"]
    newest = client.newest()
    assert newest is not None
    assert 0.9 < newest.age_hours(datetime.now(UTC)) < 1.1
    change = size_change(client.backups())
    assert change is not None
    assert round(change.drop_pct, 1) == 94.4
    copy = client.local_copy(newest)
    assert copy.read_bytes() == b"xxxxx"
    assert tmp_path not in copy.parents
    client.close()
    assert not copy.exists()  # the temporary copy goes with the client


def test_copies_are_capped_and_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    write(tmp_path / "full_1.dump.gz", b"x" * 2048, 1)
    client = BackupClient("dumps", target(location=f"file://{tmp_path}", max_copy_bytes=1024), 2)
    newest = client.newest()
    assert newest is not None
    with pytest.raises(TooLarge):
        client.local_copy(newest)
    client.close()
    gone = BackupClient("dumps", target(location=f"file://{tmp_path}/nope"), 2)
    with pytest.raises(TargetUnavailable, match=r"^dumps \(file://.*/nope\): no such directory$"):
        gone.check()


def test_sidecars_in_the_formats_sha256sum_writes() -> None:
    digest = hashlib.sha256(b"dump").hexdigest()
    assert checksums.parse_sidecar(f"{digest}  full.dump.gz\n".encode()) == \
        checksums.Sidecar(digest, "full.dump.gz")
    assert checksums.parse_sidecar(f"{digest.upper()} *full.dump.gz".encode()) == \
        checksums.Sidecar(digest, "full.dump.gz")
    assert checksums.parse_sidecar(digest.encode()) == checksums.Sidecar(digest)
    assert checksums.parse_sidecar(b"") is None
    assert checksums.parse_sidecar(b"md5 d41d8cd98f00b204e9800998ecf8427e") is None


# -- structure: headers that look fine -----------------------------------------------------
def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_gzip_cut_mid_stream_is_caught_although_its_header_is_fine(tmp_path: Path) -> None:
    whole = gzip.compress(os.urandom(200_000))
    cut = tmp_path / "chroma.tar.gz"
    cut.write_bytes(whole[: len(whole) * 85 // 100])
    with gzip.open(cut) as stream:
        assert stream.read(1000)  # the header and the first blocks read fine
    finding = structure.gunzip(cut, tmp_path / "out", deadline())
    assert not finding.ok
    assert finding.detail.startswith("ends early after ")
    assert "end-of-stream marker" in finding.detail
    (tmp_path / "whole.gz").write_bytes(whole)
    assert structure.gunzip(tmp_path / "whole.gz", tmp_path / "out2", deadline()).ok


def test_a_tar_cut_on_a_header_boundary_lists_quietly_but_is_caught(tmp_path: Path) -> None:
    data = tarball({f"chroma/seg{i}.bin": os.urandom(1024) for i in range(4)})
    # Each member is one 512-byte header and two data blocks: cut after the second.
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: 2 * 3 * 512])
    with tarfile.open(cut) as archive:
        assert len(archive.getmembers()) == 2  # tar -t shows two members and no error
    finding = structure.tar_listing(cut, deadline())
    assert (finding.ok, finding.facts["members"]) == (False, 2)
    assert "no end-of-archive marker" in finding.detail
    mid = tmp_path / "mid.tar"
    mid.write_bytes(data[: 2 * 3 * 512 + 700])
    assert not structure.tar_listing(mid, deadline()).ok
    whole = tmp_path / "whole.tar"
    whole.write_bytes(data)
    listed = structure.tar_listing(whole, deadline())
    assert listed.ok
    assert listed.facts == {"members": 4, "files": 4, "file_bytes": 4096}


# -- PostgreSQL: real dumps, a real scratch server -----------------------------------------
@dataclass
class Cluster:
    server: PostgresServer
    dumps: dict[str, Path] = field(default_factory=dict)

    def admin(self, dbname: str = "postgres") -> Any:
        return self.server._admin(dbname)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The sandbox's PostgreSQL (seeded like the forecasting runbook's), with a scratch
    role and real dumps: the application's, an empty database's, and a truncated one."""
    workdir = Path(tempfile.mkdtemp(prefix="opsverify-test-"))
    os.chmod(workdir, 0o755)  # noqa: S103 - PostgreSQL runs as its own user
    server = PostgresServer(PostgresComponent(),
                            SandboxContext(workdir, "pw-test-7d1", frozenset()))
    server.prepare()
    server.launch()
    try:
        server.ready()
        with server._admin() as conn:
            conn.execute("CREATE ROLE drill LOGIN CREATEDB PASSWORD 'pw-test-7d1'")
            conn.execute("GRANT ts_app TO drill")
        out = Cluster(server)
        env = {**os.environ, "PGHOST": str(server.sockdir), "PGPORT": str(server.port),
               "PGUSER": "postgres"}
        bindir_ = bindir()
        assert bindir_ is not None
        for name, database in (("full", "ts_forecast_system"), ("empty", "postgres")):
            path = workdir / f"{name}.dump"
            subprocess.run([str(bindir_ / "pg_dump"), "-Fc", "-d", database, "-f", str(path)],
                           env=env, check=True, timeout=60)
            out.dumps[name] = path
        data = out.dumps["full"].read_bytes()
        out.dumps["cut"] = workdir / "cut.dump"
        out.dumps["cut"].write_bytes(data[: len(data) * 80 // 100])
        yield out
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def scratch_spec(cluster: Cluster, scratch: bool = True) -> PostgresTarget:
    return PostgresTarget(type="postgres", scratch=scratch, dsn=(
        f"postgresql://drill:pw-test-7d1@127.0.0.1:{cluster.server.port}/postgres"))


@NO_POSTGRES
def test_an_empty_dump_is_a_valid_archive_with_no_table_data(cluster: Cluster) -> None:
    full = structure.pg_restore_list(cluster.dumps["full"], deadline())
    empty = structure.pg_restore_list(cluster.dumps["empty"], deadline())
    assert full.ok
    assert full.facts["tables_with_data"] == 4
    assert "public.runs" in full.facts["tables"]
    assert empty.ok
    assert empty.facts["tables_with_data"] == 0
    assert cluster.dumps["empty"].stat().st_size * 10 < cluster.dumps["full"].stat().st_size


@NO_POSTGRES
def test_a_cut_dump_lists_its_toc_but_fails_the_full_read(cluster: Cluster) -> None:
    cut = cluster.dumps["cut"]
    assert structure.pg_restore_list(cut, deadline()).ok  # the TOC is at the start
    full = structure.pg_restore_full(cut, deadline())
    assert not full.ok
    assert "end of file" in full.detail or "could not read" in full.detail, full.detail
    assert structure.pg_restore_full(cluster.dumps["full"], deadline()).ok


@NO_POSTGRES
def test_postgres_drill_restores_counts_and_drops_its_database(cluster: Cluster) -> None:
    spec = RestoreDrill(into="scratch-db", database_owner="ts_app",
                        expect_tables={"runs": {"min": 200}, "models": {}, "nope": {}})
    scratch = drill.ScratchPostgres("scratch-db", scratch_spec(cluster), 5)
    result = drill.restore_postgres(cluster.dumps["full"], "dumps", spec, scratch)
    scratch.close()
    assert result.restored, result.error
    assert result.restored_into.startswith("scratch-db/opsverify_drill_dumps_")
    assert [(t.name, t.exists, t.rows) for t in result.tables] == [
        ("runs", True, 240), ("models", True, 40), ("nope", False, 0)]
    assert result.cleaned_up
    assert result.tool.startswith("pg_restore 15")
    with cluster.admin() as conn:
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE "
                            "'opsverify_drill_%'").fetchone()
    assert left == (0,)


@NO_POSTGRES
def test_postgres_drill_failure_is_reported_and_still_cleaned_up(cluster: Cluster) -> None:
    # Owned by ts_app, restored into a database the drill role owns: ts_app may not
    # create in its schema, so the dump's ALTER ... OWNER TO fails, as it would for real.
    spec = RestoreDrill(into="scratch-db", expect_tables=["runs"])
    scratch = drill.ScratchPostgres("scratch-db", scratch_spec(cluster), 5)
    result = drill.restore_postgres(cluster.dumps["full"], "dumps", spec, scratch)
    scratch.close()
    assert not result.restored
    assert result.error.startswith("permission denied for schema public (in: ALTER TABLE")
    assert result.cleaned_up


# -- SQLite drill --------------------------------------------------------------------------
def test_sqlite_drill_brings_rows_back_from_a_backup_with_a_torn_index(tmp_path: Path) -> None:
    backup = tmp_path / "erpfts.db"
    sqlite_seed.seed(backup)
    sqlite_seed.corrupt(backup)  # the index chunks_document: integrity_check fails
    assert not structure.sqlite_integrity(backup, deadline()).ok
    spec = RestoreDrill(expect_tables={"documents": {"min": 40}, "chunks": {"min": 500}})
    result = drill.restore_sqlite(backup, spec, tmp_path)
    assert result.restored
    assert result.integrity == "ok"
    assert [(t.name, t.rows) for t in result.tables] == [("documents", 40), ("chunks", 800)]
    assert result.cleaned_up
    assert not (tmp_path / "restored.db").exists()


def test_sqlite_drill_of_a_file_that_is_not_a_database_fails(tmp_path: Path) -> None:
    bogus = tmp_path / "erpfts.db"
    bogus.write_bytes(b"not sqlite" * 1000)
    result = drill.restore_sqlite(bogus, RestoreDrill(expect_tables=["documents"]), tmp_path)
    assert not result.restored
    assert "not a database" in result.error
    with sqlite3.connect(tmp_path / "ok.db") as conn:
        conn.execute("CREATE TABLE documents (id INTEGER)")
    conn.close()
    assert structure.sqlite_integrity(tmp_path / "ok.db", deadline()).ok


# -- levels --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    target: str
    outcome: str
    level: str
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def evidence(self) -> list[dict[str, Any]]:
        return [{"name": "backup.level", "value": self.level, "unit": ""},
                *({"name": k, "value": v, "unit": "h" if k == "age" else ""}
                  for k, v in self.extra)]


def test_highest_level_is_the_last_pass_before_the_first_failure() -> None:
    found = levels.summarize([
        Check("dumps", "PASS", "L1", (("newest backup", "full_2.dump.gz"), ("age", 22.56))),
        Check("dumps", "WARN", "L1"), Check("dumps", "PASS", "L2"),
        Check("dumps", "FAIL", "L3"), Check("dumps", "PASS", "L4"),
        Check("chroma", "PASS", "L1"), Check("chroma", "SKIP", "L2"),
        Check("chroma", "PASS", "L3"),
        Check("s3", "ERROR", "L1"), Check("s3", "PASS", "L2"),
        Check("weekly", "PASS", "L3"), Check("weekly", "PASS", "L4"),
        Check("", "PASS", "L1"), Check("db", "PASS", "L9"),
    ])
    assert list(found) == ["dumps", "chroma", "s3", "weekly"]
    assert found["dumps"].to_dict() == {
        "level_proven": "L2",
        "levels": {"L1": "PASS", "L2": "PASS", "L3": "FAIL", "L4": "PASS"},
        "evidence": {"newest backup": "full_2.dump.gz", "age": "22.6 h"}}
    assert found["chroma"].levels["L2"] == "n/a"  # no checksum declared: it does not stop L3
    assert found["chroma"].proven == "L3"
    assert found["s3"].proven == "none"
    # A run of the weekly checks alone has not proven L1: a restore says nothing of its age.
    assert found["weekly"].proven == "none"
    assert found["dumps"].line() == "dumps: L2 proven (L1 PASS, L2 PASS, L3 FAIL, L4 PASS)"
    assert found["chroma"].line() == "chroma: L3 proven (L1 PASS, L2 n/a, L3 PASS, L4 not run)"


# -- deadlines -----------------------------------------------------------------------------
class DripServer:
    """An HTTP server that answers every request with 200 and a 1 MiB body, one byte every
    0.1 s: a store that keeps a download alive without ever finishing it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port: int = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n"
                         b"Content-Type: application/octet-stream\r\n\r\n")
            while not self.stop.is_set():
                try:
                    conn.sendall(b"x")
                except OSError:
                    return
                time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_dripping_s3_download_is_cut_at_its_deadline(tmp_path: Path) -> None:
    server = DripServer()
    spec = target(location="s3://ts-backups/nightly/", endpoint_url=f"http://127.0.0.1:"
                  f"{server.port}", access_key_id="AKIAEXAMPLE",
                  secret_access_key="drip-secret-value", read_timeout_s=1.5)
    client = BackupClient("s3-dumps", spec, 1.0)
    started = time.monotonic()
    try:
        with pytest.raises(TargetUnavailable) as caught:
            client.location.copy("full.dump.gz", tmp_path / "copy", 1 << 30, 1.5)
    finally:
        client.close()
        server.close()
    assert time.monotonic() - started < 3.5
    assert str(caught.value) == (
        f"s3-dumps (s3://ts-backups/nightly/ via 127.0.0.1:{server.port}): downloading "
        "full.dump.gz took more than 1.5 s (read_timeout_s)")
