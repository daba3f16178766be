"""The clickhouse target type: schema, client rails, and each check PASS/FAIL/ERROR against a
real clickhouse-server (Debian's 18.16) started by the sandbox, as a user runs the suite."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.sandbox import clickhouse as component
from opsverify.sandbox.process import free_port
from opsverify.sandbox.runtime import Sandbox
from opsverify.sandbox.spec import ClickHouseComponent, SandboxSpec
from opsverify.targets.clickhouse import ClickHouseClient, ClickHouseTarget, literal
from tests.conftest import HungServer, Project, Result

needs_clickhouse = pytest.mark.skipif(
    component.binary() is None,
    reason="clickhouse-server not found (apt-get install clickhouse-server)")
PASSWORD = "ch-sandbox-s3cr3t-41d7"  # a test value that must never be shown
CHECKS = ("test_ping", "test_accepts_queries", "test_tables_exist")

# One real server, three views of it: as declared, a table nobody created, a missing database.
SANDBOX_ENV = """
settings: {timeout_s: 3}
sandbox:
  clickhouse: {database: gogooku3}
targets:
  warehouse:
    type: clickhouse
    url: ${SANDBOX_CLICKHOUSE_URL}
    user: opsverify
    password: ${SANDBOX_CLICKHOUSE_PASSWORD}
    databases:
      gogooku3: [prices, features]
  warehouse-orders:
    type: clickhouse
    url: ${SANDBOX_CLICKHOUSE_URL}
    user: opsverify
    password: ${SANDBOX_CLICKHOUSE_PASSWORD}
    databases:
      gogooku3: [prices, orders]
      analytics: [events]
"""


def run_checks(project: Project, env: str, *args: str) -> tuple[Result, dict[str, Any]]:
    """Run the stock clickhouse checks in ``project``; outcomes keyed ``test[target]``."""
    project.copy_check("checks/health/test_clickhouse.py")
    result, checks = project.run_checks("ch", env, *args,
                                        env={"OPSVERIFY_SANDBOX_PASSWORD": PASSWORD})
    assert PASSWORD not in result.output
    for path in project.latest("ch").rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(errors="replace"), path
    return result, checks


def failing_lines(check: dict[str, Any]) -> str:
    return "\n".join(f"{m['name']} = {m['value']}" for m in check["evidence"]
                     if m["verdict"] == "FAIL")


def direct_env(url: str, password: str = PASSWORD, timeout_s: float = 3) -> str:
    return f"""
settings: {{timeout_s: {timeout_s}}}
targets:
  warehouse:
    type: clickhouse
    url: {url}
    user: opsverify
    password: {password}
    databases:
      gogooku3: [prices]
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Sandbox]:
    """A real clickhouse-server, seeded, for the tests that talk to it directly."""
    if component.binary() is None:
        pytest.skip("clickhouse-server not found (apt-get install clickhouse-server)")
    box = Sandbox.plan(SandboxSpec(clickhouse=ClickHouseComponent()), frozenset())
    box.start()
    yield box
    box.stop()


def client_for(box: Sandbox, password: str | None = None, timeout_s: float = 3,
               ) -> ClickHouseClient:
    spec = ClickHouseTarget(type="clickhouse", url=box.variables()["SANDBOX_CLICKHOUSE_URL"],
                            user="opsverify",
                            password=box.variables()["SANDBOX_CLICKHOUSE_PASSWORD"]
                            if password is None else password)
    return ClickHouseClient("warehouse", spec, timeout_s)


# -- schema ------------------------------------------------------------------------------
def test_schema_address_and_secrets() -> None:
    spec = ClickHouseTarget(type="clickhouse", url="http://ch.internal:8123", user="monitor",
                            password="pw-1234", databases={"gogooku3": ["prices"]})
    assert spec.address() == "ch.internal:8123"
    assert spec.secrets() == ["pw-1234"]
    tls = ClickHouseTarget(type="clickhouse", url="https://ch.internal")
    assert tls.address() == "ch.internal:8443"
    assert tls.user == "default"


