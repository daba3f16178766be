"""The docker target type: schema, the read-only client, the sandbox engine and its faults,
and every check PASS/FAIL/WARN/SKIP/ERROR against a real private Docker engine."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.sandbox.docker import (
    IDLE,
    IMAGE,
    TAG,
    DockerEngine,
    _has_interpreter,
    processes_under,
    static_busybox,
)
from opsverify.sandbox.process import free_port
from opsverify.sandbox.runtime import Sandbox
from opsverify.sandbox.spec import DockerComponent, SandboxSpec
from opsverify.targets.docker import DeclaredContainer, DockerClient, DockerTarget
from tests.conftest import ROOT, HungServer, Project, Result, private_docker_engine

needs_docker = pytest.mark.skipif(
    shutil.which("dockerd") is None or static_busybox() is None or os.geteuid() != 0,
    reason="a private Docker engine needs root, dockerd and a static busybox "
           "(apt-get install docker.io busybox-static)")
DECLARED = ("gogooku3-app", "gogooku3-worker", "gogooku3-scheduler")


def sandbox_docker_env() -> str:
    """The real sandbox.yaml, reduced to its docker engine and docker target."""
    full = yaml.safe_load((ROOT / "environments" / "sandbox.yaml").read_text())
    docker_targets = {n: t for n, t in full["targets"].items() if t["type"] == "docker"}
    assert docker_targets, "environments/sandbox.yaml declares no docker target"
    return yaml.safe_dump({"settings": full["settings"], "sandbox": {"docker": {}},
                           "targets": docker_targets}, sort_keys=False)


def run_checks(project: Project, env: str, *args: str,
               environ: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    """Run the stock docker checks in ``project``; outcomes keyed ``test[target:container]``."""
    project.copy_check("checks/health/test_docker.py")
    return project.run_checks("dock", env, "-m", "daily", *args, env=environ, timeout=120)


def lines(check: dict[str, Any], verdict: str = "FAIL") -> str:
    return "\n".join(f"{m['name']} = {m['value']}" for m in check["evidence"]
                     if m["verdict"] == verdict)


def measurement(check: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in check["evidence"] if m["name"] == name)


def notes(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"]}


# -- schema ------------------------------------------------------------------------------
def test_schema_list_or_mapping_and_address() -> None:
    listed = DockerTarget(type="docker", url="unix:///var/run/docker.sock",
                          containers=["gogooku3-app", "gogooku3-*"])
    assert listed.declared() == [DeclaredContainer("gogooku3-app", None, None),
                                 DeclaredContainer("gogooku3-*", None, None)]
    assert [c.is_pattern for c in listed.declared()] == [False, True]
    assert listed.address() == "unix:///var/run/docker.sock"
    mapped = DockerTarget(type="docker", url="tcp://127.0.0.1:2375",
                          containers={"a": None, "b": {"health": "none", "max_restarts": 2}})
    assert mapped.declared() == [DeclaredContainer("a", None, None),
                                 DeclaredContainer("b", "none", 2)]
    assert mapped.address() == "127.0.0.1:2375"
    assert mapped.secrets() == []


@pytest.mark.parametrize(("keys", "error"), [
    ({"url": "http://127.0.0.1:2375"}, "expected unix:///path/to/docker.sock or tcp://host:port"),
    ({"url": "unix://docker.sock"}, "expected unix:///path"),
    ({"url": "unix:///d.sock", "containers": {"a": {"helth": "healthy"}}},
     "Extra inputs are not permitted"),
    ({"url": "unix:///d.sock", "containers": {"a": {"health": "ok"}}}, "'healthy' or 'none'"),
    ({"url": "unix:///d.sock", "containers": {"a": {"max_restarts": -1}}},
     "greater than or equal to 0"),
])
def test_schema_rejects(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        DockerTarget(type="docker", **keys)


def test_only_a_static_busybox_goes_into_the_image() -> None:
    assert _has_interpreter(Path(sys.executable).resolve())  # dynamically linked
    busybox = static_busybox()
    if busybox is not None:
        assert not _has_interpreter(busybox)


# -- unreachable engines: one line, within the deadline -----------------------------------
def test_unreachable_and_hung_engines_error_within_the_deadline(
    tmp_path: Path, hung_server: HungServer
) -> None:
    cases = {  # url: (deadline, cause)
        f"unix://{tmp_path}/nothing.sock": (3, "socket not found (is the engine running?)"),
        f"tcp://127.0.0.1:{free_port()}": (3, "connection refused"),
        f"tcp://127.0.0.1:{hung_server.port}": (0.5, "no answer within 0.5 s"),
    }
    for url, (deadline, cause) in cases.items():
        client = DockerClient("engine", DockerTarget(type="docker", url=url), deadline)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable) as raised:
            client.ping()
        assert time.monotonic() - started < deadline + 1, url
        assert raised.value.cause == cause, url
        assert "\n" not in str(raised.value)
        assert str(raised.value).startswith("engine (docker ")


# -- a real engine ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    """The sandbox's private engine, plus containers in the bad states the checks catch."""
    for component in private_docker_engine():
        add_bad_containers(component)
        yield component


