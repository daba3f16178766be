"""checks/security/test_aws.py against a real moto server: the sandbox's T-Developer account
(closed security groups, a rotated secret, 30-day log retention, a scan-on-push repository
with a clean image, a task definition that takes its secret from Secrets Manager) passes
every check, and each bad state turns exactly its check red. A role without
secretsmanager:ListSecrets is a SKIP naming that grant; a secret-looking environment value
is shown by name and is in no artifact; and a botocore hook on every client shows that the
security checks of both AWS types only Describe/List/Get/Head, never GetSecretValue."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.moto import (
    DB_GROUP,
    LOG_GROUP,
    REPOSITORY,
    TASK_FAMILY,
    UNROTATED_SECRET,
    MotoServer,
)
from opsverify.sandbox.spec import MotoComponent
from opsverify.targets.aws_api import READ_PREFIXES
from tests.conftest import running, sandbox_subset

SECRET = "moto-aws-security-7e3b2f"
CHECKS = "checks/security/test_aws.py"
S3_CHECKS = "checks/security/test_s3.py"
# A password a developer pasted into a task definition: it must be in no artifact.
PASTED = "Tr0ub4dor-and-3-horses"
PASTED_DSN = "postgresql://t_developer:c0rrect-h0rse-battery@db.internal:5432/app"
SG = "test_security_groups_closed[cloud]"
ROTATION = "test_secret_rotation[cloud]"
RETENTION = "test_log_retention[cloud]"
SCAN_ON_PUSH = "test_ecr_scan_on_push[cloud]"
FINDINGS = "test_ecr_image_findings[cloud]"
PRIVILEGED = "test_ecs_not_privileged[cloud]"
ENV_SECRETS = "test_ecs_env_secrets[cloud]"
ALL = (SG, ROTATION, RETENTION, SCAN_ON_PUSH, FINDINGS, PRIVILEGED, ENV_SECRETS)

ENV = """
settings: {timeout_s: 3}
targets:
  cloud:
    type: aws
    endpoint_url: ${SANDBOX_AWS_ENDPOINT}
    region: eu-west-1
    access_key_id: ${SANDBOX_AWS_ACCESS_KEY_ID}
    secret_access_key: ${SANDBOX_AWS_SECRET_ACCESS_KEY}
"""
S3_TARGET = """
  datasets:
    type: s3
    endpoint_url: ${SANDBOX_AWS_ENDPOINT}
    region: eu-west-1
    bucket: gogooku3-data
    access_key_id: ${SANDBOX_AWS_ACCESS_KEY_ID}
    secret_access_key: ${SANDBOX_AWS_SECRET_ACCESS_KEY}
"""
# A plugin for the project's run: every boto3 client opsverify makes records each operation
# it is about to send (botocore's before-call event), in the file RECORD_CALLS names.
RECORDER = '''
import os
import threading

from opsverify.targets import aws_api

_lock = threading.Lock()
_made = aws_api.AwsApi.client


def _record(model, **_):
    with _lock, open(os.environ["RECORD_CALLS"], "a") as out:
        out.write(f"{model.service_model.service_name} {model.name}\\n")


def _client(self, service):
    made = _made(self, service)
    made.meta.events.register("before-call", _record, unique_id="test-recorder")
    return made


aws_api.AwsApi.client = _client
'''


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One real moto server for the module, seeded like the sandbox's."""
    ctx = SandboxContext(tmp_path_factory.mktemp("moto"), SECRET, frozenset())
    yield from running(MotoServer(MotoComponent(), ctx))


@pytest.fixture
def account(moto: MotoServer) -> MotoServer:
    """The moto server, reset to the seeded (secure) account."""
    moto.reset()
    return moto


def run_checks(project: Any, server: MotoServer, env_text: str = ENV, *paths: str,
               env: dict[str, str] | None = None) -> tuple[Any, dict[str, dict[str, Any]]]:
    for path in paths or (CHECKS,):
        project.copy_check(path)
    return project.run_checks("cloud", env_text, *(paths or (CHECKS,)),
                              env={**server.variables(), **(env or {})})


def evidence(check: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in check["evidence"] if e["name"] == name)


def listed(check: dict[str, Any], name: str) -> str:
    """A list-valued measurement, as summary.json shows it (its repr)."""
    return str(evidence(check, name)["value"])


def secure_except(**bad: str) -> dict[str, str]:
    """Every check PASS but those named (by their test id)."""
    return {name: bad.get(name, "PASS") for name in ALL}


def register_task_definition(server: MotoServer, **container: Any) -> None:
    """A new revision of the T-Developer task definition, its container changed."""
    server.client("ecs").register_task_definition(
        family=TASK_FAMILY, requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
        cpu="512", memory="1024", containerDefinitions=[{
            "name": "api", "image": f"{REPOSITORY}:2025.03", "essential": True, **container}])


