"""Backups a service keeps of itself: PostgreSQL's WAL archive, Redis's RDB snapshots,
DynamoDB's on-demand backups and point-in-time recovery, S3 versioning and replication.

Each reader uses the target type's own read-only client (and only reads)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opsverify.targets.base import Deadline

if TYPE_CHECKING:  # annotations: the check modules import this one in every run
    from opsverify.targets.aws import AwsClient
    from opsverify.targets.postgres import PostgresClient
    from opsverify.targets.redis import RedisClient
    from opsverify.targets.s3 import S3Client

DYNAMODB_TABLES_MAX = 100  # tables judged per target; more are reported as capped


# -- PostgreSQL ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WalArchiver:
    """``pg_stat_archiver`` and the settings that say whether it should be working."""

    archive_mode: str  # off | on | always
    in_recovery: bool
    archived_count: int
    last_archived_wal: str
    # Seconds since the last successful archive, or since the server started when nothing
    # was archived yet.
    since_archived_s: float
    failed_count: int
    last_failed_wal: str
    # The last attempt failed: last_failed_time is after last_archived_time.
    failing: bool

    @property
    def archiving(self) -> bool:
        """Whether this server archives WAL at all (a standby only with ``always``)."""
        if self.archive_mode == "off":
            return False
        return not (self.in_recovery and self.archive_mode != "always")


def wal_archiver(client: PostgresClient) -> WalArchiver:
    row = client.query(
        """
        SELECT current_setting('archive_mode'), pg_is_in_recovery(),
               archived_count, coalesce(last_archived_wal, ''),
               extract(epoch FROM now() - coalesce(last_archived_time,
                                                   pg_postmaster_start_time()))::float8,
               failed_count, coalesce(last_failed_wal, ''),
               coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false)
        FROM pg_stat_archiver
        """
    )[0]
    return WalArchiver(str(row[0]), bool(row[1]), int(row[2]), str(row[3]), float(row[4]),
                       int(row[5]), str(row[6]), bool(row[7]))


# -- Redis -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RedisSnapshot:
    """The last RDB snapshot: when (LASTSAVE, by the server's clock) and how it went."""

    lastsave: int
    age_s: float
    bgsave_status: str  # ok | err
    changes_since: int
    in_progress: bool


def redis_snapshot(client: RedisClient) -> RedisSnapshot:
    reply = client.call("LASTSAVE")  # redis-py answers with a local-time datetime
    lastsave = int(reply.timestamp() if isinstance(reply, datetime) else reply)
    info = client.info("persistence")
    return RedisSnapshot(
        lastsave, client.server_time() - lastsave, str(info.get("rdb_last_bgsave_status", "")),
        int(info.get("rdb_changes_since_last_save", 0)), bool(info.get("rdb_bgsave_in_progress")),
    )


# -- DynamoDB --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableBackups:
    """One table's backup state: PITR, and its newest available on-demand backup."""

    table: str
    pitr: str  # ENABLED | DISABLED | TableNotFound
    newest_backup: str = ""
    newest_backup_age_h: float | None = None
    backups: int = 0


def dynamodb_tables(aws: AwsClient) -> tuple[list[TableBackups], bool]:
    """Every DynamoDB table of the target's region with its backup state, and whether the
    list was capped at :data:`DYNAMODB_TABLES_MAX`. One deadline bounds each call."""
    names: list[str] = []
    start: str | None = None
    while len(names) < DYNAMODB_TABLES_MAX:
        params: dict[str, Any] = {"Limit": 100}
        if start:
            params["ExclusiveStartTableName"] = start
        reply = aws.api.call("dynamodb", "list_tables", **params)
        names += [str(n) for n in reply.data.get("TableNames", [])]
        start = reply.data.get("LastEvaluatedTableName")
        if not start:
            break
    capped = len(names) > DYNAMODB_TABLES_MAX or bool(start)
    return [_table_backups(aws, name) for name in names[:DYNAMODB_TABLES_MAX]], capped


def _table_backups(aws: AwsClient, table: str) -> TableBackups:
    deadline = Deadline.start(aws.timeout_s)
    reply = aws.api.call("dynamodb", "describe_continuous_backups", TableName=table,
                         handled=("TableNotFoundException",), deadline=deadline)
    if reply.error:
        return TableBackups(table, "TableNotFound")
    description = reply.data.get("ContinuousBackupsDescription", {})
    pitr = str(description.get("PointInTimeRecoveryDescription", {}).get(
        "PointInTimeRecoveryStatus", "DISABLED"))
    reply = aws.api.call("dynamodb", "list_backups", TableName=table, BackupType="ALL",
                         deadline=Deadline.start(aws.timeout_s))
    available = [b for b in reply.data.get("BackupSummaries", [])
                 if b.get("BackupStatus") == "AVAILABLE"]
    if not available:
        return TableBackups(table, pitr)
    newest = max(available, key=lambda b: _utc(b["BackupCreationDateTime"]))
    age = (datetime.now(UTC) - _utc(newest["BackupCreationDateTime"])).total_seconds() / 3600
    return TableBackups(table, pitr, str(newest.get("BackupName", "")), age, len(available))


# -- S3 --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicationRule:
    rule: str
    status: str  # Enabled | Disabled
    destination: str  # bucket ARN or name
    prefix: str = ""


def bucket_versioning(s3: S3Client) -> str:
    """``Enabled``, ``Suspended``, or ``never enabled`` (S3 answers without a status)."""
    reply = s3.api.call("s3", "get_bucket_versioning", Bucket=s3.spec.bucket)
    return str(reply.data.get("Status") or "never enabled")


def bucket_replication(s3: S3Client) -> list[ReplicationRule]:
    """The bucket's replication rules; none when replication is not configured."""
    reply = s3.api.call("s3", "get_bucket_replication", Bucket=s3.spec.bucket,
                        handled=("ReplicationConfigurationNotFoundError",))
    if reply.error:
        return []
    rules = reply.data.get("ReplicationConfiguration", {}).get("Rules", [])
    found = []
    for rule in rules:
        rule_filter = rule.get("Filter", {})
        prefix = rule_filter.get("Prefix", rule.get("Prefix", "")) if isinstance(
            rule_filter, dict) else ""
        found.append(ReplicationRule(str(rule.get("ID", "")), str(rule.get("Status", "")),
                                     str(rule.get("Destination", {}).get("Bucket", "")),
                                     str(prefix or "")))
    return found


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)
