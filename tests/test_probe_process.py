"""The probe process: queued probes run in a forked child and their results come back;
what cannot come back (an unpicklable value, a child that died) runs in the parent; a run
with the process and one without it judge the same servers the same way.

The pool-level cases run in a fresh interpreter each: a process may fork only with no other
thread, and a test under xdist has execnet's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from opsverify.sandbox import clickhouse
from opsverify.sandbox.runtime import Sandbox
from opsverify.sandbox.spec import (
    AppComponent,
    ClickHouseComponent,
    PrometheusComponent,
    SandboxSpec,
)
from tests.conftest import ROOT, outcomes, processes_matching, send_json, serve_http

PRELUDE = """
import json, os, signal, threading, time
from opsverify.probes import ProbePool
from opsverify import probe_process
from opsverify.errors import TargetUnavailable
pool = ProbePool(max_concurrency=4, per_target=2)
parent = os.getpid()
def where(value=None):
    return lambda: (os.getpid() != parent, value)
"""


def in_fresh_interpreter(body: str) -> Any:
    """Run PRELUDE + body in a new Python; it prints one JSON value, returned here."""
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_queued_probes_run_in_the_child_and_their_results_come_back() -> None:
    result = in_fresh_interpreter("""
        with pool.held():
            gate = pool.gate("a", "reach", where("up"))
            reads = [pool.submit("a", i, where(i)) for i in range(20)]
            other = pool.submit("b", 0, where("b"))
            process = probe_process.start(pool, pool.queued())
        values = [p.result() for p in [gate, *reads, other]]
        pool.wait_idle()
        print(json.dumps({"process": process is not None, "values": values,
                          "threads": len(pool._threads), "running": threading.active_count(),
                          "timed": all(p.timing is not None for p in [gate, *reads])}))
        process.close()
    """)
    assert result["process"] is True
    assert all(elsewhere for elsewhere, _ in result["values"])  # every one in the child
    assert [value for _, value in result["values"]] == ["up", *range(20), "b"]
    assert result["threads"] == 0  # the parent started no probe thread
    assert result["running"] == 1  # nor a reader: whoever waits reads the pipe
    assert result["timed"]


def test_waiting_for_the_burst_reads_every_result_and_the_child_yields_first() -> None:
    result = in_fresh_interpreter("""
        with pool.held():
            probes = [pool.submit(f"t{i % 3}", i, lambda: (time.sleep(0.01), os.nice(0)))
                      for i in range(12)]
            process = probe_process.start(pool, pool.queued())
        pool.wait_idle()  # no check asked for a result: this reads them all
        print(json.dumps({"done": [p.done() for p in probes], "own": os.nice(0),
                          "child": sorted({p.result()[1] for p in probes}),
                          "ended": pool.receiver is None}))
        process.close()
    """)
    assert all(result["done"])
    assert result["ended"]  # the child sent everything and was reaped
    assert result["child"] == [min(19, result["own"] + 10)]  # probe_process.CHILD_NICENESS


def test_an_unpicklable_value_is_read_again_in_the_parent() -> None:
    result = in_fresh_interpreter("""
        with pool.held():
            plain = pool.submit("a", 1, where("plain"))
            locked = pool.submit("a", 2, lambda: (os.getpid() != parent, threading.Lock()))
            process = probe_process.start(pool, pool.queued())
        print(json.dumps([plain.result()[0], locked.result()[0],
                          type(locked.result()[1]).__name__]))
        process.close()
    """)
    assert result == [True, False, "lock"]


def test_a_gate_error_crosses_with_its_fields_and_fails_the_targets_reads() -> None:
    result = in_fresh_interpreter("""
        def down():
            raise TargetUnavailable("db", "127.0.0.1:1", "connection refused")
        with pool.held():
            gate = pool.gate("db", "reach", down)
            read = pool.submit("db", "q", where("never"))
            process = probe_process.start(pool, pool.queued())
        errors = [gate.error(), read.error()]
        print(json.dumps([[type(e).__name__, e.target, e.address, e.cause, str(e)]
                          for e in errors]))
        process.close()
    """)
    line = ["TargetUnavailable", "db", "127.0.0.1:1", "connection refused",
            "db (127.0.0.1:1): connection refused"]
    assert result == [line, line]


def test_what_a_killed_child_did_not_send_runs_in_the_parent() -> None:
    result = in_fresh_interpreter("""
        with pool.held():
            # Hangs in the child; answers at once when the parent runs it.
            hung = pool.submit("a", "hung", lambda: (os.getpid() != parent and time.sleep(30),
                                                     "again"))
            quick = pool.submit("b", "quick", where("quick"))
            process = probe_process.start(pool, pool.queued())
        quick.result()
        os.kill(process.pid, signal.SIGKILL)
        started = time.monotonic()
        print(json.dumps([quick.result()[0], hung.result(), time.monotonic() - started]))
    """)
    assert result[0] is True
    assert result[1] == [False, "again"]
    assert result[2] < 10


def test_probes_submitted_after_the_fork_wait_for_a_gate_in_the_child() -> None:
    result = in_fresh_interpreter("""
        with pool.held():
            gate = pool.gate("a", "reach", lambda: (time.sleep(0.3), "up"))
            process = probe_process.start(pool, pool.queued())
        late = pool.submit("a", "late", lambda: (gate.done(), os.getpid() == parent))
        print(json.dumps(late.result()))
        process.close()
    """)
    assert result == [True, True]  # it ran here, and only after the child's gate answered


def test_no_process_with_another_thread_running() -> None:
    result = in_fresh_interpreter("""
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        with pool.held():
            probe = pool.submit("a", 1, where(1))
            process = probe_process.start(pool, pool.queued())
        print(json.dumps([process is None, probe.result()[0]]))
        stop.set()
    """)
    assert result == [True, False]


class StatusServer:
    """Answers GET /<status> with that status and a JSON body."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                send_json(self, b'{"status": "healthy"}', status=int(self.path[1:]))

            def log_message(self, *args: object) -> None:
                pass

        self.server = serve_http(Handler)
        self.port = self.server.server_address[1]


