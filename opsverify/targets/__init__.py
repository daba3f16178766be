"""The registry of target types: one engine module per type, named as the type.

A new target type adds its module here, a fixture module in ``fixtures/`` named the same,
and one line in the root ``conftest.py``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from opsverify.targets.base import TargetSpec
from opsverify.targets.http import HttpTarget
from opsverify.targets.postgres import PostgresTarget
from opsverify.targets.redis import RedisTarget

TARGET_TYPES: dict[str, type[TargetSpec]] = {
    "http": HttpTarget,
    "postgres": PostgresTarget,
    "redis": RedisTarget,
}

AnyTarget = Annotated[HttpTarget | PostgresTarget | RedisTarget, Field(discriminator="type")]

__all__ = ["TARGET_TYPES", "AnyTarget", "TargetSpec"]
