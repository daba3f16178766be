"""The ``aws`` target type against a real moto server: each check PASSes on the seeded
T-Developer account and FAILs for the right reason when the account is broken the way the
sandbox faults break it; unreachable, hung and dripping endpoints cost one deadline."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.moto import ALARM_PREFIX, CLUSTER, LOG_GROUP, SERVICE, MotoServer
from opsverify.sandbox.spec import MotoComponent
from opsverify.targets.aws import AwsClient, AwsTarget, LogGroupCheck
from tests.conftest import DripServer, running

SECRET = "moto-secret-9f2c1d7e"  # the sandbox's secret access key in these tests
CHECKS = "checks/health/test_aws.py"
ECS_ID = f"test_ecs_service_running[cloud:{CLUSTER}/{SERVICE}]"
ALB_ID = "test_alb_targets_healthy[cloud:t-developer-tg]"
ALARMS_ID = f"test_no_alarm_firing[cloud:{ALARM_PREFIX}*]"
LOGS_ID = f"test_log_errors[cloud:{LOG_GROUP}]"

ENV = """
settings: {timeout_s: 3}
targets:
  cloud:
    type: aws
    endpoint_url: ${SANDBOX_AWS_ENDPOINT}
    region: eu-west-1
    access_key_id: ${SANDBOX_AWS_ACCESS_KEY_ID}
    secret_access_key: ${SANDBOX_AWS_SECRET_ACCESS_KEY}
    ecs: {cluster: t-developer-cluster, services: [t-developer-service]}
    alb_target_groups: [t-developer-tg]
    alarms: {prefix: t-developer-, allowed: [t-developer-low-traffic]}
    log_groups:
      - {name: /ecs/t-developer, pattern: ERROR, window_minutes: 1440}
    thresholds:
      aws.log_errors: {warn: 5, crit: 20}
"""


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One real moto server for the module, seeded like the sandbox's."""
    ctx = SandboxContext(tmp_path_factory.mktemp("moto"), SECRET, frozenset())
    server = MotoServer(MotoComponent(), ctx)
    yield from running(server)


@pytest.fixture
def account(moto: MotoServer) -> MotoServer:
    """The moto server, reset to the healthy seeded state."""
    moto.reset()
    return moto


