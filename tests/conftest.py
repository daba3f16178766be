"""Shared helpers for opsverify's own tests.

- ``project``: a throw-away opsverify project (the real plugins, the real checks/ when asked)
  in which ``project.run(...)`` runs pytest in a subprocess, as a user would.
- ``hung_server``: a TCP socket that accepts and never answers.
- ``sandbox``: the real sandbox servers (PostgreSQL, Redis, demo app) for one test module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from opsverify.sandbox.base import Component
from opsverify.sandbox.docker import DockerEngine
from opsverify.sandbox.kubernetes import KubernetesCluster
from opsverify.sandbox.runtime import Sandbox
from opsverify.sandbox.spec import (
    AppComponent,
    DockerComponent,
    KubernetesComponent,
    PostgresComponent,
    RedisComponent,
    SandboxSpec,
)

ROOT = Path(__file__).resolve().parent.parent
# The foundation's servers, and the seeded history their trend checks read.
FOUNDATION = {"postgres", "postgres_replica", "redis", "app", "history"}
FOUNDATION_CHECKS = ["checks/health/test_http.py", "checks/health/test_postgres.py",
                     "checks/health/test_redis.py", "checks/capacity/test_postgres.py",
                     "checks/capacity/test_redis.py", "checks/health/test_postgres_locks.py",
                     "checks/capacity/test_redis_clients.py",
                     "checks/remediation/test_postgres.py"]
PYPROJECT = """
[tool.pytest.ini_options]
testpaths = ["checks"]
addopts = "--strict-markers --import-mode=importlib -p no:cacheprovider"
junit_family = "xunit1"
timeout = 120
"""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Project:
    """A directory laid out like the opsverify repository."""

    path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def write(self, relative: str, text: str) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return target

    def copy_checks(self) -> None:
        shutil.copytree(ROOT / "checks", self.path / "checks", dirs_exist_ok=True)

    def copy_environment(self, name: str = "sandbox") -> Path:
        source = ROOT / "environments" / f"{name}.yaml"
        target = self.path / "environments" / f"{name}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
        return target

    def use_foundation(self) -> dict[str, Any]:
        """The real foundation checks and environments/sandbox.yaml, cut down to the
        foundation's servers and target types (HTTP, PostgreSQL with its replica, Redis):
        the other components have their own tests, and slower starts. Returns the
        environment, to change and write back with :meth:`write_env`."""
        for check in FOUNDATION_CHECKS:
            self.write(check, (ROOT / check).read_text())
        data = sandbox_subset(FOUNDATION)
        self.write_env(data)
        return data

    def write_env(self, data: dict[str, Any], name: str = "sandbox") -> Path:
        return self.write(f"environments/{name}.yaml",
                          yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    @property
    def reports(self) -> Path:
        return self.path / "reports"

    def latest(self, env: str = "sandbox") -> Path:
        return (self.reports / env / "latest").resolve()

    def checks(self, env: str = "sandbox") -> dict[str, dict[str, Any]]:
        """Outcome, message and evidence of each check of the latest run in ``env``, from
        its summary.json, keyed ``test_name[id]``."""
        summary = json.loads((self.latest(env) / "summary.json").read_text())
        return {c["nodeid"].split("::", 1)[1]: c for c in summary["checks"]}

    def run_checks(self, env_name: str, env_text: str, *args: str,
                   env: dict[str, str] | None = None, timeout: float = 90,
                   ) -> tuple[Result, dict[str, dict[str, Any]]]:
        """Write ``environments/<env_name>.yaml`` and run the project's checks against it in
        one process (``-p no:xdist``); the result and :meth:`checks` of that run."""
        self.write(f"environments/{env_name}.yaml", env_text)
        result = self.run("--env", env_name, "-p", "no:xdist", *args, env=env, timeout=timeout)
        return result, self.checks(env_name)

    def copy_check(self, relative: str) -> None:
        """One stock check module, ``checks/<category>/test_<type>.py``, into the project."""
        self.write(relative, (ROOT / relative).read_text())

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
            ) -> Result:
        """``python -m pytest ARGS`` in the project, in a subprocess, like a user."""
        import os
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("OPSVERIFY_", "PYTEST_"))}
        environ.update(self.extra_env)
        environ.update(env or {})
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:randomly", *args],
            cwd=self.path, env=environ, capture_output=True, text=True, timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def sandbox_subset(components: set[str] | tuple[str, ...]) -> dict[str, Any]:
    """environments/sandbox.yaml with only ``components`` in its sandbox section, and only
    the targets whose variables those components provide."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "environments" / "sandbox.yaml").read_text())
    data["sandbox"] = {k: v for k, v in data["sandbox"].items() if k in components}
    if "history" not in components:
        data.pop("history", None)  # the seeded history file is the history component's
    box = Sandbox.plan(SandboxSpec.model_validate(data["sandbox"]), frozenset())
    provided = set(box.variables())
    box.stop()  # only planned: this removes its work directory
    data["targets"] = {name: target for name, target in data["targets"].items()
                       if set(re.findall(r"\$\{(\w+)", json.dumps(target))) <= provided}
    return data


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """An empty opsverify project with the real plugin list and pytest settings.

    Usage: ``project.copy_checks(); project.copy_environment(); project.run("-m", "daily")``
    """
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(ROOT / "conftest.py", root / "conftest.py")
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "checks").mkdir()
    (root / "environments").mkdir()
    return Project(root)


