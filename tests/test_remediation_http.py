"""clear_cache against the real demo service: the one POST opsverify sends, gated three
times, planned, bounded, applied, audited and re-checked by the declared health GETs.

The service is the sandbox's own (``AppServer``) with its ``cache-stale`` fault; what changed
is read from it with plain requests (``/performance/cache-status`` and the request counters
of ``/metrics``), outside opsverify's clients.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pydantic import ValidationError

from opsverify.errors import WriteRefused
from opsverify.remediation import Remediation
from opsverify.remediation.http import ClearCache, ClearCacheSettings
from opsverify.sandbox.app import AppServer
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.demo_app import CACHE_ENTRIES
from opsverify.sandbox.spec import AppComponent
from opsverify.targets.http import HttpClient, HttpTarget, HttpWriteClient
from tests.conftest import ROOT, Project, Result, running

CHECK = "test_clear_cache[api]"
DETAILED = "test_health[api:/health/detailed]"
CLEAR = "/performance/cache/clear"


def start_app(tmp_path: Path, *faults: str) -> Iterator[AppServer]:
    ctx = SandboxContext(tmp_path / "sandbox", secrets.token_hex(8), frozenset(faults))
    ctx.workdir.mkdir()
    yield from running(AppServer(AppComponent(), ctx))


@pytest.fixture
def stale(tmp_path: Path) -> Iterator[AppServer]:
    """The demo service with cache-stale: every cached search result is past its TTL."""
    yield from start_app(tmp_path, "cache-stale")


def cache(app: AppServer) -> dict[str, Any]:
    stats = requests.get(f"{app.url}/performance/cache-status", timeout=5).json()
    return dict(stats["cache_stats"])


def posts(app: AppServer) -> float:
    """How many cache clears the service answered (its own request counter)."""
    metrics = requests.get(f"{app.url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("http_requests_total{") and f'path="{CLEAR}"' in line)


def target(app: AppServer, **changes: Any) -> dict[str, Any]:
    full = yaml.safe_load((ROOT / "environments" / "sandbox.yaml").read_text())
    found = dict(full["targets"]["api"], url=app.url)
    assert found["remediation"] == {"clear_cache": {"path": CLEAR}}
    found.update(changes)
    return {k: v for k, v in found.items() if v is not None}


def environment(app: AppServer, **changes: Any) -> str:
    """sandbox.yaml's api target, pointed at this service (no sandbox section)."""
    return yaml.safe_dump({"settings": {"timeout_s": 3}, "targets": {"api": target(app,
                                                                                   **changes)}},
                          sort_keys=False)


def run(project: Project, env: str, *args: str) -> tuple[Result, dict[str, Any]]:
    project.copy_check("checks/remediation/test_http.py")
    project.copy_check("checks/health/test_http.py")
    return project.run_checks("web", env, "checks/remediation", *args, timeout=90)


def audit(project: Project) -> list[dict[str, str]]:
    path = project.reports / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- the clients: POST only where declared, reads only on the read-only session -------------
def test_only_the_declared_post_leaves_the_process(stale: AppServer) -> None:
    spec = HttpTarget.model_validate(target(stale))
    reader = HttpClient("api", spec, 3)
    with pytest.raises(WriteRefused, match="refusing HTTP POST from a non-destructive check"):
        reader.session.post(stale.url + CLEAR)
    assert not hasattr(reader, "post")
    writer = HttpWriteClient("api", spec, 3)
    with pytest.raises(WriteRefused, match=r"refusing HTTP POST /api/admin/stats: not a "
                                           r"declared remediation path \(declared: "
                                           r"/performance/cache/clear\)"):
        writer.post("/api/admin/stats")
    with pytest.raises(WriteRefused, match="refusing HTTP GET on the POST-only session"):
        writer.poster.get(stale.url + "/health")
    with pytest.raises(WriteRefused, match="refusing HTTP POST from a non-destructive check"):
        writer.session.post(stale.url + CLEAR)
    assert posts(stale) == 0
    assert cache(stale)["entries"] == CACHE_ENTRIES
    reader.close()
    writer.close()