# -- PASS ----------------------------------------------------------------------------------
def test_secure_account_passes_every_check(project, account):
    result, checks = run_checks(project, account)
    assert result.returncode == 0, result.output
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except()
    assert evidence(checks[SG], "security groups")["value"] == 4  # 2 default, service, db
    assert listed(checks[SG], "ingress open to the world") == "[]"
    age = evidence(checks[ROTATION], "secrets.rotation_age_days")
    assert age["value"] < 1
    assert age["expected"] == "≤ 90 days"
    retention = evidence(checks[RETENTION], "logs.retention_days")
    assert (retention["value"], retention["expected"]) == (30, "≥ 30 days")
    assert evidence(checks[FINDINGS], f"{REPOSITORY}:2025.02")["value"] == "LOW 5, MEDIUM 2"
    assert evidence(checks[PRIVILEGED], "task definitions")["value"] == 1
    assert SECRET not in result.output


def test_world_open_https_and_never_expiring_logs_pass(project, account):
    ec2, logs = account.client("ec2"), account.client("logs")
    group = ec2.create_security_group(GroupName="public-alb", Description="HTTPS")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
    logs.create_log_group(logGroupName="/aws/audit")  # no retention: never expires
    result, checks = run_checks(project, account)
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(), result.output
    assert evidence(checks[RETENTION], "never expire")["value"] == 1


# -- FAIL, one bad state per check -----------------------------------------------------------
def test_database_open_to_the_world_fails_the_security_groups(project, account):
    account.inject(frozenset({"sg-open-db"}))
    result, checks = run_checks(project, account)
    assert result.returncode == 1
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(**{SG: "FAIL"})
    open_rules = listed(checks[SG], "ingress open to the world")
    assert f"({DB_GROUP}): tcp 5432 from 0.0.0.0/0 exposes PostgreSQL (5432)" in open_rules
    assert "ingress open to the world = [" in result.stdout


def test_all_traffic_from_ipv6_and_a_port_range_fail(project, account):
    ec2 = account.client("ec2")
    group = ec2.create_security_group(GroupName="bastion", Description="jump")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[
        {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        {"IpProtocol": "tcp", "FromPort": 3000, "ToPort": 3400,
         "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
         "IpRanges": [{"CidrIp": "203.0.113.7/32"}]}])  # one office address: fine
    result, checks = run_checks(project, account)
    assert checks[SG]["outcome"] == "FAIL", result.output
    open_rules = listed(checks[SG], "ingress open to the world")
    assert "(bastion): all traffic from ::/0 exposes all ports" in open_rules
    assert "(bastion): tcp 3000-3400 from 0.0.0.0/0 exposes MySQL (3306), RDP (3389)" \
        in open_rules
    assert "203.0.113.7" not in open_rules


def test_secret_without_rotation_fails(project, account):
    account.inject(frozenset({"secret-not-rotated"}))
    result, checks = run_checks(project, account)
    assert result.returncode == 1
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(**{ROTATION: "FAIL"})
    assert listed(checks[ROTATION], "secrets without rotation") == str([UNROTATED_SECRET])
    assert evidence(checks[ROTATION], "secrets")["value"] == 2


def test_secret_rotated_longer_ago_than_the_threshold_fails(project, account):
    """moto dates a rotation now; the environment's threshold makes "now" too long ago."""
    time.sleep(2)  # 2.3e-05 days: past the crit, at the 1e-05 days the check rounds to
    env = ENV + "    thresholds: {secrets.rotation_age_days: {crit: 0.00001}}\n"
    result, checks = run_checks(project, account, env)
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(
        **{ROTATION: "FAIL"}), result.output
    age = evidence(checks[ROTATION], "secrets.rotation_age_days")
    assert age["verdict"] == "FAIL"
    assert age["value"] > 0.00001
    assert "crit from environments/cloud.yaml:" in age["source"]
    assert evidence(checks[ROTATION], "stalest secret")["value"] == "t-developer/database"


def test_short_log_retention_fails(project, account):
    account.client("logs").create_log_group(logGroupName="/ecs/t-developer-worker")
    account.client("logs").put_retention_policy(logGroupName="/ecs/t-developer-worker",
                                                retentionInDays=7)
    result, checks = run_checks(project, account)
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(
        **{RETENTION: "FAIL"}), result.output
    retention = evidence(checks[RETENTION], "logs.retention_days")
    assert (retention["value"], retention["expected"]) == (7, "≥ 30 days")
    assert evidence(checks[RETENTION], "groups kept too briefly")["value"] == \
        "/ecs/t-developer-worker: 7 days"
    assert evidence(checks[RETENTION], "shortest retention")["value"] != LOG_GROUP


