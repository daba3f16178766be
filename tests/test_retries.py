"""Retries that do not lie: ``settings.retries`` (or a target's ``retries``) tries a probe
that could not be evaluated again, with backoff and within a total bound; an answer, even a
failing one, is judged once. A check that passed only on a later attempt says so in
``summary.json``, the terminal and the HTML report.

The plugin's behaviour is tested against real servers: an HTTP server that drops its first
connections unanswered (a server restarting behind its port), a port nothing listens on, a
real Redis that refuses our password, a socket that never answers. The pool's own rules are
tested on functions, as in tests/test_probes.py.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis

from opsverify.errors import TargetUnavailable
from opsverify.probes import ATTEMPT_GRACE_S, ProbePool, Retry
from opsverify.sandbox.process import free_port
from tests.conftest import send_json


class FlakyServer:
    """HTTP on 127.0.0.1 that accepts its first ``drop`` connections and closes them
    without an answer, then answers each GET with ``statuses`` (by path, default 200).
    It records every connection and every path it answered."""

    def __init__(self, drop: int = 0, statuses: dict[str, int] | None = None) -> None:
        owner = self
        self.drop = drop
        self.statuses = statuses or {}
        self.lock = threading.Lock()
        self.connections = 0
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner.lock:
                    owner.paths.append(self.path)
                status = owner.statuses.get(self.path, 200)
                send_json(self, b'{"status": "healthy"}' if status == 200
                          else b'{"status": "down"}', status)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                with owner.lock:
                    owner.connections += 1
                    return owner.connections > owner.drop  # False: closed unanswered

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky() -> Iterator[Callable[..., FlakyServer]]:
    made: list[FlakyServer] = []

    def start(drop: int = 0, statuses: dict[str, int] | None = None) -> FlakyServer:
        made.append(FlakyServer(drop, statuses))
        return made[-1]

    yield start
    for server in made:
        server.close()


def environment(port: int, settings: str = "", target: str = "", checks: int = 0) -> str:
    """One HTTP target ``api`` with health ``/health`` and ``checks`` declared checks."""
    lines = [f"settings: {{timeout_s: 2{settings}}}", "targets:", "  api:", "    type: http",
             f"    url: http://127.0.0.1:{port}", "    health: {path: /health}"]
    if target:
        lines.append(f"    {target}")
    if checks:
        lines += ["    http_checks:"] + [f"      - {{name: c{k}, path: /c{k}}}"
                                         for k in range(checks)]
    return "\n".join(lines) + "\n"


def run(project: Any, env: str, *args: str) -> tuple[Any, dict[str, Any]]:
    project.copy_check("checks/health/test_http.py")
    result, checks = project.run_checks("flaky", env, "-m", "daily or not daily", *args)
    return result, {name: c for name, c in checks.items() if c["outcome"] != "SKIP"}


HEALTH = "test_health[api:/health]"


def test_a_target_that_drops_its_first_connection_passes_after_2_attempts(
        project: Any, flaky: Callable[..., FlakyServer]) -> None:
    server = flaky(drop=1)
    result, checks = run(project, environment(server.port, ", retries: 2", checks=2), "-v")
    assert result.returncode == 0, result.output
    assert set(checks) == {HEALTH, "test_http_check[api:c0]", "test_http_check[api:c1]"}
    assert {c["outcome"] for c in checks.values()} == {"PASS"}
    # The gate retried before its dependants would have taken its error: they all waited
    # and each depended on the retry (without it, each would be an ERROR).
    assert {name: c["attempts"] for name, c in checks.items()} == dict.fromkeys(checks, 2)
    # One dropped connection, then each path read once.
    assert server.connections == 4
    assert Counter(server.paths) == Counter(["/health", "/c0", "/c1"])
    probe_line = checks[HEALTH]["probes"][0]
    assert "attempt 2" in probe_line
    assert "earlier: cannot connect: remote end closed" in probe_line
    # The terminal: the verbose status and the flaky section.
    assert f"{HEALTH} PASSED after 2 attempts" in result.stdout
    assert "opsverify: flaky: 3 passed after a retry" in result.stdout
    assert f"FLAKY checks/health/test_http.py::{HEALTH}: passed after 2 attempts" in result.stdout
    # The HTML report's header counts them as flaky, each with its note.
    html = (project.latest("flaky") / "report.html").read_text()
    assert re.search(r"<th[^>]*>Flaky</th><td>3: [^<]*test_health\[api:/health\] passed "
                     r"after 2 attempts", html), html[:3000]
    assert "attempt 2" in html  # the probe line in the check's evidence block


def test_a_target_down_longer_than_its_retries_is_an_error_after_n_plus_1_attempts(
        project: Any, flaky: Callable[..., FlakyServer]) -> None:
    server = flaky(drop=100)
    result, checks = run(project, environment(server.port, ", retries: 2", checks=1))
    assert result.returncode == 1, result.output
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}
    assert {c["attempts"] for c in checks.values()} == {3}
    assert server.connections == 3  # the gate's three attempts; its dependants read nothing
    assert server.paths == []
    line = checks[HEALTH]["probes"][0]
    taken = float(re.search(r"attempt 3, ([0-9.]+) s after the first", line).group(1))  # type: ignore[union-attr]
    # Backoff 0.5 s then 1 s; the bound is every attempt's allowance (deadline + 2 s of
    # client grace) plus every backoff.
    assert 1.5 <= taken <= Retry(2, 2.0 + ATTEMPT_GRACE_S, every).bound_s == 13.5
    assert "FLAKY" not in result.stdout
    html = (project.latest("flaky") / "report.html").read_text()
    assert re.search(r"<th[^>]*>Flaky</th><td>0</td>", html)


def test_a_refused_connection_is_retried_and_its_cause_kept(project: Any) -> None:
    port = free_port()  # nothing listens there
    result, checks = run(project, environment(port, ", retries: 1"))
    assert result.returncode == 1, result.output
    health = checks[HEALTH]
    assert (health["outcome"], health["attempts"]) == ("ERROR", 2)
    assert "connection refused" in health["message"]
    assert "earlier: cannot connect: connection refused" in health["probes"][0]


def test_a_failing_answer_is_judged_once_and_stays_a_fail(
        project: Any, flaky: Callable[..., FlakyServer]) -> None:
    server = flaky(statuses={"/health": 503, "/c0": 503})
    result, checks = run(project, environment(server.port, ", retries: 3", checks=1))
    assert result.returncode == 1, result.output
    assert checks[HEALTH]["outcome"] == "FAIL"
    assert checks["test_http_check[api:c0]"]["outcome"] == "FAIL"
    assert "status = 503" in checks[HEALTH]["message"]
    assert {c["attempts"] for c in checks.values()} == {1}
    # The server saw exactly one request for each: a 503 is an answer, never retried.
    assert server.connections == 2
    assert Counter(server.paths) == Counter(["/health", "/c0"])


def test_no_retries_by_default(project: Any, flaky: Callable[..., FlakyServer]) -> None:
    server = flaky(drop=1)
    result, checks = run(project, environment(server.port, checks=1))
    assert result.returncode == 1, result.output
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}
    assert {c["attempts"] for c in checks.values()} == {1}
    assert server.connections == 1
    assert "attempt" not in checks[HEALTH]["probes"][0]
    assert "remote end closed" in checks[HEALTH]["message"]


def test_a_target_s_retries_override_the_settings(
        project: Any, flaky: Callable[..., FlakyServer]) -> None:
    server = flaky(drop=1)
    result, checks = run(project, environment(server.port, ", retries: 0", "retries: 1"))
    assert result.returncode == 0, result.output
    assert (checks[HEALTH]["outcome"], checks[HEALTH]["attempts"]) == ("PASS", 2)
    none = flaky(drop=1)
    result, checks = run(project, environment(none.port, ", retries: 3", "retries: 0"))
    assert result.returncode == 1, result.output
    assert (checks[HEALTH]["outcome"], checks[HEALTH]["attempts"]) == ("ERROR", 1)
    assert none.connections == 1


def test_a_refused_login_is_not_retried(project: Any,
                                        start_redis: Callable[..., int]) -> None:
    """A wrong password stays wrong, and repeated failed logins can lock an account."""
    port = start_redis("requirepass right-password")
    project.copy_check("checks/health/test_redis.py")
    env = ("settings: {timeout_s: 2, retries: 3}\ntargets:\n  cache:\n    type: redis\n"
           f"    url: redis://:wrong-password@127.0.0.1:{port}/0\n")
    result, checks = project.run_checks("login", env, "-m", "daily", "--target", "cache")
    assert result.returncode == 1, result.output
    ran = {name: c for name, c in checks.items() if c["outcome"] != "SKIP"}
    assert ran
    assert {(c["outcome"], c["attempts"]) for c in ran.values()} == {("ERROR", 1)}
    assert "authentication failed" in next(iter(ran.values()))["message"]
    # The server logged one refused login: ours, once.
    log: list[dict[str, Any]] = redis.Redis(port=port, password="right-password").acl_log()
    assert sum(entry["count"] for entry in log if entry["reason"] == "auth") == 1, log


def test_hung_targets_retry_concurrently(project: Any, hung_server: Any) -> None:
    """Ten hung targets, one retry each: two deadlines and a backoff, not twenty."""
    project.copy_check("checks/health/test_http.py")
    lines = ["settings: {timeout_s: 1, retries: 1}", "targets:"]
    for t in range(10):
        lines += [f"  hung{t}:", "    type: http", f"    url: http://127.0.0.1:{hung_server.port}",
                  f"    health: {{path: /h{t}}}", "    http_checks: [{name: a, path: /a}]"]
    result, checks = project.run_checks("hung", "\n".join(lines) + "\n",
                                        "-m", "daily or not daily")
    ran = {name: c for name, c in checks.items() if c["outcome"] != "SKIP"}
    assert result.returncode == 1, result.output
    assert len(ran) == 20
    assert {(c["outcome"], c["attempts"]) for c in ran.values()} == {("ERROR", 2)}
    assert len(hung_server.accepted) == 20  # each gate twice; nothing else connected
    assert result.duration_s < 15, result.duration_s


# -- the pool's own rules, on functions ---------------------------------------------------


def unavailable_times(n: int, then: object = "answer") -> Callable[[], object]:
    """A read that is unavailable ``n`` times, then answers ``then``; counts its calls."""
    calls: list[float] = []

    def fn() -> object:
        calls.append(time.monotonic())
        if len(calls) <= n:
            raise TargetUnavailable("t", "127.0.0.1:1", f"refused {len(calls)}")
        return then
    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def every(exc: BaseException) -> bool:
    return isinstance(exc, TargetUnavailable)


def test_backoff_is_spent_off_the_threads() -> None:
    """While one target waits out its backoff, the only thread reads another target."""
    single = ProbePool(max_concurrency=1, per_target=1)
    flaky_read = unavailable_times(1)
    first = single.submit("a", "r", flaky_read, retry=Retry(1, 1.0, every))
    other = single.submit("b", "r", time.monotonic)
    assert first.result() == "answer"
    calls: list[float] = flaky_read.calls  # type: ignore[attr-defined]
    assert calls[0] < other.result() < calls[1]
    assert calls[1] - calls[0] >= 0.5
    assert first.timing is not None
    assert first.timing.attempts == 2
    single.close()


def test_dependants_wait_for_the_gate_s_last_attempt() -> None:
    pool = ProbePool()
    gate = pool.gate("t", "reachable", unavailable_times(2), retry=Retry(2, 1.0, every))
    read = pool.submit("t", "read", lambda: "read")
    assert read.result() == "read"
    assert gate.timing is not None
    assert gate.timing.attempts == 3
    assert gate.timing.earlier == ("refused 1", "refused 2")
    pool.close()


def test_an_error_that_is_not_retryable_is_not_retried() -> None:
    pool = ProbePool()
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("no such column")

    with pytest.raises(ValueError, match="no such column"):
        pool.submit("t", "q", broken, retry=Retry(3, 1.0, every)).result()
    assert calls == [1]
    pool.close()


def test_no_attempt_starts_that_could_end_past_the_bound() -> None:
    """A retry queued behind a slow read of its target until its deadline no longer fits
    keeps the last attempt's error."""
    single = ProbePool(max_concurrency=1, per_target=1)
    retry = Retry(1, 0.5, every)  # bound 0.5 + 0.5 + 0.5 = 1.5 s
    flaky_read = unavailable_times(1)
    first = single.submit("t", "flaky", flaky_read, retry=retry)
    single.submit("t", "slow", lambda: time.sleep(1.2), priority=1)
    with pytest.raises(TargetUnavailable, match="refused 1"):
        first.result()
    assert len(flaky_read.calls) == 1  # type: ignore[attr-defined]
    assert first.timing is not None
    assert first.timing.attempts == 1
    single.close()