def run_checks(project: Any, server: MotoServer, env_text: str = ENV,
               *args: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Run the aws checks as a user would; outcome and evidence by test name."""
    project.copy_checks()
    project.write("environments/cloud.yaml", env_text)
    result = project.run(CHECKS, "--env", "cloud", *args, env=server.variables())
    checks = project.checks("cloud")
    return result, checks


def evidence(check: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in check["evidence"] if e["name"] == name)


def failed(checks: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name, c in checks.items() if c["outcome"] == "FAIL"}


# -- PASS --------------------------------------------------------------------------------
def test_healthy_account_passes_every_check(project, account):
    result, checks = run_checks(project, account)
    assert result.returncode == 0, result.output
    assert {n: c["outcome"] for n, c in checks.items()} == {
        ECS_ID: "PASS", ALB_ID: "PASS", ALARMS_ID: "PASS", LOGS_ID: "PASS"}
    assert evidence(checks[ECS_ID], "runningCount")["value"] == 2
    assert evidence(checks[ECS_ID], "rollout")["value"] == "COMPLETED"
    assert evidence(checks[ALB_ID], "healthy targets")["value"] == 2
    assert evidence(checks[ALARMS_ID], "alarms in scope")["value"] == 4
    # The allow-listed alarm fires in the seed; it is shown, not failed.
    assert evidence(checks[ALARMS_ID], "allowed alarms in ALARM")["value"] == \
        "t-developer-low-traffic"
    # 3 ERROR events in the last hour; the 10 from two days ago are outside the window.
    errors = evidence(checks[LOGS_ID], "aws.log_errors")
    assert (errors["value"], errors["verdict"]) == (3, "PASS")
    assert "crit from environments/cloud.yaml" in errors["source"]


# -- FAIL, one bad state per check -----------------------------------------------------------
def test_degraded_service_fails_the_running_count(project, account):
    account.inject(frozenset({"ecs-degraded"}))
    result, checks = run_checks(project, account)
    assert result.returncode == 1
    assert failed(checks) == {ECS_ID}
    running = evidence(checks[ECS_ID], "runningCount")
    assert (running["value"], running["expected"], running["verdict"]) == (1, "= 2", "FAIL")
    assert evidence(checks[ECS_ID], "pendingCount")["value"] == 1
    assert "runningCount = 1 tasks, expected = 2 (desiredCount) → FAIL" in result.stdout


def test_stopped_instance_fails_target_health(project, account):
    account.inject(frozenset({"alb-target-stopped"}))
    result, checks = run_checks(project, account)
    assert failed(checks) == {ALB_ID}, result.output
    unhealthy = evidence(checks[ALB_ID], "targets not healthy")
    assert "unused (Target.InvalidState" in unhealthy["value"]
    assert evidence(checks[ALB_ID], "healthy targets")["value"] == 1


def test_alarm_in_alarm_fails_and_names_the_alarm(project, account):
    account.inject(frozenset({"alarm-firing"}))
    result, checks = run_checks(project, account)
    assert failed(checks) == {ALARMS_ID}, result.output
    firing = evidence(checks[ALARMS_ID], "alarms in ALARM")
    assert "t-developer-5xx: Threshold Crossed" in firing["value"]
    assert "low-traffic" not in firing["value"]  # allowed, so not a failure


def test_error_burst_in_the_log_group_fails_the_threshold(project, account):
    account.inject(frozenset({"log-errors"}))
    result, checks = run_checks(project, account)
    assert failed(checks) == {LOGS_ID}, result.output
    errors = evidence(checks[LOGS_ID], "aws.log_errors")
    assert (errors["value"], errors["expected"]) == (63, "≤ 20 events")
    assert any(e["name"] == "event" and "ERROR" in e["value"]
               for e in checks[LOGS_ID]["evidence"])


def test_errors_past_warn_are_a_warning(project, account):
    result, checks = run_checks(project, account, ENV.replace("warn: 5", "warn: 2"))
    assert result.returncode == 0, result.output
    assert checks[LOGS_ID]["outcome"] == "WARN"


def test_declared_resources_that_do_not_exist_fail(project, account):
    env = (ENV.replace("services: [t-developer-service]", "services: [t-developer-worker]")
           .replace("[t-developer-tg]", "[t-developer-old-tg]")
           .replace("prefix: t-developer-,", "prefix: tdev-,")
           .replace("/ecs/t-developer,", "/ecs/t-developer-worker,"))
    result, checks = run_checks(project, account, env)
    assert result.returncode == 1
    worker = f"test_ecs_service_running[cloud:{CLUSTER}/t-developer-worker]"
    assert evidence(checks[worker], "status")["value"] == "MISSING"
    assert evidence(checks["test_alb_targets_healthy[cloud:t-developer-old-tg]"],
                    "target group found")["value"] is False
    # A prefix matching no alarm must not pass on nothing.
    assert evidence(checks["test_no_alarm_firing[cloud:tdev-*]"],
                    "alarms in scope")["verdict"] == "FAIL"
    assert evidence(checks["test_log_errors[cloud:/ecs/t-developer-worker]"],
                    "log group found")["value"] is False
    assert len(failed(checks)) == 4


def test_undeclared_parts_are_not_collected(project, account):
    env = "\n".join(line for line in ENV.splitlines()
                    if not line.strip().startswith(("ecs:", "alb_target_groups:")))
    result, checks = run_checks(project, account, env)
    assert result.returncode == 0, result.output
    assert {n: c["outcome"] for n, c in checks.items()} == {
        ALARMS_ID: "PASS", LOGS_ID: "PASS",
        # Nothing to run against is said out loud, not passed.
        "test_ecs_service_running[no-aws-target]": "SKIP",
        "test_alb_targets_healthy[no-aws-target]": "SKIP"}
    assert "no aws target declares ecs_service" in checks[
        "test_ecs_service_running[no-aws-target]"]["message"]


def test_sandbox_faults_turn_exactly_their_checks_red(project):
    """The sandbox component itself: ``--sandbox-fault`` through the plugin."""
    env = "sandbox:\n  moto: {}\n" + ENV
    project.copy_checks()
    project.write("environments/cloud.yaml", env)
    faults = ["ecs-degraded", "alb-target-stopped", "alarm-firing", "log-errors"]
    args = [a for f in faults for a in ("--sandbox-fault", f)]
    result = project.run(CHECKS, "--env", "cloud", *args)
    summary = json.loads((project.latest("cloud") / "summary.json").read_text())
    assert summary["counts"]["FAIL"] == 4, result.output
    down = project.run(CHECKS, "--env", "cloud", "--sandbox-fault", "moto-down")
    assert down.returncode == 1
    assert "cloud (aws eu-west-1 via 127.0.0.1:" in down.stdout
    assert "cannot connect: connection refused" in down.stdout


# -- could not evaluate: one line, one deadline ------------------------------------------
def target(endpoint: str, **extra: Any) -> AwsTarget:
    return AwsTarget(type="aws", region="eu-west-1", endpoint_url=endpoint,
                     access_key_id="AKIAOPSVERIFYSANDBOX", secret_access_key=SECRET, **extra)


def test_hung_endpoint_is_one_error_within_the_deadline(project, hung_server):
    client = AwsClient("cloud", target(f"http://127.0.0.1:{hung_server.port}"), 1.0)
    started = time.monotonic()  # the deadline is the calls': building a client is local work
    with pytest.raises(TargetUnavailable) as caught:
        client.account()
    assert time.monotonic() - started < 1.0 + 1  # timeout_s + 1 s
    # The socket's read timeout, or the watchdog's if the machine is too slow to tell.
    assert re.fullmatch(rf"cloud \(aws eu-west-1 via 127\.0\.0\.1:{hung_server.port}\): "
                        r"(GetCallerIdentity: no complete answer|no answer) within 1 s",
                        str(caught.value)), caught.value
    # As a user sees it: one ERROR line per check, no retries past the deadline.
    env = ENV.replace("timeout_s: 3", "timeout_s: 1")
    project.copy_checks()
    project.write("environments/cloud.yaml", env)
    variables = {"SANDBOX_AWS_ENDPOINT": f"http://127.0.0.1:{hung_server.port}",
                 "SANDBOX_AWS_ACCESS_KEY_ID": "AKIAOPSVERIFYSANDBOX",
                 "SANDBOX_AWS_SECRET_ACCESS_KEY": SECRET}
    before = len(hung_server.accepted)
    result = project.run(CHECKS, "--env", "cloud", env=variables)
    assert result.returncode == 1
    assert result.stdout.count("answer within 1 s") >= 4
    assert "Traceback" not in result.output
    # One attempt, shared by every check of the target.
    assert len(hung_server.accepted) - before == 1
    assert SECRET not in result.output


def test_dripping_endpoint_is_cut_at_the_deadline():
    server = DripServer()
    try:
        client = AwsClient("cloud", target(f"http://127.0.0.1:{server.port}"), 1.0)
        started = time.monotonic()
        with pytest.raises(TargetUnavailable,
                           match="GetCallerIdentity: no complete answer within 1 s"):
            client.account()
        assert time.monotonic() - started < 1.0 + 1  # timeout_s + 1 s
    finally:
        server.close()


def test_refused_port_is_one_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(TargetUnavailable, match=r"cannot connect: connection refused$"):
        AwsClient("cloud", target(f"http://127.0.0.1:{port}"), 1.0).account()


# -- read-only, counting, configuration ------------------------------------------------------
def test_the_client_refuses_writes_before_sending(account):
    client = AwsClient("cloud", target(account.endpoint), 3.0)
    with pytest.raises(WriteRefused, match="refusing AWS UpdateService"):
        client.api.client("ecs").update_service(cluster=CLUSTER, service=SERVICE,
                                                desiredCount=0)
    with pytest.raises(WriteRefused, match="SetAlarmState"):
        client.api.client("cloudwatch").set_alarm_state(
            AlarmName="t-developer-5xx", StateValue="ALARM", StateReason="x")
    assert client.ecs_service(CLUSTER, SERVICE).desired == 2  # nothing was changed
    assert {a.state for a in client.alarms("t-developer-5xx")[0]} == {"OK"}


def test_log_counting_stops_at_max_events(account):
    account.inject(frozenset({"log-errors"}))
    client = AwsClient("cloud", target(account.endpoint), 3.0)
    counted = client.count_log_events(LogGroupCheck(name=LOG_GROUP, max_events=10))
    assert (counted.count, counted.capped, len(counted.samples)) == (10, True, 3)
    everything = client.count_log_events(LogGroupCheck(name=LOG_GROUP))
    assert (everything.count, everything.capped) == (63, False)


def test_a_key_without_its_secret_is_an_environment_error(project):
    project.copy_checks()
    project.write("environments/cloud.yaml", ENV.replace(
        "    secret_access_key: ${SANDBOX_AWS_SECRET_ACCESS_KEY}\n", ""))
    result = project.run(CHECKS, "--env", "cloud",
                         env={"SANDBOX_AWS_ENDPOINT": "http://127.0.0.1:9",
                              "SANDBOX_AWS_ACCESS_KEY_ID": "AKIAOPSVERIFYSANDBOX"})
    assert result.returncode == 4
    assert "give access_key_id and secret_access_key together" in result.output
    assert "Traceback" not in result.output