@pytest.mark.parametrize(("keys", "error"), [
    ({"url": "ch.internal:8123"}, "expected the HTTP interface's URL"),
    ({"url": "http://monitor:pw@ch.internal:8123"}, "credentials do not belong in the URL"),
    ({"url": "http://ch:8123", "database": {"x": []}}, "Extra inputs are not permitted"),
    ({"url": "http://ch:8123", "databases": ["gogooku3"]}, "valid dictionary"),
])
def test_schema_rejects(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        ClickHouseTarget(type="clickhouse", **keys)


def test_literal_quotes_for_clickhouse() -> None:
    assert literal("gogooku3") == "'gogooku3'"
    assert literal("a'b\\c") == "'a\\'b\\\\c'"


# -- the client against a real server -------------------------------------------------------
@needs_clickhouse
def test_client_reads_through_headers_and_refuses_writes_on_both_sides(server: Sandbox) -> None:
    client = client_for(server)
    assert client.query("SELECT 1") == [[1]]
    assert client.tables("gogooku3") == {"prices", "features"}
    assert client.tables("no_such_db") is None
    assert "X-ClickHouse-Key" in client.session.headers
    with pytest.raises(WriteRefused, match="refusing to send DROP"):
        client.query("DROP TABLE gogooku3.prices")
    with pytest.raises(WriteRefused, match="several statements"):
        client.query("SELECT 1; DROP TABLE gogooku3.prices")
    # Past our guard, the server itself refuses: every request is a GET, run read-only.
    answer = client._get("", {"query": "DROP TABLE gogooku3.prices"})
    assert answer.status != 200
    assert "readonly" in answer.text
    assert client.tables("gogooku3") == {"prices", "features"}
    with pytest.raises(WriteRefused):
        client.session.post(client.base, data=b"DROP TABLE gogooku3.prices")
    client.close()


@needs_clickhouse
def test_wrong_password_is_one_line_without_the_password(server: Sandbox) -> None:
    client = client_for(server, password="not-the-pw-8812")
    with pytest.raises(TargetUnavailable) as caught:
        client.authenticate()
    message = str(caught.value)
    assert message.startswith("warehouse (clickhouse 127.0.0.1:")
    assert "authentication failed for user 'opsverify': Code 193: Wrong password" in message
    assert "not-the-pw-8812" not in message
    assert "\n" not in message


def test_hung_server_costs_one_deadline(hung_server: HungServer) -> None:
    spec = ClickHouseTarget(type="clickhouse", url=f"http://127.0.0.1:{hung_server.port}")
    client = ClickHouseClient("warehouse", spec, 0.5)
    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match=r"no answer within 0\.5 s"):
        client.authenticate()
    assert time.monotonic() - started < 2


def test_missing_binary_skips_with_the_package_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(component, "binary", lambda: None)
    box = Sandbox.plan(SandboxSpec(clickhouse=ClickHouseComponent()), frozenset())
    try:
        box.start()
        reasons = box.unavailable()
        url = box.variables()["SANDBOX_CLICKHOUSE_URL"]
        assert reasons[url] == ("sandbox clickhouse not available: clickhouse-server "
                                "not found (apt-get install clickhouse-server)")
        # Only ClickHouse's own values: the shared sandbox password would skip every target.
        assert box.ctx.password not in reasons
    finally:
        box.stop()


# -- the stock checks, as a user runs them -------------------------------------------------
@needs_clickhouse
def test_healthy_server_passes_and_declared_tables_are_required(project: Project) -> None:
    result, checks = run_checks(project, SANDBOX_ENV)
    for test in CHECKS:
        key = f"{test}[warehouse:gogooku3]" if test == "test_tables_exist" else f"{test}[warehouse]"
        assert checks[key]["outcome"] == "PASS", result.output
    select = checks["test_accepts_queries[warehouse]"]
    evidence = {m["name"]: m["value"] for m in select["evidence"]}
    assert evidence["version"] == "18.16.1"
    assert evidence["session readonly"] >= 1
    # A declared table that does not exist, and a declared database that does not exist.
    orders = checks["test_tables_exist[warehouse-orders:gogooku3]"]
    assert orders["outcome"] == "FAIL"
    assert failing_lines(orders) == "gogooku3: missing tables = orders"
    analytics = checks["test_tables_exist[warehouse-orders:analytics]"]
    assert analytics["outcome"] == "FAIL"
    assert failing_lines(analytics) == "database analytics exists = False"
    assert result.returncode == 1