def add_bad_containers(engine: DockerEngine) -> None:
    failing = {"test": ["CMD", "/usr/local/bin/healthcheck"], "interval": 10**9,
               "timeout": 10**9, "retries": 1, "start_period": 0}
    image = f"{IMAGE}:{TAG}"
    run = engine.client().containers.run
    common: dict[str, Any] = {"detach": True, "network_mode": "none"}
    run(image, ["/bin/sh", "-c", IDLE], name="bad-unhealthy", healthcheck=failing, **common)
    run(image, ["/bin/sh", "-c", "echo 'worker: cannot reach redis' >&2; exit 2"],
        name="bad-exited", **common)
    run(image, ["/bin/sh", "-c", "exit 1"], name="bad-crashloop",
        restart_policy={"Name": "always"}, **common)
    run(image, ["/bin/sh", "-c", "exit 1"], name="restarted-once",
        restart_policy={"Name": "on-failure", "MaximumRetryCount": 1}, **common)
    run(image, ["/bin/sh", "-c", IDLE], name="plain", **common)
    client = DockerClient("engine", DockerTarget(type="docker", url=engine.url), 3)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {n: client.container(n) for n in
                  ("bad-unhealthy", "bad-exited", "bad-crashloop", "restarted-once")}
        if all(s is not None for s in states.values()) and (
            states["bad-unhealthy"].health == "unhealthy"  # type: ignore[union-attr]
            and states["bad-exited"].status == "exited"  # type: ignore[union-attr]
            and states["bad-crashloop"].restart_count >= 4  # type: ignore[union-attr]
            and states["restarted-once"].restart_count == 1  # type: ignore[union-attr]
            and states["restarted-once"].status == "exited"  # type: ignore[union-attr]
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"bad containers did not reach their states: {states}")


@needs_docker
def test_client_inspects_and_refuses_every_write(engine: DockerEngine) -> None:
    client = DockerClient("engine", DockerTarget(type="docker", url=engine.url), 3)
    app = client.container("gogooku3-app")
    assert app is not None
    assert (app.status, app.health, app.restart_policy) == ("running", "healthy",
                                                             "unless-stopped")
    assert app.last_health_output == "ok: /tmp/healthy present"
    # The engine also resolves ID prefixes; a declared name must be a name.
    assert client.container(app.id[:6]) is None
    assert client.container("gogooku3") is None
    assert [s.name for s in client.matching(DeclaredContainer("gogooku3-*", None, None))] == \
        sorted(DECLARED)
    for attempt in (lambda: client.api.kill("gogooku3-app"),
                    lambda: client.api.remove_container("plain", force=True),
                    lambda: client.api.create_container(f"{IMAGE}:{TAG}", "true"),
                    lambda: client.api.exec_create("gogooku3-app", "rm /tmp/healthy")):
        with pytest.raises(WriteRefused, match=r"refusing Docker API (POST|DELETE) /"):
            attempt()
    after = client.container("gogooku3-app")
    assert after is not None
    assert (after.status, after.health) == ("running", "healthy")
    assert client.container("plain") is not None
    client.close()


