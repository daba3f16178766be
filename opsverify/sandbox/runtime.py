"""Materialising an environment's ``sandbox:`` section: real servers on 127.0.0.1.

Ports and passwords are chosen first, so the environment file can be validated against
them before anything starts; then the servers start in parallel, faults are injected, and
:meth:`Sandbox.stop` ends them all. Environment files refer to them through variables that
each component exports (``${SANDBOX_POSTGRES_DSN}``, ``${SANDBOX_REDIS_URL}``, ...).

A new component: one module with a class following :class:`~opsverify.sandbox.base.Component`,
one field in :class:`~opsverify.sandbox.spec.SandboxSpec`, one line in :data:`COMPONENTS`
and its faults in :data:`~opsverify.sandbox.faults.FAULTS_OF`, in the same order: what
``--sandbox-fault`` offers is read from there, without importing any component.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsverify.sandbox.app import AppServer
from opsverify.sandbox.backups import BackupSeeder
from opsverify.sandbox.base import Component, SandboxContext
from opsverify.sandbox.clickhouse import ClickHouseServer
from opsverify.sandbox.docker import DockerEngine
from opsverify.sandbox.faults import FAULTS
from opsverify.sandbox.history import HistorySeeder
from opsverify.sandbox.kubernetes import KubernetesCluster
from opsverify.sandbox.logs import AppLogs
from opsverify.sandbox.moto import MotoServer
from opsverify.sandbox.postgres import PostgresServer
from opsverify.sandbox.postgres_replica import PostgresReplicaServer
from opsverify.sandbox.prometheus import PrometheusServer
from opsverify.sandbox.redis import RedisServer
from opsverify.sandbox.spec import SandboxSpec
from opsverify.sandbox.sqlite import SqliteFile
from opsverify.sandbox.sshd import SshServer
from opsverify.secrets import SECRETS

# In start order of dependencies: a component may use the ports of those before it.
COMPONENTS: dict[str, Callable[[Any, SandboxContext], Component]] = {
    "postgres": PostgresServer,
    "postgres_replica": PostgresReplicaServer,  # cloned from postgres: after it
    "redis": RedisServer,
    "sshd": SshServer,  # exports the ports of postgres and redis: after them
    "app": AppServer,
    "clickhouse": ClickHouseServer,
    "sqlite": SqliteFile,
    "prometheus": PrometheusServer,  # scrapes the app: after it
    "docker": DockerEngine,
    "moto": MotoServer,
    "kubernetes": KubernetesCluster,
    "backups": BackupSeeder,  # dumps PostgreSQL, uploads to moto: after both
    "logs": AppLogs,  # files: the application's daily logs
    "history": HistorySeeder,  # a file: trends have readings to fit
}
PASSWORD_VAR = "OPSVERIFY_SANDBOX_PASSWORD"  # noqa: S105 - the variable's name, not a value
DIR_VAR = "OPSVERIFY_SANDBOX_DIR"


@dataclass
class Sandbox:
    """The servers of one ``sandbox:`` section, for one run."""

    ctx: SandboxContext
    keep_workdir: bool = False
    components: dict[str, Component] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # component -> reason
    started_s: float = 0.0

    @property
    def faults(self) -> frozenset[str]:
        return self.ctx.faults

    @property
    def workdir(self) -> Path:
        return self.ctx.workdir

    @classmethod
    def plan(cls, spec: SandboxSpec, faults: frozenset[str]) -> Sandbox:
        """Choose ports and credentials; start nothing."""
        unknown = sorted(faults - FAULTS.keys())
        if unknown:
            raise ValueError(f"unknown sandbox fault {', '.join(unknown)}; "
                             f"choose from: {', '.join(sorted(FAULTS))}")
        keep = bool(os.environ.get(DIR_VAR))
        if keep:
            workdir = Path(os.environ[DIR_VAR])
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(tempfile.mkdtemp(prefix="opsverify-"))
        # The PostgreSQL server runs as an unprivileged user and must traverse the directory;
        # secrets inside it (redis.conf) are 0600.
        os.chmod(workdir, 0o755)  # noqa: S103
        password = os.environ.get(PASSWORD_VAR) or secrets.token_urlsafe(18)
        SECRETS.add(password)
        box = cls(SandboxContext(workdir, password, faults), keep_workdir=keep)
        for name, build in COMPONENTS.items():
            section = getattr(spec, name)
            if section is not None:
                component = build(section, box.ctx)
                box.components[name] = component
                box.ctx.ports[name] = component.port
        return box

    def variables(self) -> dict[str, str]:
        """What the environment file interpolates; every value is also a secret."""
        out = {"SANDBOX_DIR": str(self.workdir)}
        for component in self.components.values():
            out.update(component.variables())
        return out

    def start(self) -> None:
        """Start every component not switched off by a ``<name>-down`` fault, in parallel."""
        began = time.monotonic()
        wanted = {n: c for n, c in self.components.items()
                  if not any(f.endswith("-down") for f in self.faults & c.faults.keys())}
        with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
            self._each(wanted, pool, "prepare")
            # The kernel's parent-death signal follows the thread that forked: servers are
            # launched from this (the main) thread, so they live exactly as long as the run.
            for name, component in wanted.items():
                if name not in self.skipped:
                    component.launch()
            self._each(wanted, pool, "ready")
        for name, component in wanted.items():
            if name not in self.skipped:
                component.inject(self.faults & component.faults.keys())
        self.started_s = time.monotonic() - began

    def _each(self, wanted: dict[str, Component], pool: ThreadPoolExecutor, step: str) -> None:
        futures = {name: pool.submit(getattr(c, step)) for name, c in wanted.items()
                   if name not in self.skipped}
        for name, future in futures.items():
            error = future.exception()
            if isinstance(error, FileNotFoundError):
                self.skipped[name] = str(error)
            elif error is not None:
                self.stop()
                raise RuntimeError(f"sandbox {name} failed to start: {error}") from error

    def unavailable(self) -> dict[str, str]:
        """The variables of skipped components (binary missing), with the reason: a target
        that interpolates one of them cannot run here."""
        return {value: f"sandbox {name} not available: {self.skipped[name]}"
                for name, component in self.components.items() if name in self.skipped
                for value in component.variables().values()}

    def stop(self) -> None:
        """Stop every component, dependents first; remove the work directory."""
        for component in reversed(self.components.values()):
            try:
                component.stop()
            except Exception as exc:  # noqa: BLE001 - stopping the others matters more
                print(f"opsverify: sandbox stop: {exc}", file=sys.stderr)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
