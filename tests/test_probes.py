"""The probe pool: bounded concurrency, per-target limits, gates, one deadline per hung
target, response times without queueing, and xdist workers prefetching only their own items.

The pool's own rules are tested on functions; the plugin's behaviour on a real HTTP server
that records what it was asked and how many requests it held at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from opsverify.errors import TargetUnavailable
from opsverify.probes import EAGER_THREADS, ProbePool
from tests.conftest import send_json, serve_http


class Peak:
    """Counts calls in flight, overall and per key, and remembers the highest counts."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()

    def enter(self, key: str) -> None:
        with self.lock:
            for k in (key, "*"):
                self.now[k] += 1
                self.peak[k] = max(self.peak[k], self.now[k])

    def leave(self, key: str) -> None:
        with self.lock:
            for k in (key, "*"):
                self.now[k] -= 1


def sleeper(peak: Peak, target: str, seconds: float = 0.05) -> Any:
    def fn() -> str:
        peak.enter(target)
        time.sleep(seconds)
        peak.leave(target)
        return target
    return fn


@pytest.fixture
def pool() -> Iterator[ProbePool]:
    made = ProbePool(max_concurrency=4, per_target=2)
    yield made
    made.close()


def test_the_global_limit_holds(pool: ProbePool) -> None:
    peak = Peak()
    probes = [pool.submit(f"t{i}", "read", sleeper(peak, f"t{i}")) for i in range(20)]
    assert [p.result() for p in probes] == [f"t{i}" for i in range(20)]
    assert peak.peak["*"] == 4


def test_the_per_target_limit_holds_while_other_targets_go_on(pool: ProbePool) -> None:
    peak = Peak()
    busy = [pool.submit("db", i, sleeper(peak, "db")) for i in range(8)]
    other = [pool.submit(f"api{i}", "read", sleeper(peak, f"api{i}")) for i in range(4)]
    for p in busy + other:
        p.result()
    assert peak.peak["db"] == 2
    assert peak.peak["*"] == 4  # the other targets used the threads db could not


def test_a_failed_gate_fails_its_target_s_probes_without_running_them(pool: ProbePool) -> None:
    ran: list[str] = []

    def unreachable() -> None:
        time.sleep(0.05)
        raise TargetUnavailable("db", "127.0.0.1:1", "connection refused")

    gate = pool.gate("db", "reachable", unreachable)
    reads = [pool.submit("db", i, lambda i=i: ran.append(f"read {i}")) for i in range(5)]
    for read in reads:
        with pytest.raises(TargetUnavailable, match="connection refused"):
            read.result()
    assert isinstance(gate.error(), TargetUnavailable)
    assert ran == []
    late = pool.submit("db", "late", lambda: ran.append("late"))
    with pytest.raises(TargetUnavailable):
        late.result()
    assert ran == []


def test_reads_wait_for_their_gate(pool: ProbePool) -> None:
    order: list[str] = []
    gate = pool.gate("api", "reachable", lambda: (time.sleep(0.05), order.append("gate")))
    read = pool.submit("api", "metrics", lambda: order.append("read"))
    read.result()
    assert gate.done()
    assert order == ["gate", "read"]


def test_the_same_read_is_made_once(pool: ProbePool) -> None:
    calls: list[int] = []
    first = pool.gate("api", ("GET", "/health"), lambda: calls.append(1) or "answer")
    again = pool.submit("api", ("GET", "/health"), lambda: calls.append(2) or "other")
    assert again is first
    assert again.result() == "answer"
    assert calls == [1]


def test_a_lower_priority_number_runs_first() -> None:
    single = ProbePool(max_concurrency=1, per_target=1)
    order: list[int] = []
    blocker = threading.Event()
    single.submit("t", "block", blocker.wait)
    late = [single.submit(f"t{n}", "read", lambda n=n: order.append(n), priority=n)
            for n in (5, 3, 9, 1)]
    blocker.set()
    for p in late:
        p.result()
    single.close()
    assert order == [1, 3, 5, 9]


