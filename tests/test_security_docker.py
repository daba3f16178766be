"""Docker security checks (checks/security/test_docker.py) against the sandbox's private
engine: its own containers PASS; a container started --privileged, one with the engine's
socket and /etc mounted, one in the host's namespaces, one with secrets in its Env and one
as root with a writable root file system each turn exactly their check red (or WARN) — and
the secret values appear in no artifact of the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from opsverify.sandbox.docker import IDLE, IMAGE, TAG, USER, DockerEngine, static_busybox
from opsverify.secrets import SECRETS
from opsverify.targets.docker import DockerTarget, secret_looking
from tests.conftest import ROOT, Project, private_docker_engine

needs_docker = pytest.mark.skipif(
    shutil.which("dockerd") is None or static_busybox() is None or os.geteuid() != 0,
    reason="a private Docker engine needs root, dockerd and a static busybox "
           "(apt-get install docker.io busybox-static)")
CHECKS = "checks/security/test_docker.py"
PASSWORD = "Tr0ub4dor-and-3-horses"  # the secrets the checks must never show
DSN_PASSWORD = "s3cr3t-in-a-dsn"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


def test_schema_has_one_switch_per_check() -> None:
    spec = DockerTarget(type="docker", url="unix:///d.sock",
                        security={"privileged": False})
    assert not spec.security.privileged
    assert spec.security.env_secrets
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DockerTarget(type="docker", url="unix:///d.sock", security={"priviledged": False})


@pytest.mark.parametrize(("name", "value", "why"), [
    ("DB_PASSWORD", "hunter2-hunter2", "the name says it holds a credential"),
    ("api_token", "abc123def456", "the name says it holds a credential"),
    ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG", "the name says it holds a credential"),
    ("DATABASE_URL", "postgres://app:pw-123@db:5432/x", "the value looks like a URL with a "
                                                        "password"),
    ("SETTINGS", f"id={AWS_KEY}", "the value looks like an AWS access key id"),
    ("DB_PASSWORD_FILE", "/run/secrets/db", None),
    ("DB_PASSWORD", "", None),
    ("REDIS_PASSWORD", "${REDIS_PASSWORD}", None),
    ("TOKEN_AUTH_ENABLED", "true", None),
    ("DATABASE_URL", "postgres://app@db:5432/x", None),
    ("PATH", "/usr/local/sbin:/usr/local/bin", None),
    ("PWD", "/app", None),
    ("PASSTHROUGH_MODE", "strict", None),
])
def test_what_looks_like_a_secret(name: str, value: str, why: str | None) -> None:
    assert secret_looking(name, value) == why


def sandbox_docker_env(**security: Any) -> str:
    full = yaml.safe_load((ROOT / "environments" / "sandbox.yaml").read_text())
    (target,) = [t for t in full["targets"].values() if t["type"] == "docker"]
    if security:
        target["security"] = security
    return yaml.safe_dump({"settings": full["settings"], "targets": {"docker": target}},
                          sort_keys=False)


def run(project: Project, engine: DockerEngine, **security: Any,
        ) -> tuple[Any, dict[str, dict[str, Any]]]:
    project.copy_check(CHECKS)
    env = sandbox_docker_env(**security).replace("${SANDBOX_DOCKER_URL}", engine.url)
    return project.run_checks("docksec", env, "-m", "security", timeout=120)


def failing(check: dict[str, Any]) -> list[str]:
    return sorted(f"{m['name']} = {m['value']}" for m in check["evidence"]
                  if m["verdict"] == "FAIL")


def value(check: dict[str, Any], name: str) -> Any:
    return next(m["value"] for m in check["evidence"] if m["name"] == name)


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    """The sandbox's private engine (--bridge=none --iptables=false), its own containers."""
    yield from private_docker_engine()


def start(engine: DockerEngine, name: str, *, secure: bool = True, **options: Any) -> None:
    """A container as secure as the sandbox's (unless ``secure=False``), plus ``options``."""
    hardened: dict[str, Any] = {"user": USER, "read_only": True} if secure else {}
    engine.client().containers.run(f"{IMAGE}:{TAG}", ["/bin/sh", "-c", IDLE], name=name,
                                   detach=True, **{"network_mode": "none", **hardened,
                                                   **options})


