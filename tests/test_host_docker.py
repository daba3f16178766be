"""``docker://`` host targets: testinfra's docker backend against the sandbox's private
Docker engine, each check PASS/FAIL/ERROR for the right reason, as a user runs the suite."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from opsverify.errors import TargetUnavailable
from opsverify.sandbox.docker import APP, WORKER, DockerEngine
from opsverify.sandbox.runtime import Sandbox
from opsverify.sandbox.spec import DockerComponent, SandboxSpec
from opsverify.targets.host import HostClient, HostTarget
from tests.conftest import ROOT, Project, processes_matching


@pytest.mark.parametrize(("keys", "error"), [
    ({"url": "docker://"}, "expected docker://container"),
    ({"url": "docker://app/x"}, "expected docker://container"),
    ({"url": "local", "docker_host": "unix:///s"}, "docker:// targets only"),
    ({"url": "docker://app", "docker_host": "/var/run/docker.sock"}, "unix:///path"),
    ({"url": "docker://app", "known_hosts": "/k"}, "ssh:// targets only"),
])
def test_schema_errors(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        HostTarget(type="host", **keys)


def test_schema_address() -> None:
    spec = HostTarget(type="host", url="docker://nobody@gogooku3-app", docker_host="unix:///s")
    assert (spec.kind, spec.address(), spec.container) == (
        "docker", "nobody@gogooku3-app", "nobody@gogooku3-app")


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    """The sandbox's private Docker engine for this module: its DOCKER_HOST."""
    box = Sandbox.plan(SandboxSpec(docker=DockerComponent()), frozenset())
    try:
        box.start()
        if "docker" in box.skipped:
            pytest.skip(box.unavailable()[box.variables()["SANDBOX_DOCKER_URL"]])
        yield box.variables()["SANDBOX_DOCKER_URL"]
    finally:
        box.stop()


def container(url: str, name: str = APP) -> HostTarget:
    return HostTarget(type="host", url=f"docker://{name}", docker_host=url)


def test_client_reads_the_container_through_its_engine_only(engine: str) -> None:
    before = dict(os.environ)
    client = HostClient("app", container(engine), 3)
    client.connect()
    assert client.where == f"docker {APP}"
    assert client.file("/usr/local/bin/healthcheck").mode == "0755"
    assert [p.pid for p in client.processes(comm="sh", args="^/bin/sh -c touch")] == [1]
    usage = client.disk_usage("/")
    assert usage is not None
    assert usage.size_kib > 0
    assert client.disk_usage("/nonexistent") is None
    assert client.memory().total_kib > 0
    assert dict(os.environ) == before  # DOCKER_HOST went to the docker CLI alone
    # Without docker_host, the CLI's default engine is asked, not ours.
    with pytest.raises(TargetUnavailable):
        HostClient("app", HostTarget(type="host", url=f"docker://{APP}"), 3).connect()


def test_a_command_past_its_deadline_ends_in_the_container(engine: str) -> None:
    client = HostClient("app", container(engine), 1)
    client.connect()
    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match=r"did not finish within 1 s .*sleep 34"):
        client.run("sleep 34")
    assert time.monotonic() - started < 3
    # Ended in the container too (its processes show here: the same kernel); busybox
    # timeout's watcher ends a moment after its kill grace.
    deadline = time.monotonic() + 4
    while processes_matching("sleep 34") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_matching("sleep 34")


ENV = """
settings: {timeout_s: 3}
sandbox:
  docker: {}
targets:
  app-container: %(good)s
  bad-container:
    type: host
    url: docker://gogooku3-app
    docker_host: ${SANDBOX_DOCKER_URL}
    processes: [{name: billing, comm: billing-worker}]
    files:
      - {path: /etc/app.conf}
      - {name: healthcheck, path: /usr/local/bin/healthcheck, mode: "0700"}
    command_checks: [{name: exits_3, command: "echo broken >&2; exit 3"}]
  stopped:
    type: host
    url: docker://gogooku3-worker
    docker_host: ${SANDBOX_DOCKER_URL}
    files: [{path: /bin/sh}]
    filesystems: [/]
  missing:
    type: host
    url: docker://gogooku3-nope
    docker_host: ${SANDBOX_DOCKER_URL}
    files: [{path: /bin/sh}]
  engine-down:
    type: host
    url: docker://gogooku3-app
    docker_host: unix:///nonexistent/docker.sock
    files: [{path: /bin/sh}]
"""


def test_checks_pass_fail_and_error_for_the_right_reasons(project: Project) -> None:
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("docker") is None:
        pytest.skip(f"needs root, dockerd and docker ({DockerEngine.install_hint})")
    for check in ("checks/health/test_host.py", "checks/capacity/test_host.py"):
        project.write(check, (ROOT / check).read_text())
    sandbox = yaml.safe_load((ROOT / "environments" / "sandbox.yaml").read_text())
    good = json.dumps(sandbox["targets"]["app-container"])  # the real sandbox target
    project.write("environments/dock.yaml", ENV % {"good": good})
    result = project.run("--env", "dock", "-p", "no:xdist", "--sandbox-fault",
                         "container-stopped", timeout=120)
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    checks = project.checks("dock")

    good_checks = {k: c["outcome"] for k, c in checks.items()
                   if "[app-container:" in k and "_trend" not in k}
    assert len(good_checks) == 5
    assert set(good_checks.values()) == {"PASS"}, good_checks
    # This environment has no history yet: its trends wait for one, and say so.
    trends = {k: c for k, c in checks.items() if "[app-container:" in k and "_trend" in k}
    assert set(trends) == {"test_disk_trend[app-container:/]", "test_inodes_trend[app-container:/]"}
    assert all(c["outcome"] == "SKIP" and c["message"].startswith("insufficient history: 1 ")
               for c in trends.values()), trends

    def failing(key: str) -> str:
        return "\n".join(f"{m['name']} = {m['value']}" for m in checks[key]["evidence"]
                         if m["verdict"] == "FAIL")

    bad = {k: c["outcome"] for k, c in checks.items() if "[bad-container:" in k}
    assert set(bad.values()) == {"FAIL"}, bad
    assert "processes billing = 0" in failing("test_process_present[bad-container:billing]")
    assert "/etc/app.conf exists = False" in failing(
        "test_file_present[bad-container:/etc/app.conf]")
    assert "healthcheck mode = 0755" in failing("test_file_present[bad-container:healthcheck]")
    assert "exits_3 exit status = 3" in failing("test_command_check[bad-container:exits_3]")

    errors = {"stopped": f"stopped (docker {WORKER}): container {WORKER} is not running",
              "missing": "missing (docker gogooku3-nope): no such container gogooku3-nope",
              "engine-down": "engine-down (docker gogooku3-app): cannot connect to the "
                             "Docker engine"}
    for target, cause in errors.items():
        mine = [c for k, c in checks.items() if f"[{target}:" in k]
        assert mine, target
        assert {c["outcome"] for c in mine} == {"ERROR"}, mine
        for check in mine:
            assert cause in check["message"], check["message"]
            assert "\n" not in check["message"].strip()
            assert "nonexistent/docker.sock" not in check["message"]