def test_time_queued_is_not_time_taken() -> None:
    single = ProbePool(max_concurrency=1, per_target=1)
    probes = [single.submit(f"t{i}", "read", lambda: time.sleep(0.05)) for i in range(5)]
    for p in probes:
        p.result()
    single.close()
    last = probes[-1].timing
    assert last is not None
    assert last.elapsed_s < 0.15  # its own sleep
    assert last.waited_s >= 0.15  # behind four others
    assert "queued" in last.line()


def test_threads_start_as_slow_probes_need_them_not_for_fast_ones() -> None:
    """Quick probes are CPU: the first EAGER_THREADS threads do them all. Probes that wait
    (slow or hung targets) bring more threads, up to the limit, whether a reader waits or
    not."""
    wide = ProbePool(max_concurrency=16, per_target=2)
    try:
        with wide.held():
            quick = [wide.submit(f"q{i}", "read", lambda: sum(range(100))) for i in range(300)]
        assert all(p.result() == 4950 for p in quick)
        # EAGER_THREADS did them; a probe the machine stalled may have added one or two.
        assert len(wide._threads) < 16
        peak = Peak()
        with wide.held():
            slow = [wide.submit(f"s{i}", "read", sleeper(peak, f"s{i}", 0.1)) for i in range(64)]
        wide.wait_idle()  # no reader nudges: the threads' own slow probes grow the pool
        assert all(p.done() for p in slow)
        assert peak.peak["*"] == 16
    finally:
        wide.close()
    fresh = ProbePool(max_concurrency=16, per_target=2)
    hung = threading.Event()
    try:
        with fresh.held():
            stuck = [fresh.submit(f"h{i}", "read", lambda: hung.wait(10))
                     for i in range(EAGER_THREADS)]
            late = fresh.submit("late", "read", lambda: "answered")
        # Every thread there waits on a hung target: the reader's wait starts another.
        assert late.result() == "answered"
        assert not any(p.done() for p in stuck)
        hung.set()
        assert all(p.result() for p in stuck)
    finally:
        hung.set()
        fresh.close()


def test_wait_idle_returns_when_everything_ran(pool: ProbePool) -> None:
    peak = Peak()
    probes = [pool.submit(f"t{i}", "read", sleeper(peak, f"t{i}")) for i in range(10)]
    pool.wait_idle()
    assert all(p.done() for p in probes)


def test_an_exception_of_a_read_is_raised_to_its_reader(pool: ProbePool) -> None:
    def broken() -> None:
        raise ValueError("no such column")
    with pytest.raises(ValueError, match="no such column"):
        pool.submit("db", "q", broken).result()


# -- the plugin, against a real HTTP server ---------------------------------------------


