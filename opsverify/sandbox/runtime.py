"""Materialising an environment's ``sandbox:`` section: real servers on 127.0.0.1.

Ports and passwords are chosen first, so the environment file can be validated against
them before anything starts; then the servers start in parallel, faults are injected, and
:meth:`Sandbox.stop` ends them all. Environment files refer to them through variables:
``${SANDBOX_POSTGRES_DSN}``, ``${SANDBOX_REDIS_URL}``, ``${SANDBOX_APP_URL}``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from opsverify.sandbox.postgres import PostgresServer
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.sandbox.redis import RedisServer
from opsverify.sandbox.spec import AppComponent, SandboxSpec
from opsverify.secrets import SECRETS

FAULTS: dict[str, str] = {
    "db-down": "PostgreSQL is not started: its port refuses connections",
    "redis-down": "Redis is not started: its port refuses connections",
    "app-unhealthy": "the demo service answers /health with 503 and an unhealthy component",
    "slow-app": "the demo service takes 400 ms to answer every request",
    "idle-connections": "the application leaves 4 sessions idle in PostgreSQL",
    "stuck-run": "a run has been 'running' for 30 hours",
}
IDLE_SESSIONS = 4
IDLE_AGE_S = 1.2  # the sandbox environment counts sessions idle over 1 s as stale
PASSWORD_VAR = "OPSVERIFY_SANDBOX_PASSWORD"  # noqa: S105 - the variable's name, not a value
DIR_VAR = "OPSVERIFY_SANDBOX_DIR"


class Component(Protocol):
    install_hint: str
    port: int

    def prepare(self) -> None: ...
    def launch(self) -> None: ...
    def ready(self) -> None: ...
    def stop(self) -> None: ...


class AppServer:
    """The demo HTTP service in its own Python process."""

    install_hint = "pip install -e ."

    def __init__(self, spec: AppComponent, workdir: Path, port: int, faults: set[str],
                 dependencies: dict[str, int]) -> None:
        self.spec = spec
        self.port = port
        self.faults = faults
        self.dependencies = dependencies
        self.log = workdir / "app.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        pass

    def launch(self) -> None:
        argv = [sys.executable, "-m", "opsverify.sandbox.demo_app", "--port", str(self.port)]
        argv += [f"--fault={f}" for f in sorted(self.faults)]
        argv += [f"--dependency={n}={p}" for n, p in sorted(self.dependencies.items())]
        self.process = spawn(argv, log=self.log)

    def ready(self) -> None:
        wait_until(lambda: port_open(self.port), timeout_s=15, what="demo app",
                   process=self.process, log=self.log)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


@dataclass
class Sandbox:
    """The servers of one ``sandbox:`` section, for one run."""

    spec: SandboxSpec
    faults: frozenset[str] = frozenset()
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="opsverify-")))
    keep_workdir: bool = False
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    app: AppServer | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # component -> reason
    started_s: float = 0.0

    @classmethod
    def plan(cls, spec: SandboxSpec, faults: frozenset[str]) -> Sandbox:
        """Choose ports and credentials; start nothing."""
        unknown = sorted(faults - FAULTS.keys())
        if unknown:
            raise ValueError(f"unknown sandbox fault {', '.join(unknown)}; "
                             f"choose from: {', '.join(sorted(FAULTS))}")
        kwargs: dict[str, object] = {}
        if os.environ.get(PASSWORD_VAR):
            kwargs["password"] = os.environ[PASSWORD_VAR]
        if os.environ.get(DIR_VAR):
            workdir = Path(os.environ[DIR_VAR])
            workdir.mkdir(parents=True, exist_ok=True)
            kwargs.update(workdir=workdir, keep_workdir=True)
        box = cls(spec, faults, **kwargs)  # type: ignore[arg-type]
        SECRETS.add(box.password)
        # The PostgreSQL server runs as an unprivileged user and must traverse the directory;
        # secrets inside it (redis.conf) are 0600.
        os.chmod(box.workdir, 0o755)  # noqa: S103
        if spec.postgres:
            box.postgres = PostgresServer(spec.postgres, box.workdir, free_port(), box.password)
        if spec.redis:
            box.redis = RedisServer(spec.redis, box.workdir, free_port(), box.password)
        if spec.app:
            deps = {}
            if box.postgres:
                deps["database"] = box.postgres.port
            if box.redis:
                deps["cache"] = box.redis.port
            box.app = AppServer(spec.app, box.workdir, free_port(), set(faults), deps)
        return box

    def variables(self) -> dict[str, str]:
        """What the environment file interpolates; every value is also a secret."""
        out: dict[str, str] = {"SANDBOX_DIR": str(self.workdir)}
        if self.postgres:
            out["SANDBOX_POSTGRES_DSN"] = self.postgres.dsn
        if self.redis:
            out["SANDBOX_REDIS_URL"] = self.redis.url
        if self.app:
            out["SANDBOX_APP_URL"] = self.app.url
        return out

    def components(self) -> dict[str, Component]:
        found: dict[str, Component | None] = {
            "postgres": self.postgres, "redis": self.redis, "app": self.app}
        return {name: c for name, c in found.items() if c is not None}

    def start(self) -> None:
        """Start every component not switched off by a fault, in parallel."""
        began = time.monotonic()
        down = {"postgres": "db-down", "redis": "redis-down"}
        wanted = {n: c for n, c in self.components().items() if down.get(n) not in self.faults}
        with ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
            self._each(wanted, pool, "prepare")
            # The kernel's parent-death signal follows the thread that forked: servers are
            # launched from this (the main) thread, so they live exactly as long as the run.
            for name, component in wanted.items():
                if name not in self.skipped:
                    component.launch()
            self._each(wanted, pool, "ready")
        self._inject(began)
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

    def _inject(self, began: float) -> None:
        pg = self.postgres if self.postgres and "postgres" not in self.skipped else None
        if pg and "db-down" not in self.faults:
            if "stuck-run" in self.faults:
                pg.add_stuck_run()
            if "idle-connections" in self.faults:
                opened = time.monotonic()
                pg.open_idle_sessions(IDLE_SESSIONS)
                time.sleep(max(0.0, IDLE_AGE_S - (time.monotonic() - opened)))

    def skip_reason(self, port: int | None) -> str | None:
        """Why a target on ``port`` cannot run here (its component's binary is missing)."""
        for name, component in self.components().items():
            if name in self.skipped and component.port == port:
                return f"sandbox {name} not available: {self.skipped[name]}"
        return None

    def stop(self) -> None:
        """Stop every component, newest dependency last; remove the work directory."""
        for component in (self.app, self.redis, self.postgres):
            if component is not None:
                try:
                    component.stop()
                except Exception as exc:  # noqa: BLE001 - stopping the others matters more
                    print(f"opsverify: sandbox stop: {exc}", file=sys.stderr)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