def test_repository_without_scan_on_push_fails(project, account):
    account.client("ecr").put_image_scanning_configuration(
        repositoryName=REPOSITORY, imageScanningConfiguration={"scanOnPush": False})
    result, checks = run_checks(project, account)
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(
        **{SCAN_ON_PUSH: "FAIL"}), result.output
    assert listed(checks[SCAN_ON_PUSH], "repositories without scan on push") == str(
        [REPOSITORY])


def test_high_findings_in_the_latest_image_fail(project, account):
    account.client("ecr").create_repository(repositoryName="t-developer/worker",
                                            imageScanningConfiguration={"scanOnPush": True})
    account.push_image("t-developer/worker", "2025.02", {"CRITICAL": 1, "HIGH": 3, "LOW": 9})
    result, checks = run_checks(project, account)
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(
        **{FINDINGS: "FAIL"}), result.output
    assert listed(checks[FINDINGS], "latest images with findings >= HIGH") == str(
        ["t-developer/worker:2025.02 CRITICAL 1, HIGH 3"])
    assert evidence(checks[FINDINGS], f"{REPOSITORY}:2025.02")["value"] == "LOW 5, MEDIUM 2"


def test_latest_image_never_scanned_fails(project, account):
    ecr = account.client("ecr")
    ecr.create_repository(repositoryName="t-developer/docs")
    ecr.put_image(repositoryName="t-developer/docs", imageTag="v1", imageManifest=json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7,
                   "digest": "sha256:" + "d" * 64}, "layers": []}))
    result, checks = run_checks(project, account)
    assert checks[FINDINGS]["outcome"] == "FAIL", result.output
    assert checks[SCAN_ON_PUSH]["outcome"] == "FAIL"  # it was created without scan on push
    assert listed(checks[FINDINGS], "latest images without a completed scan") == str(
        ["t-developer/docs:v1 (NOT_SCANNED)"])


def test_privileged_container_fails(project, account):
    register_task_definition(account, privileged=True)
    result, checks = run_checks(project, account)
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(
        **{PRIVILEGED: "FAIL"}), result.output
    assert listed(checks[PRIVILEGED], "privileged containers") == str(["t-developer:2/api"])


def test_secret_in_a_plain_environment_value_fails_and_is_in_no_artifact(project, account):
    register_task_definition(account, environment=[
        {"name": "APP_ENV", "value": "production"},
        {"name": "OPENAI_API_KEY_ENABLED", "value": "true"},
        {"name": "DB_PASSWORD", "value": PASTED},
        {"name": "REPORTS_DB", "value": PASTED_DSN}])
    result, checks = run_checks(project, account)
    assert result.returncode == 1
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(
        **{ENV_SECRETS: "FAIL"}), result.output
    assert listed(checks[ENV_SECRETS], "secret-looking environment variables") == str(
        ["t-developer:2/api: DB_PASSWORD", "t-developer:2/api: REPORTS_DB"])
    assert "DB_PASSWORD" in result.stdout
    password = PASTED_DSN.split(":")[2].split("@")[0]
    artifacts = [p for p in project.reports.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in artifacts)
    for value in (PASTED, PASTED_DSN, password):
        assert value not in result.output
        assert not [p for p in artifacts if value in p.read_text(errors="replace")]


# -- what the account may not read, what the environment opts out of ------------------------
def test_a_role_without_list_secrets_skips_naming_the_grant(project, account):
    iam = account.client("iam")
    iam.create_user(UserName="opsverify-monitor")
    iam.put_user_policy(UserName="opsverify-monitor", PolicyName="security-review",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{
                            "Effect": "Allow", "Resource": "*", "Action": [
                                "sts:GetCallerIdentity", "ec2:DescribeSecurityGroups",
                                "logs:DescribeLogGroups", "ecr:Describe*",
                                "ecs:ListTaskDefinitionFamilies",
                                "ecs:DescribeTaskDefinition"]}]}))
    key = iam.create_access_key(UserName="opsverify-monitor")["AccessKey"]
    auth = f"{account.endpoint}/moto-api/reset-auth"
    requests.post(auth, data="0", timeout=10).raise_for_status()  # moto enforces IAM now
    try:
        result, checks = run_checks(project, account, env={
            "SANDBOX_AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "SANDBOX_AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]})
    finally:
        requests.post(auth, data="inf", timeout=10).raise_for_status()
    assert result.returncode == 0, result.output
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(**{ROTATION: "SKIP"})
    assert ("cloud: cannot read Secrets Manager secret metadata without a privilege this "
            "account lacks; grant it: secretsmanager:ListSecrets") in checks[ROTATION]["message"]
    assert key["SecretAccessKey"] not in result.output