@needs_docker
def test_checks_pass_fail_warn_and_skip_for_the_right_reason(
    engine: DockerEngine, project: Project
) -> None:
    env = f"""
settings: {{timeout_s: 3}}
targets:
  engine:
    type: docker
    url: {engine.url}
    containers:
      "gogooku3-*": {{}}
      bad-unhealthy: {{health: healthy}}
      bad-exited: {{health: none}}
      bad-crashloop: {{health: none}}
      restarted-once: {{health: none}}
      plain: {{health: healthy}}
      missing-one: {{}}
  engine2:
    type: docker
    url: {engine.url}
    containers:
      plain:
      gogooku3-app: {{}}
      restarted-once: {{health: none, max_restarts: 1}}
"""
    result, checks = run_checks(project, env)

    def outcome(test: str, item: str) -> str:
        return str(checks[f"{test}[{item}]"]["outcome"])

    # A pattern: every gogooku3-* container exists, runs, is stable; the one with a
    # HEALTHCHECK is healthy, the others are noted as having none.
    for test in ("test_container_exists", "test_container_running", "test_container_health",
                 "test_restart_count"):
        assert outcome(test, "engine:gogooku3-*") == "PASS", result.output
    health = notes(checks["test_container_health[engine:gogooku3-*]"])
    assert health["gogooku3-app health"] == "healthy"
    assert health["gogooku3-worker health"] == "no HEALTHCHECK"
    assert notes(checks["test_container_exists[engine:gogooku3-*]"])[
        "containers matching 'gogooku3-*'"] == 3

    # Exited: the running check fails, with the exit code.
    exited = checks["test_container_running[engine:bad-exited]"]
    assert exited["outcome"] == "FAIL"
    assert lines(exited) == "bad-exited state = exited (exit code 2)"
    assert notes(exited)["bad-exited exit code"] == 2
    assert outcome("test_container_exists", "engine:bad-exited") == "PASS"

    # Unhealthy: the health check fails and shows the last health-check output.
    unhealthy = checks["test_container_health[engine:bad-unhealthy]"]
    assert unhealthy["outcome"] == "FAIL"
    assert lines(unhealthy) == ("bad-unhealthy health = unhealthy: health probe failed: "
                              "/tmp/healthy is missing (the app is not ready)")
    assert notes(unhealthy)["bad-unhealthy last health-check output"] == (
        "health probe failed: /tmp/healthy is missing (the app is not ready)")
    assert notes(unhealthy)["bad-unhealthy last health-check exit code"] == 1
    assert outcome("test_container_running", "engine:bad-unhealthy") == "PASS"
    assert "health probe failed" in result.output  # the terminal says why, too

    # `health: healthy` on a container without a HEALTHCHECK is a failure, not a pass.
    assert lines(checks["test_container_health[engine:plain]"]) == (
        "plain has a HEALTHCHECK = False")
    # `health: none`: the health check is not collected for that container.
    assert "test_container_health[engine:bad-exited]" not in checks

    # A crash loop: past the default crit of docker.restart_count.
    loop = checks["test_restart_count[engine:bad-crashloop]"]
    assert loop["outcome"] == "FAIL"
    measured = measurement(loop, "docker.restart_count")
    assert measured["value"] >= 4
    assert measured["expected"] == "≤ 3 restarts"
    assert measured["source"] == "crit from check default"
    assert notes(loop)["bad-crashloop last exit code"] == 1
    # One restart warns by default; max_restarts: 1 on the container allows it.
    assert outcome("test_restart_count", "engine:restarted-once") == "WARN"
    allowed = checks["test_restart_count[engine2:restarted-once]"]
    assert allowed["outcome"] == "PASS"
    declared = measurement(allowed, "restarted-once restarts")
    assert (declared["value"], declared["expected"]) == (1, "≤ 1 restarts")
    assert declared["source"].startswith("environments/dock.yaml:")

    # Missing: every check of it fails, and the engine's containers are listed.
    for test in ("test_container_exists", "test_container_running", "test_container_health",
                 "test_restart_count"):
        missing = checks[f"{test}[engine:missing-one]"]
        assert missing["outcome"] == "FAIL"
        assert lines(missing) == "containers named 'missing-one' = 0"
    listed = notes(checks["test_container_exists[engine:missing-one]"])
    assert "gogooku3-app" in listed["containers on the engine"]

    # Health unset and no HEALTHCHECK: nothing to evaluate, said so.
    skipped = checks["test_container_health[engine2:plain]"]
    assert skipped["outcome"] == "SKIP"
    assert "declare `health: none`" in skipped["message"]
    assert outcome("test_container_health", "engine2:gogooku3-app") == "PASS"
    assert result.returncode == 1
    assert "Traceback" not in result.output


