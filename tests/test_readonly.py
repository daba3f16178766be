"""Read-only by default, enforced: a non-destructive check that tries to write fails loudly,
and nothing is written.

One run of the real sandbox (PostgreSQL with ``log_statement=all``, Redis, the demo app) plus
a recording HTTP server; ``OPSVERIFY_SANDBOX_DIR`` keeps ``postgres.log`` after the run so the
test can show which statements reached the server and which never left the client.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYPROJECT, ROOT, Project

PROBE = "opsverify-write-probe"
CTE = "WITH d AS (DELETE FROM runs RETURNING 1) SELECT count(*) FROM d"
# A write the client cannot see: a function that deletes. Only the server's read-only
# transaction stands between it and the data.
FUNCTION = "SELECT purge_runs()"

ENVIRONMENT = """\
description: read-only proof
settings:
  timeout_s: 3
sandbox:
  postgres: {{database: ts_forecast_system}}
  redis: {{}}
  app: {{}}
targets:
  api:
    type: http
    url: ${{SANDBOX_APP_URL}}
    health: {{path: /health}}
  recorder:
    type: http
    url: http://127.0.0.1:{recorder_port}
  db:
    type: postgres
    dsn: ${{SANDBOX_POSTGRES_DSN}}
  cache:
    type: redis
    url: ${{SANDBOX_REDIS_URL}}
"""

# Each attempt measures, around itself, what it could have changed: the row count through a
# separate plain psycopg session as the sandbox's monitoring role (which holds DELETE and
# INSERT: only the rails stop the check), Redis's SET counter and the probe key.
WRITES = f'''\
"""Non-destructive checks that try to write: every one must fail."""

import os

import psycopg
import psycopg.conninfo
import pytest

PROBE = {PROBE!r}
SETTINGS = ["application_name", "default_transaction_read_only",
            "idle_in_transaction_session_timeout", "lock_timeout", "statement_timeout",
            "transaction_read_only"]


def runs(postgres):
    with psycopg.connect(postgres.spec.dsn, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def attempt(postgres, evidence, sql):
    evidence.note("runs before", runs(postgres))
    try:
        postgres.query(sql)
    finally:
        evidence.note("runs after", runs(postgres))


def redis_state(redis):
    stats = redis.info("commandstats").get("cmdstat_set", {{}})
    return stats.get("calls", 0), redis.call("EXISTS", PROBE)


def redis_attempt(redis, evidence, write):
    evidence.note("SET calls, probe key before", str(redis_state(redis)))
    try:
        write()
    finally:
        evidence.note("SET calls, probe key after", str(redis_state(redis)))


@pytest.mark.daily
def test_session_settings(postgres, evidence):
    rows = postgres.query("SELECT name, setting, coalesce(unit, ''), source FROM pg_settings "
                          "WHERE name = ANY(%s)", (SETTINGS,))
    for name, setting, unit, source in rows:
        evidence.note(name, f"{{setting}}{{unit}} from {{source}}")


@pytest.mark.daily
def test_insert(postgres, evidence):
    attempt(postgres, evidence, f"INSERT INTO runs (name, status) VALUES ('{{PROBE}}', 'queued')")


@pytest.mark.daily
def test_delete_behind_a_comment(postgres, evidence):
    attempt(postgres, evidence, f"/* SELECT '{{PROBE}}' */ DELETE FROM runs")


@pytest.mark.daily
def test_select_then_delete(postgres, evidence):
    attempt(postgres, evidence, f"SELECT '{{PROBE}}'; DELETE FROM runs")


@pytest.mark.daily
def test_data_modifying_cte(postgres, evidence):
    attempt(postgres, evidence, {CTE!r})


@pytest.mark.daily
def test_function_that_writes(postgres, evidence):
    # Created as the superuser over the sandbox's socket: the application's own function.
    port = psycopg.conninfo.conninfo_to_dict(postgres.spec.dsn)["port"]
    socket_dir = os.path.join(os.environ["OPSVERIFY_SANDBOX_DIR"], "pg-socket")
    with psycopg.connect(host=socket_dir, port=port, user="postgres",
                         dbname="ts_forecast_system", autocommit=True) as admin:
        admin.execute("CREATE OR REPLACE FUNCTION purge_runs() RETURNS bigint LANGUAGE sql "
                      "AS 'DELETE FROM runs RETURNING 1::bigint'")
    attempt(postgres, evidence, {FUNCTION!r})


@pytest.mark.daily
def test_redis_set(redis, evidence):
    redis_attempt(redis, evidence, lambda: redis.call("SET", PROBE, "written"))


@pytest.mark.daily
def test_redis_client_set(redis, evidence):
    redis_attempt(redis, evidence, lambda: redis.redis.set(PROBE, "written"))


@pytest.mark.daily
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_http_write(http, method, evidence):
    evidence.note("attempt", method)
    http.session.request(method, http.spec.url + "/health", data=b"{{}}", timeout=http.timeout_s)
'''


class Recorder(ThreadingHTTPServer):
    """A real HTTP server that remembers the method of every request it receives."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.methods: list[str] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def _answer(self) -> None:
        self.server.methods.append(self.command)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_HEAD = do_OPTIONS = do_POST = do_PUT = do_DELETE = do_PATCH = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture(scope="module")