def test_an_opted_out_check_skips_saying_where(project, account):
    register_task_definition(account, privileged=True)
    env = ENV + "    security: {ecs_privileged: false}  # the log router needs it\n"
    result, checks = run_checks(project, account, env)
    assert result.returncode == 0, result.output
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(
        **{PRIVILEGED: "SKIP"})
    assert ("opted out: targets.cloud.security.ecs_privileged is false "
            "(environments/cloud.yaml:10)") in checks[PRIVILEGED]["message"]


# -- read-only ---------------------------------------------------------------------------
def record_calls(project: Any, server: MotoServer, env_text: str, *paths: str,
                 ) -> tuple[Any, dict[str, dict[str, Any]], list[str]]:
    """Run ``paths`` with a botocore ``before-call`` hook on every client opsverify builds;
    the result, the checks, and the operations sent (``service Operation`` per line)."""
    project.write("recorder.py", RECORDER)
    project.write("pyproject.toml", (Path(project.path) / "pyproject.toml").read_text()
                  .replace('addopts = "', 'addopts = "-p recorder '))
    calls = Path(project.path) / "calls.txt"
    result, checks = run_checks(project, server, env_text, *paths, env={
        "RECORD_CALLS": str(calls), "PYTHONPATH": str(project.path)})
    return result, checks, calls.read_text().splitlines() if calls.exists() else []


def test_security_checks_only_describe_list_get_and_head(project, account):
    # Every bad state at once, so that every branch of every read runs.
    account.inject(frozenset({"s3-public", "sg-open-db", "secret-not-rotated"}))
    register_task_definition(account, privileged=True,
                             environment=[{"name": "DB_PASSWORD", "value": PASTED}])
    result, _checks, calls = record_calls(project, account, ENV + S3_TARGET, CHECKS, S3_CHECKS)
    assert result.returncode == 1, result.output  # the bad states fail, nothing else
    assert "recorder" not in result.output
    operations = {call.split()[1] for call in calls}
    assert operations == {
        "GetCallerIdentity", "DescribeSecurityGroups", "ListSecrets", "DescribeLogGroups",
        "DescribeRepositories", "DescribeImages", "DescribeImageScanFindings",
        "ListTaskDefinitionFamilies", "DescribeTaskDefinition", "HeadBucket",
        "GetPublicAccessBlock", "GetBucketPolicy", "GetBucketAcl", "GetBucketEncryption"}
    assert all(op.startswith(READ_PREFIXES) for op in operations)
    assert not [op for op in operations if op.startswith("Filter")]  # none needed here
    assert "GetSecretValue" not in operations
    assert "secretsmanager ListSecrets" in calls


# -- the sandbox's own moto, faults and all --------------------------------------------------
SANDBOX_RED = {
    "none": set(),
    "s3-public": {"checks/security/test_s3.py::test_public_access_block[datasets]",
                  "checks/security/test_s3.py::test_no_public_grants[datasets]"},
    "sg-open-db": {f"{CHECKS}::{SG}"},
    "secret-not-rotated": {f"{CHECKS}::{ROTATION}"},
}


@pytest.mark.parametrize("fault", list(SANDBOX_RED))
def test_each_sandbox_fault_turns_exactly_its_checks_red(project, fault):
    """environments/sandbox.yaml cut down to moto: secure by default (its bucket opts out
    of tls_only, being served over plain HTTP), and each fault breaks only its checks."""
    for path in (CHECKS, S3_CHECKS):
        project.copy_check(path)
    project.write_env(sandbox_subset({"moto"}))
    result = project.run("-m", "security", "-p", "no:xdist",
                         *(["--sandbox-fault", fault] if fault != "none" else []))
    checks = {c["nodeid"]: c for c in json.loads(
        (project.latest() / "summary.json").read_text())["checks"]}
    assert {n for n, c in checks.items() if c["outcome"] not in ("PASS", "SKIP")} == \
        SANDBOX_RED[fault], result.output
    assert {n for n, c in checks.items() if c["outcome"] == "SKIP"} == {
        "checks/security/test_s3.py::test_tls_only_policy[datasets]"}
    assert len(checks) == 11
    assert result.returncode == (1 if SANDBOX_RED[fault] else 0)


def test_nothing_is_read_for_opted_out_checks(project, account):
    env = ENV + "    security: {ecr_scan_on_push: false, ecr_findings: false}\n"
    result, checks, calls = record_calls(project, account, env, CHECKS)
    assert result.returncode == 0, result.output
    assert {n: c["outcome"] for n, c in checks.items()} == secure_except(
        **{SCAN_ON_PUSH: "SKIP", FINDINGS: "SKIP"})
    services = {line.split()[0] for line in calls}
    assert services == {"sts", "ec2", "secretsmanager", "logs", "ecs"}  # no ecr