# -- the sandbox engine, as `pytest -m daily` starts it ----------------------------------
@needs_docker
def test_sandbox_containers_pass(project: Project) -> None:
    result, checks = run_checks(project, sandbox_docker_env())
    assert result.returncode == 0, result.output
    assert {c["outcome"] for c in checks.values()} == {"PASS"}
    # exists, running and restarts for three containers; health for the one with a check.
    assert len(checks) == 10, sorted(checks)
    assert checks["test_container_health[docker:gogooku3-app]"]["outcome"] == "PASS"


@needs_docker
def test_sandbox_faults_turn_the_right_checks_red(project: Project) -> None:
    result, checks = run_checks(
        project, sandbox_docker_env(), "--sandbox-fault", "container-unhealthy",
        "--sandbox-fault", "container-restarting", "--sandbox-fault", "container-stopped")
    assert result.returncode == 1, result.output
    red = {k for k, c in checks.items() if c["outcome"] != "PASS"}
    # A crash-looping container is, at any moment, "restarting" or up for a blink.
    red.discard("test_container_running[docker:gogooku3-scheduler]")
    assert red == {"test_container_health[docker:gogooku3-app]",
                   "test_container_running[docker:gogooku3-worker]",
                   "test_restart_count[docker:gogooku3-scheduler]"}, result.output
    unhealthy = checks["test_container_health[docker:gogooku3-app]"]
    assert lines(unhealthy).startswith("gogooku3-app health = unhealthy: health probe failed")
    assert "/tmp/healthy is missing" in notes(unhealthy)[
        "gogooku3-app last health-check output"]
    stopped = checks["test_container_running[docker:gogooku3-worker]"]
    assert lines(stopped) == "gogooku3-worker state = exited (exit code 0)"
    restarts = checks["test_restart_count[docker:gogooku3-scheduler]"]
    assert restarts["outcome"] == "FAIL"
    measured = measurement(restarts, "gogooku3-scheduler restarts")
    assert measured["value"] >= 4
    assert measured["expected"] == "≤ 2 restarts"
    assert measured["source"].startswith("environments/dock.yaml:")  # max_restarts: 2
    assert notes(restarts)["gogooku3-scheduler last exit code"] == 3
    assert "injected faults: container-restarting, container-stopped, container-unhealthy" in \
        result.output


@needs_docker
def test_engine_down_is_one_error_line_per_check(project: Project) -> None:
    result, checks = run_checks(project, sandbox_docker_env(), "--sandbox-fault", "docker-down")
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}, result.output
    assert "socket not found (is the engine running?)" in result.output
    assert "Traceback" not in result.output


def test_missing_dockerd_skips_naming_the_package(project: Project, tmp_path: Path) -> None:
    empty = tmp_path / "no-binaries"
    empty.mkdir()
    result, checks = run_checks(project, sandbox_docker_env(), environ={"PATH": str(empty)})
    assert result.returncode == 0, result.output
    assert {c["outcome"] for c in checks.values()} == {"SKIP"}, result.output
    for check in checks.values():
        assert "dockerd not found (apt-get install docker.io)" in check["message"]


@needs_docker
def test_faults_reached_and_stop_leaves_nothing_behind() -> None:
    box = Sandbox.plan(SandboxSpec(docker=DockerComponent()),
                       frozenset({"container-restarting", "container-unhealthy"}))
    try:
        box.start()
        component = box.components["docker"]
        assert isinstance(component, DockerEngine)
        client = DockerClient("engine", DockerTarget(type="docker", url=component.url), 3)
        app, scheduler = client.container("gogooku3-app"), client.container("gogooku3-scheduler")
        assert app is not None
        assert scheduler is not None
        assert app.health == "unhealthy"
        assert scheduler.restart_count >= 4
        assert processes_under(component.root)  # containerd and the shims
        client.close()
    finally:
        box.stop()
    assert not processes_under(box.workdir)
    assert str(box.workdir) not in Path("/proc/self/mountinfo").read_text()
    assert not box.workdir.exists()
