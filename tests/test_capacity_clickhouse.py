"""ClickHouse capacity (``checks/capacity/test_clickhouse.py``): the space on each disk of
``system.disks`` and its trend.

Debian's clickhouse-server is 18.16, which has no ``system.disks`` (19.15 and later): against
it the checks SKIP and say so. What they judge is tested against a current ClickHouse engine
(chDB, ClickHouse in process: ``pip install chdb-core``), behind the same HTTP GET interface
the client speaks, reading the real disk its data lives on.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from opsverify.sandbox import clickhouse as component
from opsverify.sandbox.runtime import Sandbox
from opsverify.sandbox.spec import ClickHouseComponent, SandboxSpec
from opsverify.targets.clickhouse import ClickHouseClient, ClickHouseTarget, DiskSpace
from tests.conftest import Project
from tests.test_host_capacity import growing, seed

PASSWORD = "ch-capacity-s3cr3t-9e2a"  # a test value that must never be shown
CHECK = "checks/capacity/test_clickhouse.py"
HAS_CHDB = importlib.util.find_spec("chdb") is not None


def test_used_pct_is_of_what_clickhouse_may_fill() -> None:
    # total_space and free_space already leave keep_free_space out (DiskLocal).
    assert DiskSpace("default", "/var/lib/clickhouse/", 25, 100, 10).used_pct == 75.0
    assert DiskSpace("hot", "/ssd/", 0, 100, 0).used_pct == 100.0
    assert DiskSpace("s3", "/s3/", 0, 0, 0).used_pct is None  # reports no size
    assert DiskSpace("odd", "/x/", 150, 100, 0).used_pct == 0.0


def direct_env(url: str, password: str, targets: dict[str, str] | None = None) -> str:
    """One target per name, each with its own ``thresholds:`` text (or none)."""
    text = "settings: {timeout_s: 5, trend: {min_samples: 7, min_span_hours: 0}}\ntargets:\n"
    for name, thresholds in (targets or {"warehouse": ""}).items():
        text += (f"  {name}:\n    type: clickhouse\n    url: {url}\n    user: opsverify\n"
                 f"    password: {password}\n")
        if thresholds:
            text += f"    thresholds: {{clickhouse.disk_used_pct: {thresholds}}}\n"
    return text


def no_secret_in(project: Project, env: str, output: str, secret: str) -> None:
    assert secret not in output
    for path in project.latest(env).rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path


# -- Debian's 18.16: no system.disks, and the checks say so ---------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[Sandbox]:
    """A real clickhouse-server (Debian's), seeded as the sandbox seeds it."""
    if component.binary() is None:
        pytest.skip("clickhouse-server not found (apt-get install clickhouse-server)")
    box = Sandbox.plan(SandboxSpec(clickhouse=ClickHouseComponent()), frozenset())
    box.start()
    yield box
    box.stop()


def test_a_server_without_system_disks_is_a_skip_naming_its_version(
        server: Sandbox, project: Project) -> None:
    variables = server.variables()
    url, password = variables["SANDBOX_CLICKHOUSE_URL"], variables["SANDBOX_CLICKHOUSE_PASSWORD"]
    client = ClickHouseClient("warehouse", ClickHouseTarget(
        type="clickhouse", url=url, user="opsverify", password=password), 5)
    found = client.disks()
    client.close()
    assert found.disks is None
    project.copy_check(CHECK)
    result, checks = project.run_checks("ch", direct_env(url, password), "-rs")
    assert result.returncode == 0, result.output
    assert {k: c["outcome"] for k, c in checks.items()} == {
        "test_disk_usage[warehouse]": "SKIP", "test_disk_trend[warehouse]": "SKIP"}
    assert (f"system.disks needs ClickHouse 19.15 or later; this server is {found.version}"
            in result.output), result.output
    no_secret_in(project, "ch", result.output, password)
    # Declared as such (the sandbox's warehouse), the checks are not collected at all.
    result, checks = project.run_checks(
        "ch", direct_env(url, password) + "    system_disks: false\n")
    assert set(checks) == {"test_disk_usage[no-clickhouse-target]",
                           "test_disk_trend[no-clickhouse-target]"}, result.output


# -- a current ClickHouse: chDB's engine behind the HTTP GET interface -----------------------
class ChdbHttp:
    """ClickHouse's HTTP interface as the client uses it (``GET /?query=``, ``/ping``, the
    ``X-ClickHouse-User``/``-Key`` headers, read-only), answered by chDB's engine."""

    def __init__(self, data_dir: Path) -> None:
        from chdb import session  # installed only where these tests run

        self.session = session.Session(str(data_dir))
        self.lock = threading.Lock()
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, path: str, headers: Any) -> tuple[int, bytes]:
        parts = urlsplit(path)
        if parts.path == "/ping":
            return 200, b"Ok.\n"
        if (headers.get("X-ClickHouse-User"), headers.get("X-ClickHouse-Key")) != (
                "opsverify", PASSWORD):
            return 403, b"Code: 516. DB::Exception: opsverify: Authentication failed\n"
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        sql = params.get("query", "")
        if not sql.lstrip().upper().startswith("SELECT"):  # a GET runs read-only
            return 500, b"Code: 164. DB::Exception: Cannot execute query in readonly mode\n"
        with self.lock:
            try:
                result = self.session.query(sql, params.get("default_format", "TSV"))
            except Exception as exc:  # noqa: BLE001 - the engine's error is the answer
                return 500, (str(exc) + "\n").encode()
        return 200, result.bytes()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = server.answer(self.path, self.headers)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.session.close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbHttp]:
    if not HAS_CHDB:
        pytest.skip("chDB not installed (pip install chdb-core): Debian's clickhouse-server "
                    "18.16 has no system.disks")
    served = ChdbHttp(tmp_path_factory.mktemp("chdb"))
    yield served
    served.close()


