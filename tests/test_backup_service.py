"""Service-side backup checks against real servers in good and bad states: S3 versioning and
replication and DynamoDB PITR and on-demand backups on a real moto server, Redis's LASTSAVE
on a real redis-server, and whether PostgreSQL archives WAL as its target declares (a real
primary and standby; a failing archive_command is covered in test_backup_sandbox.py)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from opsverify.backup.service import WalArchiver
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.moto import MotoServer
from opsverify.sandbox.redis import RedisServer
from opsverify.sandbox.spec import MotoComponent, RedisComponent
from tests.conftest import Project, Result, outcomes, running

SECRET = "moto-backup-secret-93a1"
BUCKET = "gogooku3-data"
TABLE = "t-developer-projects"
CLOUD = """
settings: {timeout_s: 3}
targets:
  datasets:
    type: s3
    endpoint_url: ${SANDBOX_AWS_ENDPOINT}
    region: eu-west-1
    bucket: gogooku3-data
    access_key_id: ${SANDBOX_AWS_ACCESS_KEY_ID}
    secret_access_key: ${SANDBOX_AWS_SECRET_ACCESS_KEY}
  cloud:
    type: aws
    endpoint_url: ${SANDBOX_AWS_ENDPOINT}
    region: eu-west-1
    access_key_id: ${SANDBOX_AWS_ACCESS_KEY_ID}
    secret_access_key: ${SANDBOX_AWS_SECRET_ACCESS_KEY}
"""


def run_checks(project: Project, env: str, files: tuple[str, ...],
               variables: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    for name in files:
        project.copy_check(f"checks/backup/{name}")
    return project.run_checks("svc", env, "-rs", env=variables)



def failing(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"] if m["verdict"] == "FAIL"}


# -- S3 and DynamoDB on moto ---------------------------------------------------------------
@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A real moto server, seeded like the sandbox's (an unversioned bucket, no table)."""
    server = MotoServer(MotoComponent(bucket=BUCKET),
                        SandboxContext(tmp_path_factory.mktemp("moto"), SECRET, frozenset()))
    yield from running(server)


@pytest.fixture
def cloud(moto: MotoServer) -> MotoServer:
    moto.reset()
    return moto


