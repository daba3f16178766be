"""checks/security/test_s3.py against a real moto server: the sandbox's bucket (public
access blocked, encrypted) with a TLS-only policy passes every check, and each bad state a bucket
can be in turns exactly its check red: public (the ``s3-public`` fault), a public ACL, no
default encryption, no TLS-only policy (a WARN, or a FAIL where the environment says so).
An opted-out check is a SKIP that says where, and nothing is read for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.moto import MotoServer
from opsverify.sandbox.spec import MotoComponent
from tests.conftest import outcomes, running

SECRET = "moto-s3-security-5d1c9a"
CHECKS = "checks/security/test_s3.py"
BUCKET = "gogooku3-data"
BLOCK = "test_public_access_block[datasets]"
GRANTS = "test_no_public_grants[datasets]"
ENCRYPTION = "test_default_encryption[datasets]"
TLS = "test_tls_only_policy[datasets]"

ENV = """
settings: {timeout_s: 3}
targets:
  datasets:
    type: s3
    endpoint_url: ${SANDBOX_AWS_ENDPOINT}
    region: eu-west-1
    bucket: gogooku3-data
    access_key_id: ${SANDBOX_AWS_ACCESS_KEY_ID}
    secret_access_key: ${SANDBOX_AWS_SECRET_ACCESS_KEY}
"""


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One real moto server for the module, seeded like the sandbox's."""
    ctx = SandboxContext(tmp_path_factory.mktemp("moto"), SECRET, frozenset())
    yield from running(MotoServer(MotoComponent(bucket=BUCKET), ctx))


TLS_ONLY = {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
            "Action": "s3:*", "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


@pytest.fixture
def store(moto: MotoServer) -> MotoServer:
    """The moto server, reset to the seeded bucket (public access blocked, encrypted) with
    a TLS-only policy, which the sandbox cannot have: its endpoint is plain HTTP, and moto
    denies every object request under it (opsverify/sandbox/moto.py)."""
    moto.reset()
    moto.client("s3").put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [TLS_ONLY]}))
    return moto


def run_checks(project: Any, server: MotoServer, env_text: str = ENV,
               ) -> tuple[Any, dict[str, dict[str, Any]]]:
    project.copy_check(CHECKS)
    return project.run_checks("store", env_text, CHECKS, env=server.variables())


def evidence(check: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in check["evidence"] if e["name"] == name)


def listed(check: dict[str, Any], name: str) -> str:
    """A list-valued measurement, as summary.json shows it (its repr)."""
    return str(evidence(check, name)["value"])



def secure_except(**bad: str) -> dict[str, str]:
    return {BLOCK: "PASS", GRANTS: "PASS", ENCRYPTION: "PASS", TLS: "PASS", **{
        {"block": BLOCK, "grants": GRANTS, "encryption": ENCRYPTION, "tls": TLS}[k]: v
        for k, v in bad.items()}}


# -- PASS ----------------------------------------------------------------------------------
def test_secure_bucket_passes_every_check(project, store):
    result, checks = run_checks(project, store)
    assert result.returncode == 0, result.output
    assert outcomes(checks) == secure_except()
    assert listed(checks[BLOCK], "public access block flags off") == str([])
    assert evidence(checks[BLOCK], "bucket level")["value"] == (
        "BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy, RestrictPublicBuckets")
    assert evidence(checks[GRANTS], "policy statements")["value"] == 1
    assert evidence(checks[ENCRYPTION], "algorithm")["value"] == "AES256"
    tls = evidence(checks[TLS], "s3.tls_deny_statements")
    assert (tls["value"], tls["verdict"]) == (1, "PASS")
    assert SECRET not in result.output


