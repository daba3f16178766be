"""Each sandbox fault turns exactly the checks that should catch it red, and their evidence in
summary.json says why: ``pytest -m daily --sandbox-fault NAME`` against the real sandbox."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEALTH = "checks/health/test_http.py::test_health[api:{}]"
DETAILED = HEALTH.format("/health/detailed")




Judge = Callable[[Any], bool]


@dataclass(frozen=True)
class Caught:
    """What a fault must turn red, and the evidence that must say why."""

    # Targets whose every check is an ERROR whose message contains ``cause``.
    down: Callable[[dict[str, Any]], set[str]] = lambda env: set()
    cause: str = ""
    # Checks that FAIL -> {measurement name: what its failing value must satisfy}.
    fails: dict[str, dict[str, Judge]] = field(default_factory=dict)


def of_type(kind: str) -> Callable[[dict[str, Any]], set[str]]:
    return lambda env: {n for n, t in env["targets"].items() if t["type"] == kind}


CAUGHT = {
    "none": Caught(),
    "db-down": Caught(
        down=of_type("postgres"), cause="connection refused",
        fails={DETAILED: {"GET /health/detailed status": lambda v: v == 503,
                          "/health/detailed components.database.status":
                              lambda v: v == "unhealthy"}}),
    "redis-down": Caught(
        down=of_type("redis"), cause="connection refused",
        fails={DETAILED: {"GET /health/detailed status": lambda v: v == 503,
                          "/health/detailed components.cache.status":
                              lambda v: v == "unhealthy"}}),
    "app-unhealthy": Caught(fails={
        HEALTH.format("/health"): {"GET /health status": lambda v: v == 503,
                                   "/health status": lambda v: v == "unhealthy"},
        DETAILED: {"GET /health/detailed status": lambda v: v == 503,
                   "/health/detailed components.embedding_model.status":
                       lambda v: v == "unhealthy"},
        # The same service over TLS: verified, and as unhealthy.
        "checks/health/test_http.py::test_health[api-tls:/health]": {
            "GET /health status": lambda v: v == 503,
            "/health status": lambda v: v == "unhealthy"}}),
    "slow-app": Caught(fails={
        "checks/health/test_http.py::test_latency_p95[api:/health]":
            {"http.latency_p95_ms": lambda v: v > 300},
        "checks/health/test_http.py::test_response_time[api:/health]":
            {"http.response_ms": lambda v: v > 300}}),
    "idle-connections": Caught(fails={
        "checks/capacity/test_postgres.py::test_stale_idle_sessions[db]":
            {"postgres.stale_idle_sessions": lambda v: v == 4}}),
    "cert-expired": Caught(
        down=lambda env: {"api-tls"},
        cause="TLS verification failed: certificate verify failed: certificate has expired"),
    "pg-connections-exhausted": Caught(fails={
        f"checks/capacity/test_postgres.py::test_connections_used[{t}]":
            {"postgres.connections_used_pct": lambda v: v >= 90} for t in ("db", "db-cluster")}),
    "replication-slot-stale": Caught(fails={
        "checks/capacity/test_postgres.py::test_replication_slots[db]":
            {"postgres.slot_retained_bytes": lambda v: v > 32 * 2**20}}),
    "blocking-lock": Caught(fails={
        "checks/health/test_postgres_locks.py::test_blocked_sessions[db]":
            {"postgres.lock_wait_s": lambda v: v > 1}}),
    "redis-idle-clients": Caught(fails={
        "checks/capacity/test_redis_clients.py::test_idle_clients[cache]":
            {"redis.idle_clients": lambda v: v == 4}}),
    "cache-stale": Caught(fails={
        DETAILED: {"GET /health/detailed status": lambda v: v == 503,
                   "/health/detailed components.cache.status": lambda v: v == "stale"}}),
    "redis-memory-full": Caught(fails={
        "checks/capacity/test_redis.py::test_memory_used_pct[cache]":
            {"redis.memory_used_pct": lambda v: 90 < v < 100}}),
    "stuck-run": Caught(fails={
        "checks/health/test_postgres.py::test_sql_check[db:no_stuck_runs]":
            {"sql.no_stuck_runs": lambda v: v == 1}}),
}


@pytest.mark.parametrize("fault", list(CAUGHT))
def test_fault_turns_exactly_its_checks_red_with_evidence(project: Any, fault: str) -> None:
    env = project.use_foundation()
    caught = CAUGHT[fault]
    args = ["--sandbox-fault", fault] if fault != "none" else []
    result = project.run("-m", "daily", *args)
    data = json.loads((project.latest() / "summary.json").read_text())
    checks = {c["nodeid"]: c for c in data["checks"]}
    red = {n: c for n, c in checks.items() if c["outcome"] in ("FAIL", "ERROR")}
    down = caught.down(env)
    errors = {n for n, c in checks.items() if c["target"] in down}
    assert set(red) == errors | set(caught.fails), {n: c["outcome"] for n, c in red.items()}
    assert result.returncode == (1 if red else 0), result.output

    for nodeid in errors:
        check = red[nodeid]
        assert check["outcome"] == "ERROR"
        assert check["message"].startswith(
            tuple(f"{check['target']} ({kind}127.0.0.1:"
                  for kind in ("postgres ", "redis ", "https://"))), check["message"]
        assert check["message"].endswith(caught.cause), check["message"]
        # One line, in the terminal too: the cause, not a traceback.
        assert "\n" not in check["message"]
        assert f"ERROR {nodeid}: {check['message']}" in result.stdout
    for nodeid, judges in caught.fails.items():
        check = red[nodeid]
        assert check["outcome"] == "FAIL", check
        failing = {m["name"]: m for m in check["evidence"] if m["verdict"] == "FAIL"}
        for name, judge in judges.items():
            assert name in failing, (name, check["evidence"])
            assert judge(failing[name]["value"]), failing[name]
            assert failing[name]["expected"], failing[name]
            # Stated in the terminal, as the reason of the failure.
            assert f"FAIL  {nodeid}: " in result.stdout
    if fault != "none":
        assert data["environment"]["sandbox_faults"] == [fault]
        assert f"injected faults: {fault}" in result.stdout
