"""The registry of target types: one engine module per type, named as the type.

A new target type adds its module here, a fixture module in ``fixtures/`` named the same,
and one line in the root ``conftest.py``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from opsverify.targets.aws import AwsTarget
from opsverify.targets.backup import BackupTarget
from opsverify.targets.base import TargetSpec
from opsverify.targets.clickhouse import ClickHouseTarget
from opsverify.targets.docker import DockerTarget
from opsverify.targets.host import HostTarget
from opsverify.targets.http import HttpTarget
from opsverify.targets.kubernetes import KubernetesTarget
from opsverify.targets.postgres import PostgresTarget
from opsverify.targets.prometheus import PrometheusTarget
from opsverify.targets.redis import RedisTarget
from opsverify.targets.s3 import S3Target
from opsverify.targets.sqlite import SqliteTarget

TARGET_TYPES: dict[str, type[TargetSpec]] = {
    "http": HttpTarget,
    "postgres": PostgresTarget,
    "redis": RedisTarget,
    "host": HostTarget,
    "clickhouse": ClickHouseTarget,
    "sqlite": SqliteTarget,
    "prometheus": PrometheusTarget,
    "docker": DockerTarget,
    "kubernetes": KubernetesTarget,
    "s3": S3Target,
    "aws": AwsTarget,
    "backup": BackupTarget,
}

AnyTarget = Annotated[
    HttpTarget | PostgresTarget | RedisTarget | HostTarget | PrometheusTarget | ClickHouseTarget
    | SqliteTarget | DockerTarget | KubernetesTarget
    | S3Target | AwsTarget | BackupTarget,
    Field(discriminator="type"),
]

__all__ = ["TARGET_TYPES", "AnyTarget", "TargetSpec"]