def send_json(handler: BaseHTTPRequestHandler, body: bytes, status: int = 200,
              headers: Mapping[str, str] | None = None) -> None:
    """A test server's answer: ``body`` as JSON, with its length and any ``headers``."""
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", **(headers or {}),
                        "Content-Length": str(len(body))}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def serve_http(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A test HTTP server on 127.0.0.1 and a free port, answering from daemon threads
    (``server.server_address[1]`` is its port; ``shutdown()`` and ``server_close()`` end it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class HungServer:
    """Accepts TCP connections and never sends a byte (a wedged server)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


class DripServer:
    """Answers HTTP one byte at a time, each within any read timeout, for a long time: after
    ``head`` as it is, ``drip`` byte by byte (by default the headers themselves drip).
    ``cut_after_s`` is how long after the first byte the client hung up (None: it did not)."""

    def __init__(self, head: bytes = b"HTTP/1.1 200 OK\r\n",
                 drip: bytes = b"X-Drip: " + b"a" * 10_000) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.head, self.drip = head, drip
        self.cut_after_s: float | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            started = time.monotonic()
            try:
                conn.sendall(self.head)
                for byte in self.drip:
                    if self._stop.wait(0.2):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                self.cut_after_s = time.monotonic() - started

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def postgres_workdir(*, owned: bool = False) -> Path:
    """A fresh directory for a test's own PostgreSQL: readable by the server, which runs as
    an unprivileged user when the tests run as root; ``owned`` gives it to that user (for
    an initdb of the test's own)."""
    from opsverify.sandbox.process import unprivileged_user

    workdir = Path(tempfile.mkdtemp(prefix="opsverify-test-"))
    os.chmod(workdir, 0o755)  # noqa: S103 - the server runs as its own user
    user = unprivileged_user() if owned else None
    if user:
        shutil.chown(workdir, user)
    return workdir


@contextlib.contextmanager
def sandbox_postgres(password: str, faults: frozenset[str] = frozenset(),
                     seed: Callable[[Any], None] | None = None) -> Iterator[Any]:
    """The sandbox's PostgreSQL on its own, in a fresh directory: seeded, then ``seed``,
    then ``faults`` injected; stopped and removed afterwards.

    Usage: ``with sandbox_postgres(PASSWORD, frozenset({"idle-connections"})) as server:``
    """
    from opsverify.sandbox.base import SandboxContext
    from opsverify.sandbox.postgres import PostgresServer

    workdir = postgres_workdir()
    server = PostgresServer(PostgresComponent(), SandboxContext(workdir, password, faults))
    try:
        server.prepare()
        server.launch()
        server.ready()
        if seed is not None:
            seed(server)
        server.inject(faults)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Start real redis-servers on free ports with extra config lines, each in its own
    directory under the test's; returns the port. All are stopped after the test.

    Usage: ``port = start_redis(f"requirepass {PASSWORD}", "maxmemory 4mb")``
    """
    from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until

    started: list[subprocess.Popen[bytes]] = []

    def start(*lines: str) -> int:
        port = free_port()
        home = tmp_path / f"redis-{port}"
        home.mkdir()
        config = home / "redis.conf"
        config.write_text("\n".join([f"port {port}", "bind 127.0.0.1", f"dir {home}",
                                     'save ""', *lines]) + "\n")
        log = home / "redis.log"
        process = spawn([str(shutil.which("redis-server")), str(config)], log=log)
        started.append(process)
        wait_until(lambda: port_open(port), timeout_s=10, what="redis-server",
                   process=process, log=log)
        return port

    yield start
    for process in started:
        stop(process)


@pytest.fixture
def hung_server() -> Iterator[HungServer]:
    """A TCP server on 127.0.0.1 that accepts and never answers."""
    server = HungServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The real sandbox servers, started once for a test module.

    Usage: ``sandbox.variables()["SANDBOX_POSTGRES_DSN"]``
    """
    spec = SandboxSpec(postgres=PostgresComponent(), redis=RedisComponent(), app=AppComponent())
    box = Sandbox.plan(spec, frozenset())
    box.start()
    yield box
    box.stop()


C = TypeVar("C", bound=Component)


def running(component: C) -> Iterator[C]:
    """One sandbox component started on its own, for a test fixture; stopped afterwards.

    Usage: ``yield from running(MotoServer(MotoComponent(), ctx))``
    """
    component.prepare()
    component.launch()
    try:
        component.ready()
        yield component
    finally:
        component.stop()


def outcomes(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{check id: outcome}`` of :meth:`Project.checks` or :meth:`Project.run_checks`."""
    return {name: c["outcome"] for name, c in checks.items()}


def sandbox_component(name: str, spec: SandboxSpec, kind: type[C],
                      faults: frozenset[str] = frozenset()) -> Iterator[C]:
    """One sandbox component, started (and broken by ``faults``) as the sandbox starts it,
    for a module fixture; a SKIP naming the install step where it cannot run here."""
    box = Sandbox.plan(spec, faults)
    try:
        box.start()
        if name in box.skipped:
            pytest.skip(box.skipped[name])
        component = box.components[name]
        assert isinstance(component, kind)
        yield component
    finally:
        box.stop()


def private_docker_engine() -> Iterator[DockerEngine]:
    """The sandbox's private Docker engine (--bridge=none --iptables=false) on its own.

    Usage: ``yield from private_docker_engine()``
    """
    yield from sandbox_component("docker", SandboxSpec(docker=DockerComponent()), DockerEngine)


def kubernetes_cluster(faults: frozenset[str] = frozenset()) -> Iterator[KubernetesCluster]:
    """The sandbox's kube-apiserver and etcd on their own, seeded (and broken by ``faults``).

    Usage: ``yield from kubernetes_cluster()``; ``cluster.session()`` writes as an admin.
    """
    yield from sandbox_component("kubernetes", SandboxSpec(kubernetes=KubernetesComponent()),
                                 KubernetesCluster, faults)


def processes_matching(pattern: str) -> list[str]:
    """Command lines of live (non-zombie) processes matching ``pattern``."""
    out = subprocess.run(["ps", "-ww", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if pattern in line and not line.startswith("Z")]