@needs_clickhouse
def test_table_dropped_after_seeding_fails_the_tables_check(project: Project) -> None:
    result, checks = run_checks(project, SANDBOX_ENV, "--target", "warehouse",
                                "--sandbox-fault", "clickhouse-table-missing")
    check = checks["test_tables_exist[warehouse:gogooku3]"]
    assert check["outcome"] == "FAIL", result.output
    assert failing_lines(check) == "gogooku3: missing tables = features"
    assert checks["test_ping[warehouse]"]["outcome"] == "PASS"
    assert checks["test_accepts_queries[warehouse]"]["outcome"] == "PASS"
    assert "FAIL  checks/health/test_clickhouse.py::test_tables_exist[warehouse:gogooku3]: " \
           "warehouse: gogooku3: missing tables = 'features'" in result.output


@needs_clickhouse
def test_exhausted_quota_fails_select_1_while_ping_passes(project: Project) -> None:
    result, checks = run_checks(project, SANDBOX_ENV, "--target", "warehouse",
                                "--sandbox-fault", "clickhouse-quota-exhausted")
    assert checks["test_ping[warehouse]"]["outcome"] == "PASS", result.output
    select = checks["test_accepts_queries[warehouse]"]
    assert select["outcome"] == "FAIL"
    assert "SELECT 1 = refused: Code 201: Quota for user 'opsverify'" in failing_lines(select)
    # The tables cannot be listed at all: that is an ERROR, not a verdict on the tables.
    assert checks["test_tables_exist[warehouse:gogooku3]"]["outcome"] == "ERROR"


@needs_clickhouse
def test_server_down_is_one_error_line_per_check(project: Project) -> None:
    result, checks = run_checks(project, SANDBOX_ENV, "--target", "warehouse",
                                "--sandbox-fault", "clickhouse-down")
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}, result.output
    assert len(checks) == len(CHECKS)
    assert result.returncode == 1
    assert "warehouse (clickhouse 127.0.0.1:" in result.output
    assert "): cannot connect: connection refused" in result.output
    assert "Traceback" not in result.output


def test_hung_server_is_an_error_within_the_deadline(project: Project,
                                                     hung_server: HungServer) -> None:
    result, checks = run_checks(
        project, direct_env(f"http://127.0.0.1:{hung_server.port}", timeout_s=0.5))
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}, result.output
    assert "warehouse (clickhouse 127.0.0.1:" in result.output
    assert "no answer within 0.5 s" in result.output
    assert result.duration_s < 30


class _NoUpstream(BaseHTTPRequestHandler):
    """A proxy in front of ClickHouse whose upstream is gone (chproxy, nginx)."""

    def do_GET(self) -> None:
        body = b"no healthy upstream"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_proxy_without_upstream_fails_ping_and_select(project: Project) -> None:
    """ClickHouse's own /ping always says Ok.; what answers otherwise is what stands in front
    of it. A real HTTP server plays that proxy."""
    proxy = ThreadingHTTPServer(("127.0.0.1", free_port()), _NoUpstream)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        result, checks = run_checks(project, direct_env(f"http://127.0.0.1:{proxy.server_port}"))
    finally:
        proxy.shutdown()
        proxy.server_close()
    ping = checks["test_ping[warehouse]"]
    assert ping["outcome"] == "FAIL", result.output
    assert failing_lines(ping) == "GET /ping status = 503\nGET /ping body = no healthy upstream"
    select = checks["test_accepts_queries[warehouse]"]
    assert select["outcome"] == "FAIL"
    assert failing_lines(select) == "SELECT 1 = refused: HTTP 503: no healthy upstream"
