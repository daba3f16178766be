"""A run imports the target types its environment declares, and no other (issue 7): the
other types' schemas, clients and client libraries are never loaded, only their names are
known (opsverify/targets/__init__.py). Likewise the sandbox: a run whose environment has no
``sandbox:`` section knows its faults' names (opsverify/sandbox/faults.py), for
``--sandbox-fault``, and imports none of its components. And the garbage collector: off
while start-up and collection build what lives all run, on again while the checks run."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from opsverify.sandbox.faults import FAULTS_OF
from opsverify.sandbox.runtime import COMPONENTS
from tests.conftest import ROOT, Project, send_json

# The client libraries of the other types (cryptography: of https targets, for their TLS
# checks). testinfra itself is not here: pytest-testinfra's plugin imports its package
# (testinfra.host, testinfra.backend.base) in every pytest run.
LIBRARIES = ("psycopg", "redis", "boto3", "botocore", "docker", "kubernetes", "paramiko",
             "cryptography", "testinfra.backend.local", "testinfra.backend.docker")
# The engine module of every other type, and the parts of them that hold its client.
TYPES = ("postgres", "redis", "host", "clickhouse", "sqlite", "prometheus", "docker",
         "kubernetes", "s3", "aws", "aws_api", "backup", "host_model", "postgres_model",
         "host_backends", "postgres_spec", "docker_security", "kubernetes_access")
# What a run without a sandbox may import of opsverify/sandbox: the fault table. Not the
# section's schema (imported only for a file that has the section), the runtime, nor any
# component module or its helpers (they import requests, yaml, the servers' libraries).
SANDBOX_LIGHT = ("faults",)
SANDBOX_MODULES = tuple(sorted(f"opsverify.sandbox.{p.stem}"
                               for p in (ROOT / "opsverify" / "sandbox").glob("*.py")
                               if p.stem not in SANDBOX_LIGHT))

# Run as a plugin of the run under test: what the whole run imported, once it is over.
RECORDER = '''
import json
import sys
from pathlib import Path


def pytest_sessionfinish(session):
    Path("imported.json").write_text(json.dumps(sorted(sys.modules)))
'''

# What the collector does when: collection finished, and a check runs.
GC_RECORDER = '''
import gc
import json
from pathlib import Path

SEEN = {}


def pytest_collection_finish(session):
    SEEN["collected"] = gc.isenabled()


def pytest_runtest_call(item):
    SEEN.setdefault("check", [gc.isenabled(), gc.get_freeze_count() > 0])


def pytest_sessionfinish(session):
    Path("gc.json").write_text(json.dumps(SEEN))
'''


class Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        send_json(self, json.dumps({"status": "healthy"}).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def imported_by(module: str, modules: list[str]) -> bool:
    return any(m == module or m.startswith(f"{module}.") for m in modules)


def run_http_only(project: Project, http_port: int, *args: str) -> list[str]:
    """The daily checks against one http target (no ``sandbox:`` section): what the run
    imported."""
    project.copy_checks()
    project.write("imports_recorder.py", RECORDER)
    env = {"targets": {"web": {"type": "http", "url": f"http://127.0.0.1:{http_port}",
                               "health": {"path": "/health", "expect_json":
                                          {"status": "healthy"}}}}}
    project.write("environments/web.yaml", yaml.safe_dump(env))
    result = project.run("-m", "daily", "--env", "web", "-p", "no:xdist",
                         "-p", "imports_recorder", *args)
    assert result.returncode == 0, result.output
    assert project.checks("web")["test_health[web:/health]"]["outcome"] == "PASS"
    modules: list[str] = json.loads((project.path / "imported.json").read_text())
    assert "opsverify.targets.http" in modules  # the recorder saw the run's imports
    return modules


def test_a_run_of_http_targets_imports_no_other_type(project: Project, http_port: int) -> None:
    modules = run_http_only(project, http_port)
    libraries = [name for name in LIBRARIES if imported_by(name, modules)]
    types = [f"opsverify.targets.{t}" for t in TYPES if f"opsverify.targets.{t}" in modules]
    assert not libraries + types


def test_a_run_without_a_sandbox_imports_none_of_its_components(
        project: Project, http_port: int) -> None:
    modules = run_http_only(project, http_port)
    assert "opsverify.sandbox.faults" in modules  # --sandbox-fault's choices were read
    assert "opsverify.sandbox.runtime" in SANDBOX_MODULES
    assert [m for m in SANDBOX_MODULES if m in modules] == []


def test_the_collector_is_off_until_the_checks_run(project: Project, http_port: int) -> None:
    """Fails if it stays off (a long run's cyclic garbage would never be freed) or is never
    turned off (start-up pays for collections that find nothing to free)."""
    project.write("gc_recorder.py", GC_RECORDER)
    run_http_only(project, http_port, "-p", "gc_recorder")
    seen = json.loads((project.path / "gc.json").read_text())
    assert seen == {"collected": False, "check": [True, True]}


def test_the_fault_table_is_the_components_own() -> None:
    """--sandbox-fault lists opsverify/sandbox/faults.py's table, in its order: each
    component's faults are that table's entry, and its order is the start order's."""
    assert list(FAULTS_OF) == list(COMPONENTS)
    assert all(cls.faults is FAULTS_OF[name]
               for name, cls in COMPONENTS.items())
