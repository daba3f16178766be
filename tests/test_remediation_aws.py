"""The AWS remediations — ecs_redeploy, ecs_rollback, rotate_secret — against a real moto
server seeded like the sandbox's: nothing without each of the three opt-ins; ``--plan``
lists exactly what apply touches and changes nothing; apply touches exactly that, re-checks
green and audits one line per item, and a daily (and security) run afterwards is green; an
item that drifted between plan and apply is skipped with its reason; a plan over
``--max-actions`` is refused whole; a failure part-way says what was and was not done.

What changed is read from moto with the sandbox's own client, outside opsverify's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from opsverify.errors import WriteRefused
from opsverify.remediation import Item, Remediation
from opsverify.remediation.aws import (
    Deployment,
    EcsRedeploy,
    EcsRollback,
    RotateSecret,
    Service,
    diagnose,
)
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.moto import (
    ACCESS_KEY_ID,
    CLUSTER,
    DB_SECRET,
    SERVICE,
    TASK_FAMILY,
    UNROTATED_SECRET,
    MotoServer,
)
from opsverify.sandbox.spec import MotoComponent
from opsverify.targets.aws import REMEDIATION_WRITES, AwsClient, AwsTarget, EcsSection
from tests.conftest import running, sandbox_subset

SECRET = "moto-remediation-4c1e9a"  # the moto server's secret access key in these tests
CHECKS = "checks/remediation/test_aws.py"
HEALTH = "checks/health/test_aws.py"
SECURITY = "checks/security/test_aws.py"
REDEPLOY = "test_ecs_redeploy[cloud]"
ROLLBACK = "test_ecs_rollback[cloud]"
ROTATE = "test_rotate_secret[cloud]"
ECS_ID = f"test_ecs_service_running[cloud:{CLUSTER}/{SERVICE}]"
ROTATION_ID = "test_secret_rotation[cloud]"
WORKER = "t-developer-worker"
BATCH = "t-developer-batch"
OTHER_SECRET = "t-developer/slack-webhook"

REMEDIATION = """    remediation:
      ecs_redeploy: {}
      ecs_rollback: {}
      rotate_secret: {older_than_days: 30}
"""


def env_text(services: tuple[str, ...] = (SERVICE,), remediation: str = REMEDIATION) -> str:
    return f"""