def sandbox_dir() -> Iterator[Path]:
    """Where the run's sandbox lives and stays. Not under pytest's tmp_path: its 0700
    parents would keep the unprivileged PostgreSQL server out."""
    path = Path(tempfile.mkdtemp(prefix="opsverify-readonly-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def new_project(tmp: Path, environment: str, checks: str) -> Project:
    root = tmp / "project"
    root.mkdir()
    shutil.copy(ROOT / "conftest.py", root / "conftest.py")
    (root / "pyproject.toml").write_text(PYPROJECT)
    project = Project(root)
    project.write("environments/readonly.yaml", environment)
    project.write("checks/health/test_writes.py", checks)
    return project


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder,
        sandbox_dir: Path) -> dict[str, Any]:
    project = new_project(tmp_path_factory.mktemp("readonly"),
                          ENVIRONMENT.format(recorder_port=recorder.port), WRITES)
    result = project.run("--env", "readonly", "-p", "no:randomly",
                         env={"OPSVERIFY_SANDBOX_DIR": str(sandbox_dir)})
    checks = project.checks("readonly")
    log = (sandbox_dir / "postgres.log").read_text(errors="replace")
    return {"result": result, "checks": checks, "log": log}


def evidence(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"]}


def test_the_run_fails_because_checks_tried_to_write(run):
    result = run["result"]
    assert result.returncode == 1, result.output
    failed = {name for name, check in run["checks"].items() if check["outcome"] == "FAIL"}
    assert failed == set(run["checks"]) - {"test_session_settings[db]"}, result.output
    assert len(failed) == 15


@pytest.mark.parametrize(("check", "refusal"), [
    ("test_insert[db]", "WriteRefused: refusing to send INSERT from a non-destructive check"),
    ("test_delete_behind_a_comment[db]", "WriteRefused: refusing to send DELETE"),
    ("test_select_then_delete[db]", "WriteRefused: refusing to send several statements"),
    ("test_data_modifying_cte[db]", "WriteRefused: refusing DELETE inside a statement"),
])
def test_a_write_statement_never_leaves_the_client(run, check, refusal):
    outcome = run["checks"][check]
    assert outcome["outcome"] == "FAIL"
    assert refusal in outcome["message"]
    # Nothing carrying the probe reached the server, although the log has our reads.
    assert "statement: SELECT count(*) FROM runs" in run["log"]
    assert PROBE not in run["log"]
    assert "DELETE FROM runs\n" not in run["log"]


def test_a_write_hidden_in_a_function_is_refused_by_the_server(run):
    outcome = run["checks"]["test_function_that_writes[db]"]
    assert outcome["outcome"] == "FAIL"
    assert ("WriteRefused: db: the server refused a write in a read-only session: "
            "cannot execute DELETE in a read-only transaction") in outcome["message"]
    lines = run["log"].splitlines()
    reached = [i for i, line in enumerate(lines) if line.endswith(f"statement: {FUNCTION}")]
    assert len(reached) == 1, "the call must reach the server (the client cannot see inside)"
    # The server's own refusal, in the opsverify session: user@db application: ERROR
    refusal = lines[reached[0] + 1]
    assert "opsverify@ts_forecast_system opsverify: ERROR:  cannot execute DELETE in a " \
           "read-only transaction" in refusal, refusal


@pytest.mark.parametrize("check", ["test_insert[db]", "test_delete_behind_a_comment[db]",
                                   "test_select_then_delete[db]", "test_data_modifying_cte[db]",
                                   "test_function_that_writes[db]"])
def test_no_row_was_written(run, check):
    counted = evidence(run["checks"][check])
    assert counted == {"runs before": 240, "runs after": 240}  # 240: the sandbox's seed


@pytest.mark.parametrize("check", ["test_redis_set[cache]", "test_redis_client_set[cache]"])
def test_a_redis_write_is_refused_before_sending(run, check):
    outcome = run["checks"][check]
    assert outcome["outcome"] == "FAIL"
    assert "WriteRefused: refusing Redis SET from a non-destructive check" in outcome["message"]
    # Redis counted no SET (the seed's are all) and the key is not there.
    counted = evidence(outcome)
    assert counted["SET calls, probe key before"] == counted["SET calls, probe key after"]
    assert counted["SET calls, probe key after"].endswith(", 0)")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("target", ["api", "recorder"])
def test_an_http_write_is_refused_before_sending(run, recorder, target, method):
    outcome = run["checks"][f"test_http_write[{target}-{method}]"]
    assert outcome["outcome"] == "FAIL"
    assert (f"WriteRefused: refusing HTTP {method} from a non-destructive check "
            "(allowed: GET, HEAD, OPTIONS)") in outcome["message"]
    assert recorder.methods, "the recorder was reached (the fixture's GET)"
    assert set(recorder.methods) == {"GET"}


def test_session_settings(run):
    settings = evidence(run["checks"]["test_session_settings[db]"])
    # timeout_s: 3 in the environment file, set by the client at connection time.
    assert settings == {
        "application_name": "opsverify from client",
        "default_transaction_read_only": "on from client",
        "idle_in_transaction_session_timeout": "3000ms from client",
        "lock_timeout": "3000ms from client",
        "statement_timeout": "3000ms from client",
        "transaction_read_only": "on from session",  # BEGIN READ ONLY per statement
    }


# -- ways around the rails ----------------------------------------------------------------
# Writes a non-destructive check could try through the client it is handed, beyond plain
# statements: each must be refused and change nothing.

BYPASSES = f'''\
"""Non-destructive checks that write around the client-side guards."""

import psycopg
import pytest
import requests

PROBE = {PROBE!r}


def runs(postgres):
    with psycopg.connect(postgres.spec.dsn, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM runs").fetchone()[0]


def workers(postgres):
    with psycopg.connect(postgres.spec.dsn, connect_timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = 'ts-forecast-worker'").fetchone()[0]


def redis_state(redis):
    stats = redis.info("commandstats")
    return (stats.get("cmdstat_set", {{}}).get("calls", 0),
            stats.get("cmdstat_slowlog|reset", {{}}).get("calls", 0),
            redis.call("EXISTS", PROBE))


@pytest.mark.daily
def test_set_config_then_delete(postgres, evidence):
    evidence.note("runs before", runs(postgres))
    try:
        postgres.query("SELECT set_config('default_transaction_read_only', 'off', false)")
        postgres.query("WITH d AS (DELETE FROM runs WHERE id = 1 RETURNING 1) "
                       "SELECT count(*) FROM d")
    finally:
        evidence.note("runs after", runs(postgres))


@pytest.mark.daily
def test_terminate_a_session(postgres, evidence):
    evidence.note("worker sessions before", workers(postgres))
    try:
        postgres.query("SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity "
                       "WHERE application_name = 'ts-forecast-worker' LIMIT 1")
    finally:
        evidence.note("worker sessions after", workers(postgres))


@pytest.mark.daily
@pytest.mark.parametrize("write", ["pipeline", "slowlog-reset"])
def test_redis_write(redis, write, evidence):
    evidence.note("before", str(redis_state(redis)))
    try:
        if write == "pipeline":
            redis.redis.pipeline().set(PROBE, "written").execute()
        else:
            redis.call("SLOWLOG", "RESET")
    finally:
        evidence.note("after", str(redis_state(redis)))


@pytest.mark.daily
def test_http_send(http, evidence):
    evidence.note("attempt", "session.send(POST)")
    request = requests.Request("POST", http.spec.url + "/health", data=b"{{}}").prepare()
    http.session.send(request, timeout=http.timeout_s)
'''


@pytest.fixture(scope="module")
def bypass_recorder() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.close()


@pytest.fixture(scope="module")
def bypass_run(tmp_path_factory: pytest.TempPathFactory,
               bypass_recorder: Recorder) -> dict[str, Any]:
    environment = ENVIRONMENT.format(recorder_port=bypass_recorder.port)
    environment = environment.replace("    health: {path: /health}\n", "")  # api: no POST
    environment = environment.replace("  api:\n    type: http\n    url: ${SANDBOX_APP_URL}\n",
                                      "")
    project = new_project(tmp_path_factory.mktemp("bypass"), environment, BYPASSES)
    result = project.run("--env", "readonly", "-p", "no:randomly",
                         "--sandbox-fault", "idle-connections")
    checks = project.checks("readonly")
    assert set(checks) == {"test_set_config_then_delete[db]", "test_terminate_a_session[db]",
                           "test_redis_write[cache-pipeline]",
                           "test_redis_write[cache-slowlog-reset]",
                           "test_http_send[recorder]"}, result.output
    return {"result": result, "checks": checks}


def refused_and_unchanged(check: dict[str, Any]) -> None:
    __tracebackhide__ = True
    values = list(evidence(check).values())
    assert values[0] == values[-1], f"{check['nodeid']} changed {values[0]} -> {values[-1]}"
    assert check["outcome"] == "FAIL"
    assert "WriteRefused" in check["message"]


def test_set_config_cannot_make_the_session_writable(bypass_run):
    refused_and_unchanged(bypass_run["checks"]["test_set_config_then_delete[db]"])


def test_a_non_destructive_check_cannot_terminate_sessions(bypass_run):
    refused_and_unchanged(bypass_run["checks"]["test_terminate_a_session[db]"])


def test_a_redis_pipeline_cannot_write(bypass_run):
    refused_and_unchanged(bypass_run["checks"]["test_redis_write[cache-pipeline]"])


def test_redis_slowlog_reset_is_refused(bypass_run):
    """SLOWLOG is a read command, SLOWLOG RESET is not."""
    refused_and_unchanged(bypass_run["checks"]["test_redis_write[cache-slowlog-reset]"])


def test_http_session_send_cannot_post(bypass_run, bypass_recorder):
    check = bypass_run["checks"]["test_http_send[recorder]"]
    assert "POST" not in bypass_recorder.methods
    assert check["outcome"] == "FAIL"
    assert "WriteRefused" in check["message"]
