"""The registry of target types: one engine module per type, named as the type.

A type's module is imported the first time an environment declares a target of that type
(or a caller asks for its class with :func:`spec_class`), so that a run pays for the
schemas and client libraries of the types it uses, not of every type (issue 7). Each
entry is a function that imports its class: the module and the class are named in code
that mypy checks, not in strings.

A new target type adds its module and one entry here, a fixture module in ``fixtures/``
named the same, and one line in the root ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import GetJsonSchemaHandler, PlainValidator, SerializeAsAny
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticKnownError, core_schema

from opsverify.targets.base import TargetSpec


def _http() -> type[TargetSpec]:
    from opsverify.targets.http import HttpTarget
    return HttpTarget


def _postgres() -> type[TargetSpec]:
    from opsverify.targets.postgres import PostgresTarget
    return PostgresTarget


def _redis() -> type[TargetSpec]:
    from opsverify.targets.redis import RedisTarget
    return RedisTarget


def _host() -> type[TargetSpec]:
    from opsverify.targets.host import HostTarget
    return HostTarget


def _prometheus() -> type[TargetSpec]:
    from opsverify.targets.prometheus import PrometheusTarget
    return PrometheusTarget


def _clickhouse() -> type[TargetSpec]:
    from opsverify.targets.clickhouse import ClickHouseTarget
    return ClickHouseTarget


def _sqlite() -> type[TargetSpec]:
    from opsverify.targets.sqlite import SqliteTarget
    return SqliteTarget


def _docker() -> type[TargetSpec]:
    from opsverify.targets.docker import DockerTarget
    return DockerTarget


def _kubernetes() -> type[TargetSpec]:
    from opsverify.targets.kubernetes import KubernetesTarget
    return KubernetesTarget


def _s3() -> type[TargetSpec]:
    from opsverify.targets.s3 import S3Target
    return S3Target


def _aws() -> type[TargetSpec]:
    from opsverify.targets.aws import AwsTarget
    return AwsTarget


def _backup() -> type[TargetSpec]:
    from opsverify.targets.backup import BackupTarget
    return BackupTarget


# Type name -> the function importing its section's model.
TARGET_TYPES: dict[str, Callable[[], type[TargetSpec]]] = {
    "http": _http,
    "postgres": _postgres,
    "redis": _redis,
    "host": _host,
    "prometheus": _prometheus,
    "clickhouse": _clickhouse,
    "sqlite": _sqlite,
    "docker": _docker,
    "kubernetes": _kubernetes,
    "s3": _s3,
    "aws": _aws,
    "backup": _backup,
}


def spec_class(target_type: str) -> type[TargetSpec]:
    """The model of a ``type:``'s section, its module imported on first use."""
    return TARGET_TYPES[target_type]()


def validate_target(value: Any) -> TargetSpec:
    """A target section validated by the model of its ``type``, with the errors a
    discriminated union on ``type`` would give (their locations have no tag in them)."""
    if isinstance(value, TargetSpec):
        return value
    if not isinstance(value, dict):
        raise PydanticKnownError("model_attributes_type")
    if "type" not in value:
        raise PydanticKnownError("union_tag_not_found", {"discriminator": "'type'"})
    kind = value["type"]
    if not isinstance(kind, str) or kind not in TARGET_TYPES:
        raise PydanticKnownError("union_tag_invalid", {
            "discriminator": "'type'", "tag": str(kind),
            "expected_tags": ", ".join(f"'{name}'" for name in TARGET_TYPES)})
    return spec_class(kind).model_validate(value)


class _EveryType:
    """The JSON schema of a target section: every type's, on ``type`` (importing them all,
    as only asking for the schema should)."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        choices = {name: spec_class(name).__pydantic_core_schema__ for name in TARGET_TYPES}
        return handler(core_schema.tagged_union_schema(choices, discriminator="type"))


# A target section, as ``Environment.targets`` holds it: an instance of its type's model.
AnyTarget = Annotated[SerializeAsAny[TargetSpec], PlainValidator(validate_target), _EveryType()]

__all__ = ["TARGET_TYPES", "AnyTarget", "TargetSpec", "spec_class", "validate_target"]