def test_s3_versioning_and_replication(project: Project, cloud: MotoServer) -> None:
    files = ("test_s3.py",)
    result, checks = run_checks(project, CLOUD, files, cloud.variables())
    assert result.returncode == 1, result.output
    assert outcomes(checks) == {"test_versioning[datasets]": "FAIL",
                                "test_replication[datasets]": "FAIL"}
    assert failing(checks["test_versioning[datasets]"]) == {"versioning": "never enabled"}
    assert failing(checks["test_replication[datasets]"]) == {"enabled replication rules": 0}

    s3 = cloud.client("s3")
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"})
    _, checks = run_checks(project, CLOUD, files, cloud.variables())
    assert failing(checks["test_versioning[datasets]"]) == {"versioning": "Suspended"}

    replica = f"{BUCKET}-replica"
    s3.create_bucket(Bucket=replica,
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for name in (BUCKET, replica):
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_replication(Bucket=BUCKET, ReplicationConfiguration={
        "Role": "arn:aws:iam::123456789012:role/replication",
        "Rules": [{"ID": "offsite", "Status": "Enabled", "Priority": 1,
                   "Filter": {"Prefix": "backups/"},
                   "DeleteMarkerReplication": {"Status": "Disabled"},
                   "Destination": {"Bucket": f"arn:aws:s3:::{replica}"}}]})
    result, checks = run_checks(project, CLOUD, files, cloud.variables())
    assert result.returncode == 0, result.output
    rule = next(m for m in checks["test_replication[datasets]"]["evidence"]
                if m["name"] == "rule offsite")
    # moto 5.2 answers every rule's filter with an empty prefix: none is shown.
    assert rule["value"].startswith(f"Enabled → arn:aws:s3:::{replica}")
    assert SECRET not in result.output


def test_dynamodb_pitr_and_on_demand_backups(project: Project, cloud: MotoServer) -> None:
    files = ("test_aws.py",)
    result, checks = run_checks(project, CLOUD, files, cloud.variables())
    assert result.returncode == 0, result.output
    assert set(outcomes(checks).values()) == {"SKIP"}
    assert "no DynamoDB table in eu-west-1: nothing to back up" in result.stdout

    dynamodb = cloud.client("dynamodb")
    dynamodb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    result, checks = run_checks(project, CLOUD, files, cloud.variables())
    assert result.returncode == 1
    assert failing(checks["test_dynamodb_pitr[cloud]"]) == {
        f"{TABLE}: point-in-time recovery": "DISABLED"}
    assert failing(checks["test_dynamodb_backup_recent[cloud]"]) == {
        f"{TABLE}: on-demand backups": 0}

    dynamodb.update_continuous_backups(
        TableName=TABLE, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    dynamodb.create_backup(TableName=TABLE, BackupName="nightly")
    result, checks = run_checks(project, CLOUD, files, cloud.variables())
    assert result.returncode == 0, result.output
    assert set(outcomes(checks).values()) == {"PASS"}

    # The same backup, judged against an RPO shorter than its age.
    time.sleep(1.0)
    strict = CLOUD + "    thresholds: {backup.dynamodb_backup_age_h: {crit: 0.0002}}\n"
    result, checks = run_checks(project, strict, files, cloud.variables())
    assert outcomes(checks)["test_dynamodb_backup_recent[cloud]"] == "FAIL"
    age = failing(checks["test_dynamodb_backup_recent[cloud]"])["backup.dynamodb_backup_age_h"]
    assert 0.0002 < age < 0.05


# -- Redis ---------------------------------------------------------------------------------
KV = """
settings: {timeout_s: 3}
targets:
  cache:
    type: redis
    url: ${REDIS_URL}
    persistence: {rdb: true}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not found (apt-get install redis-server)")
    tmp_path.chmod(0o755)
    server = RedisServer(RedisComponent(), SandboxContext(tmp_path, "redis-pw-b4c9", frozenset()))
    yield from running(server)  # seeds 50 keys and SAVEs


def test_redis_snapshot_age_and_bgsave_status(project: Project,
                                              redis_server: RedisServer) -> None:
    files = ("test_redis.py",)
    url = {"REDIS_URL": redis_server.url}
    strict = KV + "    thresholds: {backup.redis_lastsave_age_s: {crit: 0.5}}\n"
    # Saved and unchanged since: an old snapshot of an unchanged dataset is complete.
    time.sleep(1.0)
    result, checks = run_checks(project, strict, files, url)
    assert result.returncode == 0, result.output
    # A write the snapshot does not hold yet, older than the RPO of 0.5 s.
    admin = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    admin.set("forecast:cache:latest", "unsaved")
    result, checks = run_checks(project, strict, files, url)
    assert result.returncode == 1
    age = failing(checks["test_snapshot[cache:rdb]"])["backup.redis_lastsave_age_s"]
    assert age > 1.0
    # The default RPO (26 h) holds.
    result, _ = run_checks(project, KV, files, url)
    assert result.returncode == 0, result.output
    # A failing BGSAVE, as when the data volume is lost.
    redis_server.lose_data_directory()
    result, checks = run_checks(project, KV, files, url)
    assert failing(checks["test_snapshot[cache:rdb]"]) == {"rdb_last_bgsave_status": "err"}
    admin.close()


# -- PostgreSQL ----------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "in_recovery", "archiving"), [
    ("off", False, False), ("on", False, True), ("on", True, False), ("always", True, True)])
def test_which_servers_archive_wal(mode: str, in_recovery: bool, archiving: bool) -> None:
    archiver = WalArchiver(mode, in_recovery, 0, "", 1.0, 0, "", failing=False)
    assert archiver.archiving is archiving


ARCHIVING = """
settings: {timeout_s: 3}
sandbox:
  postgres: {}
  postgres_replica: {}
targets:
  db: {type: postgres, dsn: "${SANDBOX_POSTGRES_DSN}", wal_archiving: true}
  db-undeclared: {type: postgres, dsn: "${SANDBOX_POSTGRES_DSN}"}
  db-replica: {type: postgres, dsn: "${SANDBOX_POSTGRES_REPLICA_DSN}", wal_archiving: true}
  db-replica-unchecked:
    {type: postgres, dsn: "${SANDBOX_POSTGRES_REPLICA_DSN}", wal_archiving: false}
"""


def run_wal_checks(project: Project, *args: str) -> tuple[Result, dict[str, Any]]:
    project.copy_check("checks/backup/test_postgres.py")
    return project.run_checks("wal", ARCHIVING, *args)


def test_wal_archiving_is_required_where_declared(project: Project) -> None:
    """``wal_archiving: true`` on a server that does not archive FAILs (here the standby,
    which runs with archive_mode off); ``false`` is not collected; undeclared, a server that
    archives is checked."""
    result, checks = run_wal_checks(project)
    assert result.returncode == 1, result.output
    assert {k: c["outcome"] for k, c in checks.items()} == {
        "test_wal_archiving[db]": "PASS", "test_wal_archiving[db-undeclared]": "PASS",
        "test_wal_archiving[db-replica]": "FAIL"}
    assert failed(checks["test_wal_archiving[db-replica]"]) == {
        "WAL archiving": "no: archive_mode is off"}


def test_archive_mode_switched_off_fails_where_required_and_skips_where_not(
        project: Project) -> None:
    result, checks = run_wal_checks(project, "--sandbox-fault", "wal-archive-off")
    assert result.returncode == 1, result.output
    assert failed(checks["test_wal_archiving[db]"]) == {
        "WAL archiving": "no: archive_mode is off"}
    assert "db: WAL archiving = 'no: archive_mode is off', expected = 'yes' " \
           "(environments/wal.yaml:" in result.stdout
    skipped = checks["test_wal_archiving[db-undeclared]"]
    assert skipped["outcome"] == "SKIP"
    assert "archive_mode is off: no WAL archive to check on this server (declare " \
           "wal_archiving: true to require one)" in skipped["message"]


def failed(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"] if m["verdict"] == "FAIL"}
