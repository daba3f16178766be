"""A run imports the target types its environment declares, and no other (issue 7): the
other types' schemas, clients and client libraries are never loaded, only their names are
known (opsverify/targets/__init__.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.conftest import Project, send_json

# The client libraries of the other types (cryptography: of https targets, for their TLS
# checks). testinfra itself is not here: pytest-testinfra's plugin imports its package
# (testinfra.host, testinfra.backend.base) in every pytest run.
LIBRARIES = ("psycopg", "redis", "boto3", "botocore", "docker", "kubernetes", "paramiko",
             "cryptography", "testinfra.backend.local", "testinfra.backend.docker")
# The engine module of every other type, and the parts of them that hold its client.
TYPES = ("postgres", "redis", "host", "clickhouse", "sqlite", "prometheus", "docker",
         "kubernetes", "s3", "aws", "backup", "host_model", "postgres_model",
         "kubernetes_access")

# Run as a plugin of the run under test: what the whole run imported, once it is over.
RECORDER = '''
import json
import sys
from pathlib import Path


def pytest_sessionfinish(session):
    Path("imported.json").write_text(json.dumps(sorted(sys.modules)))
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


def test_a_run_of_http_targets_imports_no_other_type(project: Project, http_port: int) -> None:
    project.copy_checks()
    project.write("imports_recorder.py", RECORDER)
    env = {"targets": {"web": {"type": "http", "url": f"http://127.0.0.1:{http_port}",
                               "health": {"path": "/health", "expect_json":
                                          {"status": "healthy"}}}}}
    project.write("environments/web.yaml", yaml.safe_dump(env))
    result = project.run("-m", "daily", "--env", "web", "-p", "no:xdist",
                         "-p", "imports_recorder")
    assert result.returncode == 0, result.output
    assert project.checks("web")["test_health[web:/health]"]["outcome"] == "PASS"
    modules = json.loads((project.path / "imported.json").read_text())
    assert "opsverify.targets.http" in modules  # the recorder saw the run's imports
    libraries = [name for name in LIBRARIES if imported_by(name, modules)]
    types = [f"opsverify.targets.{t}" for t in TYPES if f"opsverify.targets.{t}" in modules]
    assert not libraries + types