class RecordingServer:
    """HTTP on 127.0.0.1 that answers every GET after ``delay_s`` and records each path
    and how many requests it was holding at once, per ``Host`` port-free target label."""

    def __init__(self, delay_s: float = 0.05) -> None:
        owner = self
        self.paths: list[str] = []
        self.peak = Peak()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target = self.path.split("/")[1]
                owner.peak.enter(target)
                owner.paths.append(self.path)
                time.sleep(delay_s)
                owner.peak.leave(target)
                send_json(self, b'{"status": "healthy"}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = serve_http(Handler)
        self.port = self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recording() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.close()


def ran(checks: dict[str, Any]) -> dict[str, Any]:
    """The checks that had a target (not the SKIPs of checks this environment gives none)."""
    return {name: c for name, c in checks.items() if c["outcome"] != "SKIP"}


def http_environment(port: int, targets: int, checks: int, settings: str = "") -> str:
    """``targets`` HTTP targets; target ``tN`` has health ``/tN/health`` and ``checks``
    declared checks ``/tN/cK`` (paths name the target, so the server can count per target)."""
    lines = [f"settings: {{timeout_s: 5{settings}}}", "targets:"]
    for t in range(targets):
        lines += [f"  t{t}:", "    type: http", f"    url: http://127.0.0.1:{port}",
                  f"    health: {{path: /t{t}/health}}", "    http_checks:"]
        lines += [f"      - {{name: c{k}, path: /t{t}/c{k}}}" for k in range(checks)]
    return "\n".join(lines) + "\n"


def test_one_target_never_sees_more_than_its_limit(project: Any, recording: RecordingServer,
                                                   ) -> None:
    project.copy_check("checks/health/test_http.py")
    result, checks = project.run_checks("probed", http_environment(recording.port, 1, 12),
                                        "-m", "daily or not daily")
    checks = ran(checks)
    assert result.returncode == 0, result.output
    assert len(checks) == 13
    assert recording.peak.peak["t0"] == 2  # per_target_concurrency's default


def test_the_global_limit_and_one_get_per_path(project: Any, recording: RecordingServer,
                                               ) -> None:
    project.copy_check("checks/health/test_http.py")
    env = http_environment(recording.port, 12, 2, ", max_concurrency: 4, "
                                                  "per_target_concurrency: 1")
    result, checks = project.run_checks("probed", env, "-m", "daily or not daily")
    checks = ran(checks)
    assert result.returncode == 0, result.output
    assert len(checks) == 36
    assert recording.peak.peak["*"] == 4
    assert max(recording.peak.peak[f"t{t}"] for t in range(12)) == 1
    # The reachability probe's GET of the health path is the health check's answer.
    assert Counter(recording.paths) == Counter(
        [f"/t{t}/health" for t in range(12)] + [f"/t{t}/c{k}" for t in range(12)
                                                 for k in range(2)])


def test_response_times_exclude_time_queued(project: Any, recording: RecordingServer) -> None:
    project.copy_check("checks/health/test_http.py")
    env = http_environment(recording.port, 1, 10, ", per_target_concurrency: 1")
    result, checks = project.run_checks("probed", env, "-m", "daily or not daily")
    checks = ran(checks)
    assert result.returncode == 0, result.output
    # Ten GETs of 50 ms one after another: the last waited ~450 ms in the queue, yet its
    # response time is its own round trip.
    for name, check in checks.items():
        times = [m["value"] for m in check["evidence"] if m["name"].endswith("response time")]
        assert times, name
        assert times[0] < 250, (name, times)
    queued = [check["probes"] for check in checks.values()]
    assert all(len(p) == 1 and "queued" in p[0] for p in queued), queued


def test_ten_hung_targets_cost_one_deadline(project: Any, hung_server: Any) -> None:
    project.copy_check("checks/health/test_http.py")
    lines = ["settings: {timeout_s: 1}", "targets:"]
    for t in range(10):
        lines += [f"  hung{t}:", "    type: http", f"    url: http://127.0.0.1:{hung_server.port}",
                  f"    health: {{path: /h{t}}}",
                  "    http_checks: [{name: a, path: /a}, {name: b, path: /b}]"]
    result, checks = project.run_checks("hung", "\n".join(lines) + "\n",
                                        "-m", "daily or not daily")
    checks = ran(checks)
    assert result.returncode == 1, result.output
    assert len(checks) == 30
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}
    assert all("no complete answer within 1 s" in c["message"] or "no answer within 1 s"
               in c["message"] for c in checks.values()), checks
    # Only the gates connected: each target's other reads took the gate's error.
    assert len(hung_server.accepted) == 10
    # Serially this is 10 deadlines (30 without the gates); concurrently about one.
    assert result.duration_s < 10, result.duration_s
    # Every gate started at once: none queued behind another's deadline (the probe process
    # grows its threads while they wait, as the parent's readers make it do here).
    queued = [float(m.group(1)) for c in checks.values() for line in c["probes"]
              if (m := re.search(r"reachable: .* \(queued ([\d.]+) ms\)", line))]
    assert len(queued) == 30, queued
    assert max(queued) < 500, queued