def test_clear_cache_needs_a_declared_health_get() -> None:
    with pytest.raises(ValidationError, match=r"remediation\.clear_cache needs a declared "
                                              r"health GET"):
        HttpTarget(type="http", url="http://127.0.0.1:9",
                   remediation={"clear_cache": {"path": CLEAR}})
    with pytest.raises(ValidationError, match="should match pattern"):
        ClearCacheSettings(path="performance/cache/clear")


# -- (1) three opt-ins ----------------------------------------------------------------------
def test_nothing_runs_without_each_of_the_three_opt_ins(stale: AppServer,
                                                       project: Project) -> None:
    result, checks = run(project, environment(stale, remediation=None),
                         "-m", "destructive", "--allow-destructive=web")
    [skipped] = checks.values()
    assert skipped["outcome"] == "SKIP", result.output
    assert "no http target declares clear_cache" in skipped["message"]
    result, _ = run(project, environment(stale), "--allow-destructive=web")
    assert "1 destructive check(s) deselected: a destructive check runs only when selected " \
        "by name: add -m destructive" in result.stdout, result.output
    result, _ = run(project, environment(stale), "-m", "destructive")
    assert "1 destructive check(s) deselected: they change systems; add " \
        "--allow-destructive=web" in result.stdout, result.output
    assert posts(stale) == 0
    assert cache(stale)["stale_entries"] == CACHE_ENTRIES
    assert audit(project) == []


# -- (2) --plan, and the stock check that catches the fault ----------------------------------
def test_plan_lists_the_post_with_what_the_health_says_and_changes_nothing(
        stale: AppServer, project: Project) -> None:
    result, checks = run(project, environment(stale), "-m", "destructive",
                         "--allow-destructive=web", "--plan")
    assert result.returncode == 0, result.output
    outcome = checks[CHECK]
    assert outcome["outcome"] == "PLAN", result.output
    [planned] = outcome["plan"]
    assert planned.startswith(f"api: clear_cache POST {CLEAR} (GET /health/detailed status = "
                              "503 (expected 200); /health/detailed status = 'degraded' "
                              "(expected 'healthy'); /health/detailed components.cache.status "
                              "= 'stale' (expected 'healthy') [backend memory, entries 12, "
                              "oldest_age_s "), planned
    assert "ttl_s 3600, stale_entries 12]" in planned
    assert posts(stale) == 0
    assert cache(stale)["entries"] == CACHE_ENTRIES
    assert audit(project) == []
    # The stock check catches it, and only the health GET that reports the cache.
    result, checks = project.run_checks("web", environment(stale), "-m", "daily",
                                        "checks/health/test_http.py")
    red = {name: c for name, c in checks.items() if c["outcome"] != "PASS"}
    assert set(red) == {DETAILED}, result.output
    failing = {m["name"]: m["value"] for m in red[DETAILED]["evidence"] if m["verdict"] == "FAIL"}
    assert failing == {"GET /health/detailed status": 503,
                       "/health/detailed status": "degraded",
                       "/health/detailed components.cache.status": "stale"}


# -- (3) apply, audit, re-check; a daily run afterwards is green -----------------------------
def test_apply_posts_once_audits_and_rechecks(stale: AppServer, project: Project) -> None:
    result, checks = run(project, environment(stale), "-m", "destructive",
                         "--allow-destructive=web")
    assert result.returncode == 0, result.output
    assert posts(stale) == 1
    assert cache(stale)["entries"] == 0
    [entry] = audit(project)
    assert {k: entry[k] for k in ("env", "target", "action", "identity", "result")} == {
        "env": "web", "target": "api", "action": "clear_cache",
        "identity": f"POST {CLEAR}", "result": "applied"}
    assert "components.cache.status = 'stale'" in entry["before"]
    assert entry["after"] == ('POST answered 200 ({"status": "cleared", "cleared": 12}); '
                              "declared health passes (GET /health 200, GET /health/detailed "
                              "200)")
    outcome = checks[CHECK]
    assert outcome["outcome"] == "PASS"
    evidence = {m["name"]: (m["value"], m["verdict"]) for m in outcome["evidence"]}
    assert evidence["/health/detailed components.cache.status"] == ("healthy", "PASS")
    assert evidence["GET /health/detailed status"] == (200, "PASS")
    result, checks = project.run_checks("web", environment(stale), "-m", "daily",
                                        "checks/health/test_http.py")
    assert result.returncode == 0, result.output
    assert {c["outcome"] for c in checks.values()} == {"PASS"}


