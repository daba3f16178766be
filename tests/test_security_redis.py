"""The Redis security checks PASS on a real ``redis-server`` with a password and protected
mode, and FAIL on real ones without a password or with protected mode off (and with the
sandbox's ``redis-no-auth`` fault); a monitoring user denied ACL LIST or CONFIG is a SKIP
naming the grant; and, watched through MONITOR, they send only reads, never
``CONFIG GET requirepass``."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from opsverify.errors import WriteRefused
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.redis import RedisServer
from opsverify.sandbox.spec import RedisComponent
from opsverify.targets.redis import RedisClient, RedisTarget
from tests.conftest import Project, Result, outcomes, running

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server not found (apt-get install redis-server)")
PASSWORD = "redis-sec-test-pw-91fe"  # a test value that must never be shown
CHECK = "checks/security/test_redis.py"
CHECKS = ("test_auth_required", "test_acl_passwords", "test_protected_mode")

Start = Callable[..., tuple[str, int]]


@pytest.fixture
def redis_server(start_redis: Callable[..., int]) -> Start:
    """Start a real redis-server with config lines; returns its address and port.

    Usage: ``address, port = redis_server(f"requirepass {PASSWORD}")``
    """
    def start(*lines: str) -> tuple[str, int]:
        port = start_redis(*lines)
        return f"127.0.0.1:{port}", port

    return start


def run(project: Project, urls: dict[str, str], *args: str,
        security: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    """Run the stock Redis security checks; outcomes keyed ``test[id]``."""
    project.copy_check(CHECK)
    lines = ["settings: {timeout_s: 3}", "targets:"]
    variables = {}
    for index, (name, url) in enumerate(urls.items()):
        variables[f"REDIS_URL_{index}"] = url
        lines += [f"  {name}:", "    type: redis", f"    url: ${{REDIS_URL_{index}}}"]
        if security and name in security:
            lines.append(f"    security: {security[name]}")
    return project.run_checks("kv", "\n".join(lines) + "\n", *args, env=variables)



def failing(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"] if m["verdict"] == "FAIL"}


def test_client_never_asks_for_a_secret() -> None:
    spec = RedisTarget(type="redis", url="redis://:pw@127.0.0.1:1/0")
    client = RedisClient("cache", spec, 1.0)
    for parameter in ("requirepass", "MASTERAUTH", "*", "require*", "requirepas?"):
        with pytest.raises(WriteRefused, match="secret"):
            client.call("CONFIG GET", parameter)
    with pytest.raises(WriteRefused, match="ACL SETUSER"):
        client.call("ACL SETUSER", "default", "nopass")
    assert spec.security.auth_required
    assert spec.security.acl_passwords
    assert spec.security.protected_mode


def test_password_and_protected_mode_pass(project: Project, redis_server: Start) -> None:
    address, _ = redis_server(f"requirepass {PASSWORD}", "protected-mode yes")
    result, checks = run(project, {"cache": f"redis://:{PASSWORD}@{address}/0"})
    assert outcomes(checks) == {f"{c}[cache]": "PASS" for c in CHECKS}, result.output
    notes = {m["name"]: m["value"] for c in checks.values() for m in c["evidence"]}
    assert notes["PING without credentials"] == "refused: Authentication required"  # NOAUTH
    assert notes["default user"] == "on, 1 password(s)"
    assert PASSWORD not in result.output


def test_no_password_fails(project: Project, redis_server: Start) -> None:
    address, _ = redis_server("protected-mode yes")
    result, checks = run(project, {"open": f"redis://{address}/0"})
    assert outcomes(checks) == {"test_auth_required[open]": "FAIL",
                                "test_acl_passwords[open]": "FAIL",
                                "test_protected_mode[open]": "PASS"}, result.output
    assert failing(checks["test_auth_required[open]"]) == {"unauthenticated PING refused": False}
    assert failing(checks["test_acl_passwords[open]"]) == {"enabled users with nopass": "default"}


def test_protected_mode_off_fails(project: Project, redis_server: Start) -> None:
    address, _ = redis_server(f"requirepass {PASSWORD}", "protected-mode no")
    result, checks = run(project, {"cache": f"redis://:{PASSWORD}@{address}/0"},
                         security={"cache": "{auth_required: false}"})
    assert outcomes(checks) == {"test_auth_required[cache]": "SKIP",
                                "test_acl_passwords[cache]": "PASS",
                                "test_protected_mode[cache]": "FAIL"}, result.output
    assert failing(checks["test_protected_mode[cache]"]) == {"protected-mode": "no"}
    assert checks["test_auth_required[cache]"]["message"].startswith(
        "opted out: targets.cache.security.auth_required is false (environments/kv.yaml:")


def test_a_nopass_user_fails_even_with_a_default_password(project: Project,
                                                         redis_server: Start) -> None:
    address, _ = redis_server(f"requirepass {PASSWORD}", "user reporting on nopass ~* +@read")
    result, checks = run(project, {"cache": f"redis://:{PASSWORD}@{address}/0"}, "-k", "acl")
    assert failing(checks["test_acl_passwords[cache]"]) == {
        "enabled users with nopass": "reporting"}, result.output


def test_missing_acl_permissions_skip_naming_the_grant(project: Project,
                                                       redis_server: Start) -> None:
    address, _ = redis_server(f"requirepass {PASSWORD}",
                              f"user monitor on >{PASSWORD} ~* &* +@all -acl -config")
    result, checks = run(project, {"cache": f"redis://monitor:{PASSWORD}@{address}/0"})
    assert result.returncode == 0, result.output
    assert checks["test_auth_required[cache]"]["outcome"] == "PASS"
    assert checks["test_acl_passwords[cache]"]["outcome"] == "SKIP"
    assert checks["test_acl_passwords[cache]"]["message"] == (
        "cache: cannot read ACL LIST without a privilege this account lacks; "
        "grant it: ACL SETUSER monitor +acl|list")
    assert checks["test_protected_mode[cache]"]["message"].endswith(
        "grant it: ACL SETUSER monitor +config|get")


def test_sandbox_fault_redis_no_auth(project: Project) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="opsverify-test-"))
    try:
        component = RedisServer(RedisComponent(), SandboxContext(
            workdir, PASSWORD, frozenset({"redis-no-auth"})))
        for server in running(component):
            result, checks = run(project, {"cache": server.url})
            assert outcomes(checks) == {"test_auth_required[cache]": "FAIL",
                                        "test_acl_passwords[cache]": "FAIL",
                                        "test_protected_mode[cache]": "PASS"}, result.output
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_checks_send_only_reads(project: Project, redis_server: Start) -> None:
    """Every command the checks sent, as the server counts them (INFO commandstats: MONITOR
    hides administrative commands such as CONFIG and ACL), is a read: one CONFIG GET (of
    protected-mode: the client refuses requirepass), one ACL LIST, PINGs, one of them
    refused for want of credentials."""
    address, port = redis_server(f"requirepass {PASSWORD}")
    admin = redis.Redis(port=port, password=PASSWORD, decode_responses=True)
    admin.config_resetstat()
    result, _ = run(project, {"cache": f"redis://:{PASSWORD}@{address}/0"})
    assert result.returncode == 0, result.output
    stats = admin.info("commandstats")
    admin.close()
    calls = {name.removeprefix("cmdstat_"): (s["calls"], s.get("rejected_calls", 0))
             for name, s in stats.items()}
    calls.pop("config|resetstat")  # ours, before the run
    assert calls.pop("config|get") == (1, 0)
    assert calls.pop("acl|list") == (1, 0)
    assert calls.pop("ping") == (1, 1)  # the gate's; the one without AUTH was refused
    assert set(calls) <= {"auth", "client|setname"}, calls
    assert PASSWORD not in result.output