@pytest.fixture(scope="module")
def status_server() -> Iterator[StatusServer]:
    server = StatusServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.mark.parametrize("setting", ["true", "false"])
def test_a_run_judges_the_same_with_or_without_the_process(
        project: Any, status_server: StatusServer, setting: str) -> None:
    project.copy_check("checks/health/test_http.py")
    lines = [f"settings: {{probe_process: {setting}, timeout_s: 2}}", "targets:"]
    for name, port, status in [("ok-0", status_server.port, 200), ("ok-1", status_server.port, 200),
                               ("bad", status_server.port, 500), ("down", 1, 200)]:
        lines += [f"  {name}:", "    type: http", f"    url: http://127.0.0.1:{port}",
                  f"    health: {{path: /{status}}}"]
    result, checks = project.run_checks("p", "\n".join(lines) + "\n", "-m", "daily",
                                        "-k", "test_health")
    assert outcomes(checks) == {"test_health[ok-0:/200]": "PASS",
                                "test_health[ok-1:/200]": "PASS",
                                "test_health[bad:/500]": "FAIL",
                                "test_health[down:/200]": "ERROR"}, result.output
    assert "down (http://127.0.0.1:1): " in checks["test_health[down:/200]"]["message"]


def test_a_run_stopped_early_leaves_no_probe_process(project: Any, status_server: StatusServer,
                                                     hung_server: Any) -> None:
    """-x stops at the first failure while the child still waits on a hung target (30 s
    deadline): the run ends at once and takes its probe process with it."""
    project.copy_check("checks/health/test_http.py")
    lines = ["settings: {timeout_s: 30}", "targets:",
             "  bad:", "    type: http", f"    url: http://127.0.0.1:{status_server.port}",
             "    health: {path: /500}",
             "  wedged:", "    type: http", f"    url: http://127.0.0.1:{hung_server.port}",
             "    health: {path: /h}"]
    # The reports directory names the project on both processes' command lines.
    result, checks = project.run_checks("stop", "\n".join(lines) + "\n", "-x", "-m", "daily",
                                        "-k", "test_health", f"--reports-dir={project.reports}")
    assert result.returncode == 1, result.output
    assert outcomes(checks) == {"test_health[bad:/500]": "FAIL"}, result.output
    assert result.duration_s < 20, result.duration_s
    assert hung_server.accepted  # the child had reached the hung target
    assert processes_matching(str(project.path)) == []


# Run as a plugin of the run under test: the targets whose probes went to the child.
HANDED_OFF = '''
import json
from pathlib import Path

from fixtures.probes import POOL


def pytest_terminal_summary(terminalreporter, config):
    run = config.stash.get(POOL, None)
    process = run.process if run is not None else None
    targets = sorted({p.target for p in process.probes}) if process is not None else []
    Path("handed_off.json").write_text(json.dumps(targets))
'''