@needs_docker
def test_checks_pass_on_the_sandbox_and_fail_on_bad_containers(
        project: Project, engine: DockerEngine, tmp_path: Path) -> None:
    result, checks = run(project, engine)
    assert result.returncode == 0, result.output
    assert {k: c["outcome"] for k, c in checks.items()} == {f"{t}[docker]": "PASS" for t in (
        "test_no_privileged_container", "test_no_sensitive_mount", "test_no_host_namespace",
        "test_no_secret_in_env", "test_not_running_as_root",
        "test_read_only_root_filesystem")}
    assert value(checks["test_no_privileged_container[docker]"], "containers inspected") == 3

    etc = tmp_path / "etc"  # only its name matters: mounted where the host's /etc would be
    etc.mkdir()
    start(engine, "bad-privileged", privileged=True)
    start(engine, "bad-mounts", volumes={str(engine.socket): {"bind": "/var/run/docker.sock"},
                                         "/etc": {"bind": "/host-etc", "mode": "ro"}})
    start(engine, "bad-namespaces", network_mode="host", pid_mode="host")
    start(engine, "bad-env", environment={
        "DB_PASSWORD": PASSWORD, "DATABASE_URL": f"postgres://app:{DSN_PASSWORD}@db/x",
        "S3_SETTINGS": f"key={AWS_KEY}", "DB_PASSWORD_FILE": "/run/secrets/db",
        "LOG_LEVEL": "info"})
    start(engine, "bad-root", secure=False)
    try:
        result, checks = run(project, engine)
    finally:
        for name in ("bad-privileged", "bad-mounts", "bad-namespaces", "bad-env", "bad-root"):
            engine.client().containers.get(name).remove(force=True)
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    assert failing(checks["test_no_privileged_container[docker]"]) == [
        "bad-privileged (running) HostConfig.Privileged = True", "privileged containers = 1"]
    assert failing(checks["test_no_sensitive_mount[docker]"]) == [
        f"bad-mounts mounts the container engine's socket = {engine.socket} at "
        "/var/run/docker.sock (rw)",
        "bad-mounts mounts the host's /etc = /etc at /host-etc (ro)",
        "sensitive bind mounts = 2"]
    assert failing(checks["test_no_host_namespace[docker]"]) == [
        "bad-namespaces network namespace = host", "bad-namespaces pid namespace = host",
        "host namespaces shared = 2"]
    assert failing(checks["test_no_secret_in_env[docker]"]) == [
        "bad-env Env DATABASE_URL = a plain value (the value looks like a URL with a password)",
        "bad-env Env DB_PASSWORD = a plain value (the name says it holds a credential)",
        "bad-env Env S3_SETTINGS = a plain value (the value looks like an AWS access key id)",
        "secret-looking Env values = 3"]
    # Running as root, writable: a WARN each, naming the container.
    for check, name in (("test_not_running_as_root[docker]", "running as root"),
                        ("test_read_only_root_filesystem[docker]",
                         "writable root file system")):
        assert checks[check]["outcome"] == "WARN", checks[check]
        assert value(checks[check], name) == "bad-root"

    # The values are secrets of the run: in no artifact, no output, not even in parts.
    artifacts = [p for p in project.reports.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in artifacts)
    for secret in (PASSWORD, DSN_PASSWORD, AWS_KEY):
        assert secret not in result.output
        for path in artifacts:
            assert secret not in path.read_text(errors="replace"), path


@needs_docker
def test_an_opt_out_is_a_skip_that_says_where(project: Project, engine: DockerEngine) -> None:
    start(engine, "bad-privileged-opted", privileged=True)
    try:
        result, checks = run(project, engine, privileged=False)
    finally:
        engine.client().containers.get("bad-privileged-opted").remove(force=True)
    assert result.returncode == 0, result.output
    opted = checks["test_no_privileged_container[docker]"]
    assert opted["outcome"] == "SKIP"
    assert opted["message"].startswith(
        "opted out: targets.docker.security.privileged is false (environments/docksec.yaml:")
    assert checks["test_no_secret_in_env[docker]"]["outcome"] == "PASS"


def test_a_secret_env_value_is_registered_when_it_is_read() -> None:
    from opsverify.targets.docker import ContainerSecurity

    value = "registered-at-read-9f2c"
    found = ContainerSecurity.from_inspect({
        "Name": "/x", "Config": {"Env": [f"API_TOKEN={value}", "HOME=/root"]},
        "HostConfig": {}, "State": {"Status": "running"}})
    assert [e.name for e in found.secret_env] == ["API_TOKEN"]
    assert value not in repr(found)
    assert value in SECRETS.values
