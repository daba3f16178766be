"""restart_unhealthy against a real private Docker engine: gated three times, planned,
bounded, applied by container id, audited, re-checked.

What changed is read from the engine by the sandbox's own client (``StartedAt`` and the
health of each container), outside opsverify's clients. The engine runs the sandbox's
containers; ``container-unhealthy`` is injected before each test that needs it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsverify.remediation import Remediation
from opsverify.remediation.docker import RestartUnhealthy, RestartUnhealthySettings
from opsverify.sandbox.docker import (
    APP,
    IDLE,
    IMAGE,
    SCHEDULER,
    TAG,
    WORKER,
    DockerEngine,
    static_busybox,
)
from opsverify.targets.docker import DockerClient, DockerTarget
from tests.conftest import ROOT, Project, Result, private_docker_engine

pytestmark = pytest.mark.skipif(
    shutil.which("dockerd") is None or static_busybox() is None or os.geteuid() != 0,
    reason="a private Docker engine needs root, dockerd and a static busybox "
           "(apt-get install docker.io busybox-static)")
CHECK = "checks/remediation/test_docker.py::test_restart_unhealthy[docker]"
FAILING = {"test": ["CMD", "/usr/local/bin/healthcheck"], "interval": 10**9,
           "timeout": 10**9, "retries": 1, "start_period": 0}


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    yield from private_docker_engine()


@pytest.fixture
def unhealthy(engine: DockerEngine) -> DockerEngine:
    """The engine with gogooku3-app unhealthy for a few probes (the sandbox's fault)."""
    engine.inject(frozenset({"container-unhealthy"}))
    return engine


@pytest.fixture
def extra(engine: DockerEngine, tmp_path: Path) -> Iterator[Any]:
    """Starts more unhealthy containers for one test; removes them afterwards."""
    made: list[str] = []

    def run(name: str, **options: Any) -> None:
        engine.client().containers.run(
            f"{IMAGE}:{TAG}", ["/bin/sh", "-c", IDLE], name=name, detach=True,
            network_mode="none", healthcheck=FAILING, **options)
        made.append(name)

    yield run
    for name in made:
        engine.client().containers.get(name).remove(force=True)


def wait_unhealthy(engine: DockerEngine, *names: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        healths = [engine.client().api.inspect_container(n)["State"].get("Health") or {}
                   for n in names]
        if all(h.get("Status") == "unhealthy" and h.get("FailingStreak", 0) >= 3
               for h in healths):
            return
        time.sleep(0.2)
    raise AssertionError(f"{names} did not turn unhealthy")


def started(engine: DockerEngine, *names: str) -> dict[str, str]:
    """StartedAt of each container, as the engine says (the sandbox's own client)."""
    return {n: engine.client().api.inspect_container(n)["State"]["StartedAt"] for n in names}


def short_id(engine: DockerEngine, name: str) -> str:
    return str(engine.client().api.inspect_container(name)["Id"])[:12]


def environment(engine: DockerEngine, *, remediation: bool = True,
                containers: dict[str, Any] | None = None) -> str:
    """sandbox.yaml's docker target, pointed at this engine (no sandbox section)."""
    full = yaml.safe_load((ROOT / "environments" / "sandbox.yaml").read_text())
    target = dict(full["targets"]["docker"], url=engine.url)
    assert target["remediation"] == {"restart_unhealthy": {"unhealthy_for_s": 1}}
    if not remediation:
        target.pop("remediation")
    if containers is not None:
        target["containers"] = containers
    return yaml.safe_dump({"settings": {"timeout_s": 3}, "targets": {"docker": target}},
                          sort_keys=False)


def run(project: Project, env: str, *args: str) -> tuple[Result, dict[str, Any]]:
    project.copy_check("checks/remediation/test_docker.py")
    project.copy_check("checks/health/test_docker.py")
    return project.run_checks("dock", env, "checks/remediation", *args, timeout=150)


def audit(project: Project) -> list[dict[str, str]]:
    path = project.reports / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- (1) three opt-ins ----------------------------------------------------------------------
def test_nothing_runs_without_each_of_the_three_opt_ins(unhealthy: DockerEngine,
                                                       project: Project) -> None:
    before = started(unhealthy, APP)
    # The target's section does not enable it: not collected for the target.
    result, checks = run(project, environment(unhealthy, remediation=False),
                         "-m", "destructive", "--allow-destructive=dock")
    assert CHECK.split("::")[1] not in checks, result.output
    [skipped] = checks.values()
    assert skipped["outcome"] == "SKIP", result.output
    assert "no docker target declares restart_unhealthy" in skipped["message"]
    # Not selected with -m destructive: deselected, saying how.
    result, _ = run(project, environment(unhealthy), "--allow-destructive=dock")
    assert "1 destructive check(s) deselected: a destructive check runs only when selected " \
        "by name: add -m destructive" in result.stdout, result.output
    # Not allowed for the environment: deselected, saying how.
    result, _ = run(project, environment(unhealthy), "-m", "destructive")
    assert "1 destructive check(s) deselected: they change systems; add " \
        "--allow-destructive=dock" in result.stdout, result.output
    assert started(unhealthy, APP) == before
    assert audit(project) == []


# -- (2) --plan ------------------------------------------------------------------------------
def test_plan_lists_exactly_the_unhealthy_container_and_changes_nothing(
        unhealthy: DockerEngine, project: Project) -> None:
    names = (APP, WORKER, SCHEDULER)
    before = started(unhealthy, *names)
    result, checks = run(project, environment(unhealthy), "-m", "destructive",
                         "--allow-destructive=dock", "--plan")
    assert result.returncode == 0, result.output
    outcome = checks[CHECK.split("::")[1]]
    assert outcome["outcome"] == "PLAN", result.output
    [planned] = outcome["plan"]
    assert planned.startswith(f"docker: restart_unhealthy container {short_id(unhealthy, APP)} "
                              f"{APP} (unhealthy, failing streak "), planned
    assert "last probe: health probe failed: /tmp/healthy is missing" in planned
    assert started(unhealthy, *names) == before
    health = unhealthy.client().api.inspect_container(APP)["State"]["Health"]["Status"]
    assert health == "unhealthy"
    assert audit(project) == []


# -- (3) apply, audit, re-check; a daily run afterwards is green -----------------------------
def test_apply_restarts_exactly_the_planned_container_and_rechecks(
        unhealthy: DockerEngine, project: Project) -> None:
    before = started(unhealthy, APP, WORKER, SCHEDULER)
    ident = short_id(unhealthy, APP)
    result, checks = run(project, environment(unhealthy), "-m", "destructive",
                         "--allow-destructive=dock")
    assert result.returncode == 0, result.output
    after = started(unhealthy, APP, WORKER, SCHEDULER)
    assert after[APP] != before[APP], "not restarted"
    assert {n: after[n] for n in (WORKER, SCHEDULER)} == \
        {n: before[n] for n in (WORKER, SCHEDULER)}, "restarted what was not planned"
    [entry] = audit(project)
    assert {k: entry[k] for k in ("env", "target", "action", "identity", "result")} == {
        "env": "dock", "target": "docker", "action": "restart_unhealthy",
        "identity": f"container {ident} {APP}", "result": "applied"}
    assert entry["before"].startswith("unhealthy, failing streak ")
    assert entry["after"].startswith(f"restarted: started at {after[APP][:19]}Z")
    assert entry["operator"]
    assert entry["time"]
    assert entry["plan_id"]
    outcome = checks[CHECK.split("::")[1]]
    assert outcome["outcome"] == "PASS"
    evidence = {m["name"]: (m["value"], m["verdict"]) for m in outcome["evidence"]}
    assert evidence[f"{APP} health"] == ("healthy", "PASS")
    waited, _ = evidence[f"{APP} waited for its first health probe"]
    assert 0 < waited < 10
    # A daily run afterwards, against the same engine: green.
    daily = project.run("--env", "dock", "-p", "no:xdist", "-m", "daily",
                        "checks/health/test_docker.py", timeout=120)
    assert daily.returncode == 0, daily.output
    assert {c["outcome"] for c in project.checks("dock").values()} == {"PASS"}


# -- (4) drift between plan and apply -------------------------------------------------------
def test_a_container_that_drifted_between_plan_and_apply_is_skipped(
        unhealthy: DockerEngine, tmp_path: Path) -> None:
    spec = DockerTarget.model_validate(yaml.safe_load(environment(unhealthy))["targets"]["docker"])
    client = DockerClient("docker", spec, 3, writable=True)
    action = RestartUnhealthy(client, RestartUnhealthySettings(unhealthy_for_s=1))
    engine = Remediation(env="dock", operator="tester", check="t", run_id="r1",
                         audit_path=tmp_path / "audit.jsonl", max_actions=5, plan_only=False)
    plan = engine.plan(action)
    assert [i.identity for i in plan.items] == [f"container {short_id(unhealthy, APP)} {APP}"]
    unhealthy.client().containers.get(APP).restart(timeout=2)  # someone else restarted it
    by_hand = started(unhealthy, APP)
    outcome = engine.apply(action, plan)
    assert outcome.applied == []
    [(_item, why)] = outcome.skipped
    assert why == f"restarted since the plan (started at {by_hand[APP][:19]}Z)"
    assert started(unhealthy, APP) == by_hand
    [entry] = engine.audited
    assert entry["result"] == f"skipped: {why}"
    client.close()


# -- (5) over --max-actions: refused whole ---------------------------------------------------
def test_a_plan_over_max_actions_is_refused_with_nothing_touched(
        unhealthy: DockerEngine, extra: Any, project: Project) -> None:
    extra("gogooku3-extra")
    wait_unhealthy(unhealthy, "gogooku3-extra")
    before = started(unhealthy, APP, "gogooku3-extra")
    env = environment(unhealthy, containers={"gogooku3-*": {}})
    result, checks = run(project, env, "-m", "destructive", "--allow-destructive=dock",
                         "--max-actions=1")
    assert result.returncode == 1, result.output
    outcome = checks[CHECK.split("::")[1]]
    assert outcome["outcome"] == "FAIL"
    assert outcome["message"].startswith("docker: restart_unhealthy: refused whole, nothing "
                                         "changed: plan "), outcome["message"]
    assert "lists 2 items, over --max-actions=1" in outcome["message"]
    assert started(unhealthy, APP, "gogooku3-extra") == before
    assert audit(project) == []
    # A percentage limit: 2 of the 4 containers gogooku3-* matches.
    result, checks = run(project, env, "-m", "destructive", "--allow-destructive=dock",
                         "--max-percent=40")
    assert result.returncode == 1, result.output
    assert "50 % of 4, over --max-percent=40" in checks[CHECK.split("::")[1]]["message"]
    assert started(unhealthy, APP, "gogooku3-extra") == before


# -- (6) a failure part-way ---------------------------------------------------------------
def test_a_failure_part_way_reports_what_was_and_was_not_done(
        unhealthy: DockerEngine, extra: Any, project: Project, tmp_path: Path) -> None:
    import docker

    source = tmp_path / "volume"
    source.mkdir()
    extra("gogooku3-broken", mounts=[docker.types.Mount("/data", str(source), type="bind")])
    extra("gogooku3-later")
    wait_unhealthy(unhealthy, "gogooku3-broken", "gogooku3-later")
    source.rmdir()  # the bind mount's source is gone: the engine cannot start it again
    names = (APP, "gogooku3-broken", "gogooku3-later")
    ids = {n: short_id(unhealthy, n) for n in names}
    before = started(unhealthy, *names)
    env = environment(unhealthy, containers={n: {"health": "healthy"} for n in names})
    result, checks = run(project, env, "-m", "destructive", "--allow-destructive=dock")
    assert result.returncode == 1, result.output
    after = started(unhealthy, *names)
    assert after[APP] != before[APP]
    assert after["gogooku3-later"] == before["gogooku3-later"], "went on after the failure"
    message = checks[CHECK.split("::")[1]]["message"]
    assert message.startswith("docker: restart_unhealthy stopped at a failure: applied 1 of 3 "
                              "(plan "), message
    assert f"applied: container {ids[APP]} {APP} -> restarted: started at " in message
    assert f"failed: container {ids['gogooku3-broken']} gogooku3-broken: " in message
    assert "engine answered 500: Cannot restart container" in message
    assert message.endswith(f"not attempted: container {ids['gogooku3-later']} gogooku3-later")
    results = [(e["identity"].split()[-1], e["result"].split(":")[0]) for e in audit(project)]
    assert results == [(APP, "applied"), ("gogooku3-broken", "failed"),
                       ("gogooku3-later", "not attempted")]