def current_disks(engine: ChdbHttp) -> list[DiskSpace]:
    client = ClickHouseClient("warehouse", ClickHouseTarget(
        type="clickhouse", url=engine.url, user="opsverify", password=PASSWORD), 5)
    found = client.disks()
    client.close()
    assert found.disks is not None
    return list(found.disks)


def test_disk_usage_fails_above_its_threshold_and_names_the_disk(
        engine: ChdbHttp, project: Project) -> None:
    disks = current_disks(engine)
    default = next(d for d in disks if d.name == "default")
    assert default.used_pct is not None
    used = default.used_pct
    # Half of this machine's real disk use must FAIL; the defaults (80/90) PASS where the
    # disk has room, and a limit above what it holds elsewhere.
    tight = f"{{warn: {used / 4}, crit: {used / 2}}}"
    roomy = "" if used < 75 else "{warn: 99.5, crit: 100}"
    project.copy_check(CHECK)
    result, checks = project.run_checks("chd", direct_env(engine.url, PASSWORD, {
        "tight": tight, "roomy": roomy}), "-k", "test_disk_usage")
    assert result.returncode == 1, result.output
    assert {k: c["outcome"] for k, c in checks.items()} == {
        "test_disk_usage[tight]": "FAIL", "test_disk_usage[roomy]": "PASS"}, result.output
    failing = [m for m in checks["test_disk_usage[tight]"]["evidence"]
               if m["verdict"] == "FAIL"]
    assert [(m["name"], m["item"]) for m in failing] == [("clickhouse.disk_used_pct",
                                                           "default")]
    assert abs(failing[0]["value"] - used) < 1
    assert failing[0]["capacity"] == 100
    assert failing[0]["source"].startswith("crit from environments/chd.yaml:")
    assert f"tight: clickhouse.disk_used_pct = {failing[0]['value']:g} %" in result.output
    good = {m["name"]: m for m in checks["test_disk_usage[roomy]"]["evidence"]}
    assert good["clickhouse.disk_used_pct"]["item"] == "default"
    if not roomy:
        assert good["clickhouse.disk_used_pct"]["source"] == "crit from check default"
    assert good["server"]["value"].startswith("ClickHouse 2")
    assert " free of " in good["disk default"]["value"]
    no_secret_in(project, "chd", result.output, PASSWORD)


def test_disk_trend_fails_filling_passes_flat_and_skips_short(
        engine: ChdbHttp, project: Project) -> None:
    used = next(d for d in current_disks(engine) if d.name == "default").used_pct
    assert used is not None
    per_day = (100 - used) / 3  # full in 3 days, seeded from a fifth of today's use
    metric = "clickhouse.disk_used_pct"
    seed(project, "chd", [
        ("filling", metric, "default", growing(used, per_day,
                                               every_h=0.8 * used / per_day * 24 / 14)),
        ("steady", metric, "default", [(24 * i, used) for i in range(14, 0, -1)]),
        ("fresh", metric, "default", [(48, used), (24, used)]),
    ])
    relaxed = "{warn: 99.5, crit: 100}"
    project.copy_check(CHECK)
    result, checks = project.run_checks("chd", direct_env(engine.url, PASSWORD, {
        "filling": relaxed, "steady": relaxed, "fresh": relaxed}), "-rs", "-k",
        "test_disk_trend")
    assert result.returncode == 1, result.output
    assert {k: c["outcome"] for k, c in checks.items()} == {
        "test_disk_trend[filling]": "FAIL", "test_disk_trend[steady]": "PASS",
        "test_disk_trend[fresh]": "SKIP"}, result.output
    days = {m["name"]: m for m in checks["test_disk_trend[filling]"]["evidence"]}[
        "clickhouse.disk.days_left"]
    assert (days["verdict"], days["item"]) == ("FAIL", "default")
    assert 2 < days["value"] < 4, days
    steady = {m["name"]: m for m in checks["test_disk_trend[steady]"]["evidence"]}
    assert steady["clickhouse.disk.days_left"]["value"] == "no growth"
    assert "disk default: insufficient history: 3 samples over 48.0 hours" in result.output