def test_under_xdist_each_worker_prefetches_only_its_own_items(
        project: Any, recording: RecordingServer) -> None:
    project.copy_check("checks/health/test_http.py")
    project.write("environments/probed.yaml", http_environment(recording.port, 6, 5))
    result = project.run("--env", "probed", "-n", "2", "-m", "daily or not daily")
    assert result.returncode == 0, result.output
    assert "36 passed" in result.stdout
    declared = [p for p in recording.paths if not p.endswith("/health")]
    # Every declared read was made once: no worker read what the other one judged.
    assert Counter(declared) == Counter(f"/t{t}/c{k}" for t in range(6) for k in range(5))


def test_collect_only_contacts_nothing(project: Any, recording: RecordingServer) -> None:
    project.copy_check("checks/health/test_http.py")
    project.write("environments/probed.yaml", http_environment(recording.port, 3, 3))
    result = project.run("--env", "probed", "--collect-only", "-q")
    assert result.returncode == 0, result.output
    assert recording.paths == []


def test_held_submissions_start_together(pool: ProbePool) -> None:
    ran: list[str] = []
    with pool.held():
        probes = [pool.submit(f"t{i}", "read", lambda i=i: ran.append(f"t{i}"))
                  for i in range(6)]
        time.sleep(0.05)
        assert ran == []  # nothing starts while the submitter is still submitting
    for p in probes:
        p.result()
    assert sorted(ran) == [f"t{i}" for i in range(6)]


def test_the_documented_example_is_a_prefetched_check_in_one_file(project: Any) -> None:
    """docs/architecture.md's worked example, copied as a newcomer would, runs against a
    real Redis: PASS under its threshold, FAIL over one the environment sets."""
    from tests.conftest import ROOT, sandbox_subset

    doc = (ROOT / "docs" / "architecture.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    project.write("checks/capacity/test_redis.py", example)
    env = sandbox_subset({"redis"})
    project.write_env(env)
    result = project.run("-m", "daily", "-p", "no:xdist")
    assert result.returncode == 0, result.output
    passed = project.checks()["test_key_count[cache]"]
    assert passed["outcome"] == "PASS"
    assert passed["probes"]
    assert "redis_dbsize" in passed["probes"][0]
    keys = passed["evidence"][0]["value"]
    assert keys > 0  # the sandbox seeds its Redis
    env["thresholds"] = {"redis.keys": {"warn": 0, "crit": keys - 1}}
    project.write_env(env)
    result = project.run("-m", "daily", "-p", "no:xdist")
    assert result.returncode == 1, result.output
    failed = project.checks()["test_key_count[cache]"]
    assert failed["outcome"] == "FAIL"
    assert f"redis.keys = {keys} keys, expected ≤ {keys - 1}" in failed["message"]


def test_a_probe_s_own_error_is_the_check_s_fail_not_an_error(project: Any) -> None:
    """A declared query that writes, or does not parse, FAILs its check (as it would read
    inline); the server stays reachable, so the target's other checks are unaffected."""
    from tests.conftest import sandbox_subset

    project.copy_check("checks/health/test_postgres.py")
    env = sandbox_subset({"postgres"})
    env["targets"]["db"]["sql_checks"] += [
        {"name": "writes", "query": "DELETE FROM runs", "expect": {"max": 0}},
        {"name": "broken", "query": "SELECT count(*) FROM no_such_table", "expect": {"max": 0}},
    ]
    project.write_env(env)
    result = project.run("-m", "daily", "-p", "no:xdist", "--target", "db")
    assert result.returncode == 1, result.output
    checks = project.checks()
    writes, broken = checks["test_sql_check[db:writes]"], checks["test_sql_check[db:broken]"]
    assert writes["outcome"] == "FAIL"
    assert "refusing" in writes["message"]
    assert "DELETE" in writes["message"]
    assert broken["outcome"] == "FAIL"
    assert "no_such_table" in broken["message"]
    assert checks["test_sql_check[db:no_stuck_runs]"]["outcome"] == "PASS"
    assert checks["test_accepts_queries[db]"]["outcome"] == "PASS"
