"""The ``sandbox:`` section of an environment file: which local servers to materialise."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from opsverify.targets.base import Section


class PostgresComponent(Section):
    database: str = Field(default="ts_forecast_system", pattern=r"^[a-z_][a-z0-9_]*$")


class PostgresReplicaComponent(Section):
    """A streaming replica of ``postgres``, cloned with ``pg_basebackup -R``."""

    # The database its DSN names: always the primary's (SandboxSpec fills it in).
    database: str = Field(default="ts_forecast_system", pattern=r"^[a-z_][a-z0-9_]*$")


class RedisComponent(Section):
    pass


class AppComponent(Section):
    """The demo HTTP service: /health, /health/detailed, /metrics."""


class PrometheusComponent(Section):
    """Debian's prometheus, scraping the demo service and itself every second."""


class ClickHouseComponent(Section):
    """Debian's clickhouse-server, HTTP interface only, seeded like gogooku3."""

    database: str = Field(default="gogooku3", pattern=r"^[a-z_][a-z0-9_]*$")


class SqliteComponent(Section):
    """A seeded SQLite file like ERPFTS's erpfts.db (documents, chunks)."""

    file: str = Field(default="erpfts.db", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class DockerComponent(Section):
    """A private dockerd (no bridge, no iptables) with gogooku3-like busybox containers."""


class KubernetesComponent(Section):
    """kube-apiserver and etcd built by ./ops, with TekuToko's workloads in one namespace."""

    namespace: str = Field(default="tekutoko", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class MotoComponent(Section):
    """The moto server: S3 and AWS APIs (ECS, ELBv2, CloudWatch, Logs) in one process."""

    region: str = Field(default="eu-west-1", pattern=r"^[a-z0-9-]+$")
    bucket: str = Field(default="gogooku3-data", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class SshdComponent(Section):
    """sshd on 127.0.0.1 with a generated, verified host key, and a service for host checks."""


class BackupsComponent(Section):
    """Backups as nightly jobs leave them (pg_dump, SQLite, a ChromaDB tarball; the dumps
    also in the moto bucket), and a scratch database for restore drills."""

    bucket: str = Field(default="gogooku3-data", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = Field(default="eu-west-1", pattern=r"^[a-z0-9-]+$")


class LogsComponent(Section):
    """The application's daily logs in ``logs/`` (``<name>-YYYYmmdd.log``), three days of
    them; ``logs-piling`` leaves weeks."""

    name: str = Field(default="forecast", pattern=r"^[a-z][a-z0-9_-]*$")


class SeriesSeed(Section):
    """One metric's synthetic history: flat at ``value``, or at what this machine's ``read``
    says when the sandbox starts: ``disk``/``inodes`` of ``path``, ``memory``, or the bytes
    of the ``files`` a glob ``path`` matches in the sandbox's directory."""

    target: str
    metric: str
    item: str = ""
    unit: str = "%"
    capacity: float = 100.0
    value: float | None = None
    read: Literal["disk", "inodes", "memory", "files"] | None = None
    path: str = "/"
    # With the disk-filling fault this series (read: files) is the one that fills.
    fills: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> SeriesSeed:
        if (self.value is None) == (self.read is None):
            raise ValueError("give value or read, one of them")
        return self


class HistoryComponent(Section):
    """A seeded history (``SANDBOX_HISTORY``) so trend checks have readings to fit."""

    days: int = Field(default=14, ge=1, le=400)
    series: list[SeriesSeed] = Field(default_factory=list)


class SandboxSpec(Section):
    postgres: PostgresComponent | None = None
    postgres_replica: PostgresReplicaComponent | None = None
    redis: RedisComponent | None = None
    app: AppComponent | None = None
    clickhouse: ClickHouseComponent | None = None
    sqlite: SqliteComponent | None = None
    prometheus: PrometheusComponent | None = None
    docker: DockerComponent | None = None
    moto: MotoComponent | None = None
    kubernetes: KubernetesComponent | None = None
    sshd: SshdComponent | None = None
    backups: BackupsComponent | None = None  # after postgres, moto and sshd
    logs: LogsComponent | None = None
    history: HistoryComponent | None = None

    @model_validator(mode="before")
    @classmethod
    def _replica_follows_primary(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("postgres_replica") is None:
            return data
        primary = data.get("postgres")
        if primary is None:
            raise ValueError("postgres_replica needs postgres, the primary it is cloned from")
        replica = data["postgres_replica"]
        database = (primary.get("database") if isinstance(primary, dict)
                    else getattr(primary, "database", None))
        if isinstance(replica, dict) and database is not None:
            data = {**data, "postgres_replica": {**replica, "database": database}}
        return data