def test_a_public_statement_confined_to_a_vpc_endpoint_is_not_public(project, store):
    policy = json.loads(store.client("s3").get_bucket_policy(Bucket=BUCKET)["Policy"])
    policy["Statement"].append({
        "Sid": "ReadFromTheVpc", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{BUCKET}/*",
        "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-0a1b2c3d"}}})
    store.client("s3").put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    result, checks = run_checks(project, store)
    assert outcomes(checks) == secure_except(), result.output
    assert evidence(checks[GRANTS], "policy statements")["value"] == 2


# -- FAIL / WARN, one bad state each ---------------------------------------------------------
def test_public_bucket_fails_the_block_and_the_grants(project, store):
    store.inject(frozenset({"s3-public"}))
    result, checks = run_checks(project, store)
    assert result.returncode == 1
    assert outcomes(checks) == secure_except(block="FAIL", grants="FAIL"), result.output
    assert listed(checks[BLOCK], "public access block flags off") == str([
        "BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"])
    assert evidence(checks[BLOCK], "bucket level")["value"] == "none"
    assert "not read" in evidence(checks[BLOCK], "account level")["value"]
    assert listed(checks[GRANTS], "policy statements allowing *") == str([
        "PublicRead: Allow s3:GetObject to *"])
    assert listed(checks[GRANTS], "ACL grants to everyone") == str([])


def test_public_read_acl_fails_the_grants(project, store):
    s3 = store.client("s3")
    s3.delete_public_access_block(Bucket=BUCKET)  # AWS refuses a public ACL behind the block
    s3.put_bucket_acl(Bucket=BUCKET, ACL="public-read")
    result, checks = run_checks(project, store)
    assert outcomes(checks) == secure_except(block="FAIL", grants="FAIL"), result.output
    assert listed(checks[GRANTS], "ACL grants to everyone") == str(["AllUsers: READ"])
    assert listed(checks[GRANTS], "policy statements allowing *") == str([])
    assert "ACL grants to everyone = ['AllUsers: READ']" in result.stdout


def test_partial_block_fails_naming_the_flags_off(project, store):
    store.client("s3").put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False})
    result, checks = run_checks(project, store)
    assert outcomes(checks) == secure_except(block="FAIL"), result.output
    assert listed(checks[BLOCK], "public access block flags off") == str([
        "BlockPublicPolicy", "RestrictPublicBuckets"])


def test_unencrypted_bucket_fails_default_encryption(project, store):
    store.client("s3").delete_bucket_encryption(Bucket=BUCKET)
    result, checks = run_checks(project, store)
    assert result.returncode == 1
    assert outcomes(checks) == secure_except(encryption="FAIL"), result.output
    rules = evidence(checks[ENCRYPTION], "default encryption rules")
    assert (rules["value"], rules["expected"]) == (0, "≥ 1 rules")


def test_missing_tls_only_policy_warns(project, store):
    store.client("s3").delete_bucket_policy(Bucket=BUCKET)
    result, checks = run_checks(project, store)
    assert result.returncode == 0, result.output  # a warning, not a failure
    assert outcomes(checks) == secure_except(tls="WARN")
    tls = evidence(checks[TLS], "s3.tls_deny_statements")
    assert (tls["value"], tls["expected"], tls["verdict"]) == (0, "≥ 1 statements", "WARN")
    assert tls["source"] == "warn from check default"


def test_missing_tls_only_policy_fails_where_the_environment_requires_it(project, store):
    store.client("s3").delete_bucket_policy(Bucket=BUCKET)
    env = ENV + "    thresholds: {s3.tls_deny_statements: {crit: 1}}\n"
    result, checks = run_checks(project, store, env)
    assert result.returncode == 1
    assert outcomes(checks) == secure_except(tls="FAIL"), result.output
    assert "crit from environments/store.yaml:" in evidence(
        checks[TLS], "s3.tls_deny_statements")["source"]


def test_the_sandbox_bucket_without_a_tls_only_policy_warns(project, moto):
    moto.reset()  # as seeded for the sandbox, whose target opts out of tls_only
    result, checks = run_checks(project, moto)
    assert outcomes(checks) == secure_except(tls="WARN"), result.output


def test_an_allow_only_over_tls_is_not_a_deny(project, store):
    """A statement that allows over TLS does not refuse plain HTTP: still a WARN."""
    store.client("s3").put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
            "Action": "s3:*", "Resource": f"arn:aws:s3:::{BUCKET}/*",
            "Condition": {"Bool": {"aws:SecureTransport": "true"}}}]}))
    result, checks = run_checks(project, store)
    assert outcomes(checks) == secure_except(tls="WARN"), result.output


# -- opt-out ---------------------------------------------------------------------------------
def test_opted_out_checks_skip_saying_where(project, store):
    store.inject(frozenset({"s3-public"}))
    env = ENV + "    security: {public_access_block: false, no_public_grants: false}\n"
    result, checks = run_checks(project, store, env)
    assert result.returncode == 0, result.output
    assert outcomes(checks) == secure_except(block="SKIP", grants="SKIP")
    line = next(n for n, text in enumerate(env.splitlines(), 1) if "security:" in text)
    assert (f"opted out: targets.datasets.security.public_access_block is false "
            f"(environments/store.yaml:{line})") in checks[BLOCK]["message"]
    assert "targets.datasets.security.no_public_grants is false" in checks[GRANTS]["message"]