settings: {{timeout_s: 3}}
targets:
  cloud:
    type: aws
    endpoint_url: ${{SANDBOX_AWS_ENDPOINT}}
    region: eu-west-1
    access_key_id: ${{SANDBOX_AWS_ACCESS_KEY_ID}}
    secret_access_key: ${{SANDBOX_AWS_SECRET_ACCESS_KEY}}
    ecs: {{cluster: {CLUSTER}, services: [{", ".join(services)}]}}
    alb_target_groups: [t-developer-tg]
    alarms: {{prefix: t-developer-, allowed: [t-developer-low-traffic]}}
{remediation}"""


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    ctx = SandboxContext(tmp_path_factory.mktemp("moto"), SECRET, frozenset())
    yield from running(MotoServer(MotoComponent(), ctx))


@pytest.fixture
def account(moto: MotoServer) -> MotoServer:
    """The moto server, reset to the healthy seeded state."""
    moto.reset()
    return moto


@pytest.fixture
def cloud(project: Any) -> Any:
    for path in (CHECKS, HEALTH, SECURITY):
        project.copy_check(path)
    return project


def run(project: Any, server: MotoServer, *args: str, env: str | None = None,
        variables: dict[str, str] | None = None) -> tuple[Any, dict[str, dict[str, Any]]]:
    project.write("environments/cloud.yaml", env if env is not None else env_text())
    result = project.run(*args, "--env", "cloud", "-p", "no:xdist",
                         env={**server.variables(), **(variables or {})})
    return result, project.checks("cloud")


def destructive(project: Any, server: MotoServer, *args: str, **kwargs: Any,
                ) -> tuple[Any, dict[str, dict[str, Any]]]:
    return run(project, server, CHECKS, "-m", "destructive", "--allow-destructive=cloud",
               *args, **kwargs)


def audit(project: Any) -> list[dict[str, str]]:
    path = project.reports / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() \
        else []


def measured(check: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    return {m["name"]: (m["value"], m["verdict"]) for m in check["evidence"]}


def red(checks: dict[str, dict[str, Any]]) -> set[str]:
    return {n for n, c in checks.items() if c["outcome"] in ("FAIL", "ERROR")}


# -- the server's own state, read with the sandbox's client --------------------------------
def ecs(server: MotoServer, name: str = SERVICE) -> tuple[str, str, int, int]:
    """(task definition, deployment id, running, desired) of a service, as moto has it."""
    svc = server.client("ecs").describe_services(cluster=CLUSTER, services=[name])[
        "services"][0]
    return (svc["taskDefinition"].rsplit("/", 1)[-1], svc["deployments"][0]["id"],
            svc["runningCount"], svc["desiredCount"])


def secret(server: MotoServer, name: str) -> tuple[str, bool, bool]:
    """(AWSCURRENT version, rotation enabled, ever rotated) of a secret, as moto has it."""
    data = server.client("secretsmanager").describe_secret(SecretId=name)
    current = next(v for v, s in data["VersionIdsToStages"].items() if "AWSCURRENT" in s)
    return current, bool(data.get("RotationEnabled")), "LastRotatedDate" in data


def state(server: MotoServer, services: tuple[str, ...] = (SERVICE,),
          secrets: tuple[str, ...] = (DB_SECRET, UNROTATED_SECRET)) -> dict[str, Any]:
    return {**{s: ecs(server, s) for s in services}, **{s: secret(server, s) for s in secrets}}


def degraded(server: MotoServer, *extra: str) -> MotoServer:
    """ecs-degraded and secret-not-rotated, and more services like the degraded one."""
    server.inject(frozenset({"ecs-degraded", "secret-not-rotated"}))
    for name in extra:
        server.create_service(desired=2, name=name)
    return server


def client(server: MotoServer, services: tuple[str, ...] = (SERVICE,),
           key: tuple[str, str] = (ACCESS_KEY_ID, SECRET)) -> AwsClient:
    spec = AwsTarget(type="aws", region="eu-west-1", endpoint_url=server.endpoint,
                     access_key_id=key[0], secret_access_key=key[1],
                     ecs=EcsSection(cluster=CLUSTER, services=list(services)))
    return AwsClient("cloud", spec, 3.0, writes=REMEDIATION_WRITES)


def engine(tmp_path: Path, **kwargs: Any) -> Remediation:
    settings: dict[str, Any] = dict(
        env="cloud", operator="tester", check="test", run_id="r1",
        audit_path=tmp_path / "audit.jsonl", max_actions=5, plan_only=False, environ={})
    settings.update(kwargs)
    return Remediation(**settings)


def lines(tmp_path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


# -- the rule that decides between redeploy and rollback (pure) ------------------------------
REV = "arn:aws:ecs:eu-west-1:123456789012:task-definition/t-developer:{}"


def svc(revision: int, rollout: str, failed: int = 1, running: int = 1,
        others: tuple[int, ...] = ()) -> Service:
    deployments = (Deployment("ecs-svc/new", "PRIMARY", REV.format(revision), rollout, failed),
                   *(Deployment(f"ecs-svc/{r}", "ACTIVE", REV.format(r), "COMPLETED")
                     for r in others))
    return Service(CLUSTER, SERVICE, "ACTIVE", "arn:svc", 2, running, 2 - running,
                   REV.format(revision), deployments)


@pytest.mark.parametrize(("service", "revisions", "fix"), [
    (svc(2, "IN_PROGRESS", running=2), [2, 1], "none"),
    # A rollout with no failed task is left to finish, new revision or not.
    (svc(2, "IN_PROGRESS", failed=0, others=(1,)), [2, 1], "wait"),
    # A new revision failing (AWS: the old deployment still ACTIVE; moto: alone).
    (svc(2, "IN_PROGRESS", others=(1,)), [2, 1], "rollback"),
    (svc(2, "IN_PROGRESS"), [2, 1], "rollback"),
    (svc(2, "FAILED", failed=0), [2, 1], "rollback"),
    # A forced redeploy of the revision that ran: the old deployment runs it too.
    (svc(2, "IN_PROGRESS", others=(2,)), [2, 1], "redeploy"),
    # Nothing older to go back to.
    (svc(1, "IN_PROGRESS"), [1], "redeploy"),
    # After a rollback: the service runs an older revision than the newest ACTIVE one.
    (svc(1, "IN_PROGRESS", others=(2,)), [2, 1], "redeploy"),
    # Tasks lost after the rollout completed.
    (svc(2, "COMPLETED"), [2, 1], "redeploy"),
], ids=["healthy", "rolling-out", "new-revision-failing", "new-revision-failing-moto",
        "circuit-breaker-failed", "forced-redeploy-failing", "single-revision",
        "after-a-rollback", "completed-then-lost"])
def test_one_rule_decides_which_fix_a_service_gets(service: Service, revisions: list[int],
                                                    fix: str) -> None:
    diagnosis = diagnose(service, [REV.format(r) for r in revisions])
    assert diagnosis.fix == fix, diagnosis
    if fix == "rollback":
        assert diagnosis.previous == REV.format(1)


# -- the three opt-ins ---------------------------------------------------------------------
def collected(result: Any) -> list[str]:
    return sorted(line.split("::", 1)[1] for line in result.stdout.splitlines()
                  if line.startswith(CHECKS))


def test_collected_only_for_a_target_whose_section_enables_the_action(cloud, account):
    args = (CHECKS, "--env", "cloud", "-m", "destructive", "--allow-destructive=cloud",
            "--collect-only", "-q")
    cloud.write("environments/cloud.yaml", env_text(remediation=""))
    result = cloud.run(*args, env=account.variables())
    assert collected(result) == ["test_ecs_redeploy[no-aws-target]",
                                 "test_ecs_rollback[no-aws-target]",
                                 "test_rotate_secret[no-aws-target]"], result.output
    cloud.write("environments/cloud.yaml", env_text(
        remediation="    remediation: {rotate_secret: {}}\n"))
    result = cloud.run(*args, env=account.variables())
    assert ROTATE in collected(result)
    assert REDEPLOY not in collected(result)
    cloud.write("environments/cloud.yaml", env_text())
    result = cloud.run(*args, env=account.variables())
    assert collected(result) == [REDEPLOY, ROLLBACK, ROTATE], result.output


def test_an_ecs_fix_needs_the_ecs_section(cloud, account):
    cloud.write("environments/cloud.yaml", env_text().replace(
        f"    ecs: {{cluster: {CLUSTER}, services: [{SERVICE}]}}\n", ""))
    result = cloud.run(CHECKS, "--env", "cloud", env=account.variables())
    assert result.returncode == 4, result.output
    assert "remediation.ecs_redeploy acts on the services of the ecs: section" in result.output


@pytest.mark.parametrize(("flags", "why"), [
    (("-m", "destructive"), "they change systems; add --allow-destructive=cloud"),
    (("--allow-destructive=cloud",), "a destructive check runs only when selected by name: "
                                     "add -m destructive"),
], ids=["without-allow-destructive", "without-m-destructive"])
def test_deselected_without_each_flag_and_nothing_changes(cloud, account, flags, why):
    degraded(account)
    before = state(account)
    cloud.write("environments/cloud.yaml", env_text())
    result = cloud.run(CHECKS, "--env", "cloud", *flags, env=account.variables())
    assert result.returncode == 5, result.output
    assert f"3 destructive check(s) deselected: {why}" in result.stdout
    assert state(account) == before
    assert audit(cloud) == []


def test_the_admin_client_sends_only_its_two_writes(account):
    admin = client(account)
    with pytest.raises(WriteRefused, match="refusing AWS GetSecretValue: opsverify never "
                                           "reads a secret's value"):
        admin.api.client("secretsmanager").get_secret_value(SecretId=DB_SECRET)
    for call in (lambda: admin.api.client("ecs").delete_service(cluster=CLUSTER,
                                                                 service=SERVICE, force=True),
                 lambda: admin.api.client("ecs").register_task_definition(
                     family=TASK_FAMILY, containerDefinitions=[]),
                 lambda: admin.api.client("secretsmanager").delete_secret(SecretId=DB_SECRET),
                 lambda: admin.api.client("cloudwatch").set_alarm_state(
                     AlarmName="t-developer-5xx", StateValue="ALARM", StateReason="x")):
        with pytest.raises(WriteRefused, match="may send reads and RotateSecret, "
                                               "UpdateService only"):
            call()
    assert ecs(account)[2:] == (2, 2)  # nothing was sent
    admin.close()


ADMIN_IN_A_DAILY_CHECK = '''
import pytest


@pytest.mark.daily
def test_sneaky(aws_admin, evidence):
    evidence.note("account", aws_admin.account())
'''


def test_the_admin_client_errors_in_a_non_destructive_check(cloud, account):
    cloud.write("checks/health/test_sneaky.py", ADMIN_IN_A_DAILY_CHECK)
    result, checks = run(cloud, account, "checks/health/test_sneaky.py",
                         "--allow-destructive=cloud")
    assert result.returncode == 1, result.output
    assert checks["test_sneaky[cloud]"]["outcome"] == "ERROR"
    assert "aws_admin is write-capable and exists only inside a destructive check" in \
        result.stdout


# -- plan, apply, re-check -----------------------------------------------------------------
PLAN_LINE = r"^PLAN  {}: cloud: {} (.+) \[plan [0-9a-f]{{12}}\]$"


def test_plan_lists_exactly_what_apply_touches_and_changes_nothing(cloud, account):
    degraded(account)
    account.create_service(desired=1, name=WORKER)  # healthy: 1 of 1
    before = state(account, (SERVICE, WORKER))
    result, checks = destructive(cloud, account, "--plan",
                                 env=env_text((SERVICE, WORKER)))
    assert result.returncode == 0, result.output
    assert {n: c["outcome"] for n, c in checks.items()} == {
        REDEPLOY: "PLAN", ROLLBACK: "PLAN", ROTATE: "PLAN"}
    assert state(account, (SERVICE, WORKER)) == before, "--plan changed the account"
    assert audit(cloud) == []
    redeploy = re.findall(PLAN_LINE.format(re.escape(f"{CHECKS}::{REDEPLOY}"),
                                           "ecs_redeploy"), result.stdout, re.M)
    deployment = before[SERVICE][1]
    assert redeploy == [
        f"arn:aws:ecs:eu-west-1:123456789012:service/{CLUSTER}/{SERVICE} @ "
        f"arn:aws:ecs:eu-west-1:123456789012:task-definition/{TASK_FAMILY}:1 deployment "
        f"{deployment} (t-developer:1, running 1/2, pending 1, deployment {deployment} "
        "IN_PROGRESS with 1 failed task: no previous ACTIVE revision to roll back to)"]
    assert checks[ROLLBACK]["plan"] == []
    rotate = re.findall(PLAN_LINE.format(re.escape(f"{CHECKS}::{ROTATE}"), "rotate_secret"),
                        result.stdout, re.M)
    version = before[UNROTATED_SECRET][0]
    assert len(rotate) == 1
    assert re.fullmatch(rf"arn:aws:secretsmanager:eu-west-1:123456789012:secret:"
                        rf"{re.escape(UNROTATED_SECRET)}-\w+ version {version} \(rotation "
                        r"off, never rotated, created 0\.0 days ago\)", rotate[0]), rotate


def test_applied_touches_exactly_the_plan_and_a_daily_run_is_green_again(cloud, account):
    degraded(account)
    account.create_service(desired=1, name=WORKER)
    services = (SERVICE, WORKER)
    env = env_text(services)
    result, checks = run(cloud, account, HEALTH, SECURITY, "-m", "daily or security", env=env)
    assert red(checks) == {ECS_ID, ROTATION_ID}, result.output
    before = state(account, services)

    result, checks = destructive(cloud, account, env=env,
                                 variables={"GITHUB_ACTOR": "octocat"})
    assert result.returncode == 0, result.output
    assert {n: c["outcome"] for n, c in checks.items()} == {
        REDEPLOY: "PASS", ROLLBACK: "PASS", ROTATE: "PASS"}
    after = state(account, services)
    # The degraded service: a new deployment of the same revision, all its tasks running.
    assert after[SERVICE][0] == before[SERVICE][0] == "t-developer:1"
    assert after[SERVICE][1] != before[SERVICE][1]
    assert after[SERVICE][2:] == (2, 2)
    # The unrotated secret: a new current version, rotation on. Nothing else changed.
    assert after[UNROTATED_SECRET][0] != before[UNROTATED_SECRET][0]
    assert after[UNROTATED_SECRET][1:] == (True, True)
    assert after[WORKER] == before[WORKER]
    assert after[DB_SECRET] == before[DB_SECRET]

    entries = audit(cloud)
    assert [(e["action"], e["result"]) for e in entries] == [
        ("ecs_redeploy", "applied"), ("rotate_secret", "applied")]
    for entry in entries:
        assert set(entry) == {"time", "operator", "ci_actor", "env", "target", "action",
                              "plan_id", "identity", "before", "after", "result", "check",
                              "run_id"}
        assert (entry["env"], entry["target"], entry["ci_actor"]) == (
            "cloud", "cloud", "octocat (GITHUB_ACTOR)")
    assert entries[0]["identity"].endswith(f"deployment {before[SERVICE][1]}")
    assert entries[0]["after"] == f"deployment {after[SERVICE][1]} of t-developer:1, " \
                                  "running 2/2"
    assert entries[1]["identity"].endswith(f"version {before[UNROTATED_SECRET][0]}")
    assert entries[1]["after"].startswith(f"version {after[UNROTATED_SECRET][0]}, rotated ")
    assert entries[1]["after"].endswith(", rotation every 30 days")
    # The re-checks: what test_ecs_service_running and test_secret_rotation judge.
    assert measured(checks[REDEPLOY])[f"{SERVICE} runningCount"] == (2, "PASS")
    assert measured(checks[REDEPLOY])[f"{WORKER} runningCount"] == (1, "PASS")
    assert measured(checks[ROTATE])["secrets without rotation"] == ("[]", "PASS")
    assert measured(checks[ROTATE])["secrets.rotation_age_days"][1] == "PASS"
    assert "never-read-by-opsverify" not in result.output

    result, checks = run(cloud, account, HEALTH, SECURITY, "-m", "daily or security", env=env)
    assert result.returncode == 0, result.output
    assert red(checks) == set()
    # Nothing left to do: a second run plans nothing.
    result, checks = destructive(cloud, account, env=env)
    assert result.returncode == 0, result.output
    assert len(audit(cloud)) == 2


def test_a_failing_new_revision_is_rolled_back_not_redeployed(cloud, account):
    account.inject(frozenset({"ecs-bad-revision"}))
    result, checks = run(cloud, account, HEALTH, SECURITY, "-m", "daily or security")
    assert red(checks) == {ECS_ID}, result.output  # the new revision is as secure
    assert ecs(account)[0] == "t-developer:2"

    result, checks = destructive(cloud, account, "--plan")
    assert [p.split(" (")[0] for p in checks[ROLLBACK]["plan"]] == [
        f"cloud: ecs_rollback arn:aws:ecs:eu-west-1:123456789012:service/{CLUSTER}/{SERVICE}"
        f" @ arn:aws:ecs:eu-west-1:123456789012:task-definition/{TASK_FAMILY}:2"]
    assert checks[REDEPLOY]["plan"] == []
    assert ecs(account)[0] == "t-developer:2"

    result, checks = destructive(cloud, account)
    assert result.returncode == 0, result.output
    assert ecs(account)[0::2] == ("t-developer:1", 2)
    assert [(e["action"], e["result"]) for e in audit(cloud)] == [("ecs_rollback", "applied")]
    assert audit(cloud)[0]["before"].startswith(
        "t-developer:2, running 1/2, pending 1, deployment ")
    assert audit(cloud)[0]["before"].endswith(
        "the new revision t-developer:2 is failing; t-developer:1 is the previous ACTIVE one")
    assert measured(checks[ROLLBACK])[f"{SERVICE} runningCount"] == (2, "PASS")
    # The redeploy check ran first, and left the service to the rollback.
    assert measured(checks[REDEPLOY]) == {SERVICE: (
        "left to ecs_rollback: the new revision t-developer:2 is failing; t-developer:1 is "
        "the previous ACTIVE one", "PASS")}
    # The failing revision stays registered: the service no longer runs the newest one,
    # so nothing rolls it back further.
    revisions = account.client("ecs").list_task_definitions(
        familyPrefix=TASK_FAMILY, status="ACTIVE")["taskDefinitionArns"]
    assert [r.rsplit("/", 1)[-1] for r in revisions] == ["t-developer:1", "t-developer:2"]
    result, checks = run(cloud, account, HEALTH, "-m", "daily")
    assert result.returncode == 0, result.output


# -- drift, limits, failures ---------------------------------------------------------------
def test_a_redeploy_that_drifted_is_skipped(account, tmp_path):
    degraded(account, WORKER)
    admin = client(account, (SERVICE, WORKER))
    action = EcsRedeploy(admin)
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert len(plan.items) == 2
    # Between plan and apply, someone else deploys the first service; a third degrades.
    account.client("ecs").update_service(cluster=CLUSTER, service=SERVICE,
                                         forceNewDeployment=True)
    theirs = ecs(account)
    outcome = fix.apply(action, plan)
    assert [why for _, why in outcome.skipped] == [
        f"a new deployment since the plan: {plan.items[0].ref.deployment} -> {theirs[1]}"]
    assert [i.identity for i, _ in outcome.applied] == [plan.items[1].identity]
    assert ecs(account) == theirs  # still 1 of 2: skipped, not redeployed
    assert ecs(account, WORKER)[2:] == (2, 2)
    assert [e["result"] for e in lines(tmp_path)] == [
        f"skipped: {outcome.skipped[0][1]}", "applied"]
    admin.close()


def test_a_rollback_that_drifted_is_skipped(account, tmp_path):
    account.inject(frozenset({"ecs-bad-revision"}))
    admin = client(account)
    action = EcsRollback(admin)
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert [i.ref.previous.rsplit("/", 1)[-1] for i in plan.items] == ["t-developer:1"]
    account.client("ecs").update_service(cluster=CLUSTER, service=SERVICE,
                                         taskDefinition=f"{TASK_FAMILY}:1")
    outcome = fix.apply(action, plan)
    assert outcome.applied == []
    assert [why for _, why in outcome.skipped] == [
        "its task definition changed: t-developer:2 -> t-developer:1"]
    assert lines(tmp_path)[0]["result"] == \
        "skipped: its task definition changed: t-developer:2 -> t-developer:1"
    admin.close()


def test_a_secret_that_drifted_is_skipped_and_nothing_new_is_picked_up(account, tmp_path):
    degraded(account)
    sm = account.client("secretsmanager")
    sm.create_secret(Name=OTHER_SECRET, SecretString="https://hooks.example/never-read")
    admin = client(account)
    action = RotateSecret(admin, 30)
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert [i.ref.name for i in plan.items] == [UNROTATED_SECRET, OTHER_SECRET]
    # Someone rotates the first; a new unrotated secret appears: not in the plan.
    sm.rotate_secret(SecretId=UNROTATED_SECRET, RotationRules={"AutomaticallyAfterDays": 7})
    rotated = secret(account, UNROTATED_SECRET)
    sm.create_secret(Name="t-developer/newcomer", SecretString="never-read-either")
    newcomer = secret(account, "t-developer/newcomer")
    outcome = fix.apply(action, plan)
    assert [why for _, why in outcome.skipped] == [
        f"rotated since the plan: AWSCURRENT is version {rotated[0]}, was "
        f"{plan.items[0].ref.current}"]
    assert [i.identity for i, _ in outcome.applied] == [plan.items[1].identity]
    assert secret(account, UNROTATED_SECRET) == rotated
    assert secret(account, "t-developer/newcomer") == newcomer
    assert secret(account, OTHER_SECRET)[1:] == (True, True)
    admin.close()


def test_a_plan_over_max_actions_is_refused_whole(cloud, account):
    degraded(account, WORKER)
    account.client("secretsmanager").create_secret(Name=OTHER_SECRET, SecretString="x" * 12)
    services, secrets = (SERVICE, WORKER), (DB_SECRET, UNROTATED_SECRET, OTHER_SECRET)
    before = state(account, services, secrets)
    result, checks = destructive(cloud, account, "--max-actions=1", env=env_text(services))
    assert result.returncode == 1, result.output
    assert state(account, services, secrets) == before
    assert audit(cloud) == []
    for name, action in ((REDEPLOY, "ecs_redeploy"), (ROTATE, "rotate_secret")):
        assert checks[name]["outcome"] == "FAIL"
        assert re.match(rf"cloud: {action}: refused whole, nothing changed: plan [0-9a-f]{{12}} "
                        r"lists 2 items, over --max-actions=1: ", checks[name]["message"]), \
            checks[name]["message"]
    # A percentage of what the action chose from: 2 of 2 services, 2 of 3 secrets.
    result, checks = destructive(cloud, account, "--max-percent=50", env=env_text(services))
    assert result.returncode == 1, result.output
    assert "100 % of 2, over --max-percent=50" in checks[REDEPLOY]["message"]
    assert "67 % of 3, over --max-percent=50" in checks[ROTATE]["message"]
    assert state(account, services, secrets) == before


@pytest.fixture
def remediation_user(account: MotoServer) -> Iterator[tuple[str, str]]:
    """An IAM user that may read ECS and Secrets Manager, and write neither; ``enforce()``
    makes moto check every request against IAM from then on (off again afterwards)."""
    iam = account.client("iam")
    iam.create_user(UserName="opsverify-remediation")
    iam.put_user_policy(UserName="opsverify-remediation", PolicyName="read-only",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
                            "Effect": "Allow", "Resource": "*", "Action": [
                                "sts:GetCallerIdentity", "ecs:Describe*", "ecs:List*",
                                "secretsmanager:Describe*", "secretsmanager:List*"]}]}))
    key = iam.create_access_key(UserName="opsverify-remediation")["AccessKey"]
    yield key["AccessKeyId"], key["SecretAccessKey"]
    requests.post(f"{account.endpoint}/moto-api/reset-auth", data="inf",
                  timeout=10).raise_for_status()


def enforce(server: MotoServer) -> None:
    requests.post(f"{server.endpoint}/moto-api/reset-auth", data="0",
                  timeout=10).raise_for_status()


class DeniedAfterFirst:
    """The action, whose account loses what it may not do once its first item is done."""

    def __init__(self, action: Any, server: MotoServer) -> None:
        self.action, self.server = action, server
        self.name, self.target = action.name, action.target

    def select(self) -> list[Item]:
        return list(self.action.select())

    def drift(self, item: Item) -> str | None:
        return self.action.drift(item)  # type: ignore[no-any-return]

    def apply(self, item: Item) -> str:
        after = str(self.action.apply(item))
        enforce(self.server)
        return after


def test_a_redeploy_failing_part_way_says_what_was_and_was_not_done(
        account, remediation_user, tmp_path):
    degraded(account, WORKER, BATCH)
    services = (SERVICE, WORKER, BATCH)
    admin = client(account, services, remediation_user)
    fix = engine(tmp_path)
    action = DeniedAfterFirst(EcsRedeploy(admin), account)
    plan = fix.plan(action)
    before = [ecs(account, s) for s in services]
    outcome = fix.apply(action, plan)
    requests.post(f"{account.endpoint}/moto-api/reset-auth", data="inf", timeout=10)
    assert [i.identity for i, _ in outcome.applied] == [plan.items[0].identity]
    assert outcome.failed is not None
    assert outcome.failed[0] == plan.items[1]
    assert "UpdateService refused" in outcome.failed[1], outcome.failed
    assert outcome.not_attempted == [plan.items[2]]
    assert outcome.report().startswith(f"applied 1 of 3 (plan {plan.plan_id}); applied: ")
    assert f"not attempted: {plan.items[2].identity}" in outcome.report()
    assert [e["result"].split(":")[0] for e in lines(tmp_path)] == [
        "applied", "failed", "not attempted"]
    after = [ecs(account, s) for s in services]
    assert after[0][2:] == (2, 2)
    assert after[0][1] != before[0][1]
    assert after[1:] == before[1:]
    admin.close()


def test_a_rotation_failing_part_way_says_what_was_and_was_not_done(
        account, remediation_user, tmp_path):
    degraded(account)
    account.client("secretsmanager").create_secret(Name=OTHER_SECRET, SecretString="x" * 12)
    admin = client(account, key=remediation_user)
    fix = engine(tmp_path)
    action = DeniedAfterFirst(RotateSecret(admin, 30), account)
    plan = fix.plan(action)
    other = secret(account, OTHER_SECRET)
    outcome = fix.apply(action, plan)
    requests.post(f"{account.endpoint}/moto-api/reset-auth", data="inf", timeout=10)
    assert [i.identity for i, _ in outcome.applied] == [plan.items[0].identity]
    assert outcome.failed is not None
    assert outcome.failed[0] == plan.items[1]
    assert "RotateSecret" in outcome.failed[1], outcome.failed
    assert secret(account, OTHER_SECRET) == other
    assert secret(account, UNROTATED_SECRET)[1:] == (True, True)
    admin.close()


def test_a_denied_update_fails_the_check_and_exits_1(cloud, account, remediation_user):
    degraded(account)
    before = state(account)
    key, secret_key = remediation_user
    enforce(account)
    result, checks = destructive(cloud, account, variables={
        "SANDBOX_AWS_ACCESS_KEY_ID": key, "SANDBOX_AWS_SECRET_ACCESS_KEY": secret_key})
    requests.post(f"{account.endpoint}/moto-api/reset-auth", data="inf", timeout=10)
    assert result.returncode == 1, result.output
    assert state(account) == before
    message = checks[REDEPLOY]["message"]
    assert message.startswith("cloud: ecs_redeploy stopped at a failure: applied 0 of 1 "
                              "(plan "), message
    assert "; failed: arn:aws:ecs:" in message
    assert "UpdateService refused" in message
    assert checks[ROTATE]["outcome"] == "FAIL"
    assert [e["result"].split(":")[0] for e in audit(cloud)] == ["failed", "failed"]
    assert secret_key not in result.output


def test_a_rotation_whose_effect_never_shows_fails(account, tmp_path):
    """RotateSecret is asynchronous: success is a new AWSCURRENT version. A secret without a
    value has none to rotate; moto accepts the call all the same."""
    account.client("secretsmanager").create_secret(Name=OTHER_SECRET)
    admin = client(account)
    fix = engine(tmp_path)
    action = RotateSecret(admin, 30, wait_s=0.5)
    plan = fix.plan(action)
    outcome = fix.apply(action, plan)
    assert outcome.failed is not None
    assert outcome.failed[1] == ("RotateSecret accepted, but AWSCURRENT is still version none "
                                 "after 0.5 s (see the rotation function's logs)")
    admin.close()


# -- the sandbox itself: environments/sandbox.yaml's cloud section and its faults ----------
@pytest.mark.parametrize(("faults", "fixed"), [
    (("ecs-degraded", "secret-not-rotated"), {REDEPLOY: 1, ROLLBACK: 0, ROTATE: 1}),
    (("ecs-bad-revision",), {REDEPLOY: 0, ROLLBACK: 1, ROTATE: 0}),
], ids=["ecs-degraded+secret-not-rotated", "ecs-bad-revision"])
def test_the_sandbox_faults_are_repaired(project, faults, fixed):
    project.copy_check(CHECKS)
    project.write_env(sandbox_subset({"moto"}))
    result = project.run("-m", "destructive", "--allow-destructive=sandbox", "-p", "no:xdist",
                         *[a for f in faults for a in ("--sandbox-fault", f)])
    assert result.returncode == 0, result.output
    checks = project.checks()
    assert {n: c["outcome"] for n, c in checks.items()} == {
        n: "PASS" for n in (REDEPLOY, ROLLBACK, ROTATE)}, result.output
    assert {n: len(c["applied"]) for n, c in checks.items()} == fixed
    assert measured(checks[REDEPLOY if fixed[REDEPLOY] else ROLLBACK])[
        f"{SERVICE} runningCount"] == (2, "PASS")
