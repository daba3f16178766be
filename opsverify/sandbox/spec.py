"""The ``sandbox:`` section of an environment file: which local servers to materialise."""

from __future__ import annotations

from pydantic import Field

from opsverify.targets.base import Section


class PostgresComponent(Section):
    database: str = Field(default="ts_forecast_system", pattern=r"^[a-z_][a-z0-9_]*$")


class RedisComponent(Section):
    pass


class AppComponent(Section):
    """The demo HTTP service: /health, /health/detailed, /metrics."""


class SandboxSpec(Section):
    postgres: PostgresComponent | None = None
    redis: RedisComponent | None = None
    app: AppComponent | None = None