# -- (4) drift between plan and apply -------------------------------------------------------
def test_a_cache_cleared_between_plan_and_apply_is_skipped(stale: AppServer,
                                                           tmp_path: Path) -> None:
    client = HttpWriteClient("api", HttpTarget.model_validate(target(stale)), 3)
    action = ClearCache(client, ClearCacheSettings(path=CLEAR))
    engine = Remediation(env="web", operator="tester", check="t", run_id="r1",
                         audit_path=tmp_path / "audit.jsonl", max_actions=5, plan_only=False)
    plan = engine.plan(action)
    assert [i.identity for i in plan.items] == [f"POST {CLEAR}"]
    requests.post(stale.url + CLEAR, timeout=5)  # someone cleared it meanwhile
    outcome = engine.apply(action, plan)
    assert outcome.applied == []
    assert [why for _, why in outcome.skipped] == [
        "the declared health passes again: nothing to clear"]
    assert posts(stale) == 1, "opsverify posted as well"
    [entry] = engine.audited
    assert entry["result"] == "skipped: the declared health passes again: nothing to clear"
    client.close()


# -- (5) over --max-actions: refused whole ---------------------------------------------------
def test_a_plan_over_max_actions_is_refused_with_nothing_touched(
        stale: AppServer, project: Project) -> None:
    result, checks = run(project, environment(stale), "-m", "destructive",
                         "--allow-destructive=web", "--max-actions=0")
    assert result.returncode == 1, result.output
    message = checks[CHECK]["message"]
    assert message.startswith("api: clear_cache: refused whole, nothing changed: plan ")
    assert "lists 1 items, over --max-actions=0" in message
    assert posts(stale) == 0
    assert cache(stale)["entries"] == CACHE_ENTRIES
    assert audit(project) == []


# -- (6) failures: the POST refused; the POST answered but the health still fails ------------
def test_a_refused_post_is_a_failure_and_exits_1(stale: AppServer, project: Project) -> None:
    env = environment(stale, remediation={"clear_cache": {"path": "/performance/cache/flush"}})
    result, checks = run(project, env, "-m", "destructive", "--allow-destructive=web")
    assert result.returncode == 1, result.output
    assert checks[CHECK]["message"].startswith(
        "api: clear_cache stopped at a failure: applied 0 of 1 (plan ")
    assert checks[CHECK]["message"].endswith(
        'failed: POST /performance/cache/flush: POST /performance/cache/flush answered 404: '
        '{"detail": "Not Found"}')
    assert [e["result"].split(":")[0] for e in audit(project)] == ["failed"]
    assert cache(stale)["entries"] == CACHE_ENTRIES


def test_a_post_that_does_not_fix_the_health_is_a_failure(tmp_path: Path,
                                                          project: Project) -> None:
    """The cache is stale and the model is not loaded: clearing the cache is not enough."""
    for app in start_app(tmp_path, "cache-stale", "app-unhealthy"):
        result, checks = run(project, environment(app), "-m", "destructive",
                             "--allow-destructive=web")
        assert result.returncode == 1, result.output
        message = checks[CHECK]["message"]
        assert "failed: POST /performance/cache/clear: POST answered 200 ({\"status\": " \
            "\"cleared\", \"cleared\": 12}), but the declared health still fails: " \
            "GET /health status = 503 (expected 200)" in message, message
        assert "components.embedding_model.status = 'unhealthy'" in message
        assert "components.cache.status" not in message.split("still fails")[1]
        assert cache(app)["entries"] == 0  # done, and said so: the audit has it
        [entry] = audit(project)
        assert entry["result"].startswith("failed: POST answered 200")