def judged_with_and_without_the_process(project: Any, name: str, targets: str,
                                        secret: str) -> tuple[dict[str, str], list[str]]:
    """Run the project's daily checks against ``targets`` (the ``targets:`` section's
    lines) with ``probe_process`` true, then false: the run's outcomes and the targets whose
    probes went to the child. The second run forks nothing, both judge the same, and
    ``secret`` is in neither's output."""
    project.write("handed_off.py", HANDED_OFF)
    judged, handed = {}, {}
    for setting in ("true", "false"):
        env = f"settings: {{probe_process: {setting}, timeout_s: 5}}\ntargets:\n{targets}"
        result, checks = project.run_checks(f"{name}-{setting}", env, "-m", "daily",
                                            "-p", "handed_off")
        judged[setting] = outcomes(checks)
        handed[setting] = json.loads((project.path / "handed_off.json").read_text())
        assert secret not in result.output
    assert handed["false"] == []
    assert judged["true"] == judged["false"]
    return judged["true"], handed["true"]


@pytest.fixture(scope="module")
def prometheus_and_clickhouse() -> Iterator[dict[str, str]]:
    """Real Prometheus (scraping the demo service) and ClickHouse, started in this process:
    the run under test has no ``sandbox:`` section, so no thread of its own, and forks."""
    if shutil.which("prometheus") is None or clickhouse.binary() is None:
        pytest.skip("prometheus or clickhouse-server not found "
                    "(apt-get install prometheus clickhouse-server)")
    box = Sandbox.plan(SandboxSpec(app=AppComponent(), prometheus=PrometheusComponent(),
                                   clickhouse=ClickHouseComponent()), frozenset())
    try:
        box.start()
        yield box.variables()
    finally:
        box.stop()


def test_prometheus_and_clickhouse_probes_run_in_the_child_and_judge_the_same(
        project: Any, prometheus_and_clickhouse: dict[str, str]) -> None:
    """Their probes go to the probe process (``forks=True``); what comes back (answers, a
    refused password's ERROR, a version too old for ``system.disks``) judges as on threads."""
    found = prometheus_and_clickhouse
    for check in ("checks/health/test_prometheus.py", "checks/health/test_clickhouse.py",
                  "checks/capacity/test_clickhouse.py"):
        project.copy_check(check)
    password = found["SANDBOX_CLICKHOUSE_PASSWORD"]
    judged, handed = judged_with_and_without_the_process(
        project, "fork",
        f"  prom:\n    type: prometheus\n    url: {found['SANDBOX_PROMETHEUS_URL']}\n"
        "    allowed_alerts: [Watchdog]\n"
        f"  ch:\n    type: clickhouse\n    url: {found['SANDBOX_CLICKHOUSE_URL']}\n"
        f"    user: opsverify\n    password: {password}\n"
        f"  ch-locked:\n    type: clickhouse\n    url: {found['SANDBOX_CLICKHOUSE_URL']}\n"
        "    user: opsverify\n    password: not-the-password\n", password)
    assert handed == ["ch", "ch-locked", "prom"]
    assert judged["test_ready[prom]"] == "PASS"
    assert judged["test_ping[ch]"] == "PASS"
    assert judged["test_ping[ch-locked]"] == "ERROR"
    assert judged["test_disk_usage[ch]"] == "SKIP"  # Debian's 18.16


def test_redis_probes_run_in_the_child_and_judge_the_same(project: Any,
                                                         start_redis: Any) -> None:
    """redis-py makes its connection pool again in the child; a refused password is the
    gate's ERROR there, crossing the pipe, as on threads."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not found (apt-get install redis-server)")
    password = "fork-redis-s3cr3t-4b1d"  # a test value that must never be shown
    port = start_redis(f"requirepass {password}", "appendonly no")
    project.copy_check("checks/health/test_redis.py")
    judged, handed = judged_with_and_without_the_process(
        project, "redis",
        f"  cache:\n    type: redis\n    url: redis://:{password}@127.0.0.1:{port}/0\n"
        "    role: master\n"
        f"  locked:\n    type: redis\n    url: redis://:wrong@127.0.0.1:{port}/0\n", password)
    assert handed == ["cache", "locked"]
    assert judged["test_ping[cache]"] == "PASS"
    assert judged["test_role[cache:master]"] == "PASS"
    assert judged["test_ping[locked]"] == "ERROR"
