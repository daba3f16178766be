"""The ``s3`` target type against a real moto server (the S3 API, as MinIO speaks it): each
check PASSes on the seeded gogooku3 bucket and FAILs for the right reason when the bucket
or a declared prefix is gone; a hung endpoint is one ERROR within its deadline."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from opsverify.errors import TargetUnavailable, WriteRefused
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.moto import MotoServer
from opsverify.sandbox.spec import MotoComponent
from opsverify.targets.s3 import S3Client, S3Target
from tests.conftest import outcomes, running

SECRET = "moto-s3-secret-4b7e0a"
CHECKS = "checks/health/test_s3.py"
BUCKET = "gogooku3-data"
REACHABLE = "test_bucket_reachable[datasets]"
LISTABLE = "test_bucket_listable[datasets]"
BACKUPS = "test_prefix_present[datasets:backups/]"
DATASETS = "test_prefix_present[datasets:datasets/]"

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
    expect_prefixes: [backups/, datasets/]
"""


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One real moto server for the module, seeded like the sandbox's."""
    ctx = SandboxContext(tmp_path_factory.mktemp("moto"), SECRET, frozenset())
    server = MotoServer(MotoComponent(bucket=BUCKET), ctx)
    yield from running(server)


@pytest.fixture
def store(moto: MotoServer) -> MotoServer:
    """The moto server, reset to the seeded bucket."""
    moto.reset()
    return moto


def run_checks(project: Any, server: MotoServer,
               env_text: str = ENV) -> tuple[Any, dict[str, dict[str, Any]]]:
    project.copy_checks()
    project.write("environments/store.yaml", env_text)
    result = project.run(CHECKS, "--env", "store", env=server.variables())
    return result, project.checks("store")


def evidence(check: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in check["evidence"] if e["name"] == name)



def client(server: MotoServer, timeout_s: float = 3.0, **extra: Any) -> S3Client:
    spec = S3Target(type="s3", region="eu-west-1", bucket=BUCKET, endpoint_url=server.endpoint,
                    access_key_id="AKIAOPSVERIFYSANDBOX", secret_access_key=SECRET, **extra)
    return S3Client("datasets", spec, timeout_s)


def test_seeded_bucket_passes_every_check(project, store):
    result, checks = run_checks(project, store)
    assert result.returncode == 0, result.output
    assert set(outcomes(checks).values()) == {"PASS"}
    assert len(checks) == 4
    assert evidence(checks[REACHABLE], "HeadBucket status")["value"] == 200
    assert evidence(checks[LISTABLE], "objects sampled")["value"] == 7
    assert evidence(checks[BACKUPS], "objects under backups/")["value"] == 1  # max_keys=1
    assert SECRET not in result.output
    run = project.latest("store")
    assert not any(SECRET in p.read_text(errors="replace") for p in run.rglob("*")
                   if p.is_file())


def test_missing_prefix_fails_only_its_check(project, store):
    store.inject(frozenset({"s3-prefix-missing"}))
    result, checks = run_checks(project, store)
    assert result.returncode == 1
    assert outcomes(checks) == {REACHABLE: "PASS", LISTABLE: "PASS", BACKUPS: "PASS",
                                DATASETS: "FAIL"}
    found = evidence(checks[DATASETS], "objects under datasets/")
    assert (found["value"], found["expected"]) == (0, "≥ 1 objects")
    assert "environments/store.yaml:" in found["source"]
    assert "datasets: objects under datasets/ = 0 objects, expected ≥ 1 objects" in result.stdout


def test_missing_bucket_fails_reachable_and_listable(project, store):
    result, checks = run_checks(project, store, ENV.replace("bucket: gogooku3-data",
                                                            "bucket: gogooku3-archive"))
    assert result.returncode == 1
    assert set(outcomes(checks).values()) == {"FAIL"}
    assert evidence(checks[REACHABLE], "HeadBucket status")["value"] == 404
    assert evidence(checks[LISTABLE], "ListObjectsV2")["value"] == "NoSuchBucket"
    assert evidence(checks[DATASETS], "ListObjectsV2")["value"] == "NoSuchBucket"


def test_hung_endpoint_is_one_error_within_the_deadline(project, hung_server):
    spec = S3Target(type="s3", bucket=BUCKET, endpoint_url=f"http://127.0.0.1:{hung_server.port}",
                    access_key_id="AKIAOPSVERIFYSANDBOX", secret_access_key=SECRET)
    client = S3Client("datasets", spec, 1.0)
    started = time.monotonic()  # the deadline is the call's: building a client is local work
    with pytest.raises(TargetUnavailable) as caught:
        client.head_bucket()
    assert time.monotonic() - started < 1.0 + 1  # timeout_s + 1 s
    # The socket's read timeout, or the watchdog's if the machine is too slow to tell.
    assert re.fullmatch(rf"datasets \(s3://{BUCKET} us-east-1 via 127\.0\.0\.1:"
                        rf"{hung_server.port}\): (HeadBucket: no complete answer|no answer) "
                        r"within 1 s", str(caught.value)), caught.value
    project.copy_checks()
    project.write("environments/store.yaml", ENV.replace("timeout_s: 3", "timeout_s: 1"))
    result = project.run(CHECKS, "--env", "store", env={
        "SANDBOX_AWS_ENDPOINT": f"http://127.0.0.1:{hung_server.port}",
        "SANDBOX_AWS_ACCESS_KEY_ID": "AKIAOPSVERIFYSANDBOX",
        "SANDBOX_AWS_SECRET_ACCESS_KEY": SECRET})
    assert result.returncode == 1
    assert result.stdout.count("answer within 1 s") >= 4
    assert "Traceback" not in result.output
    assert SECRET not in result.output


def test_the_client_refuses_writes_before_sending(store):
    s3 = client(store)
    with pytest.raises(WriteRefused, match="refusing AWS PutObject"):
        s3.api.client("s3").put_object(Bucket=BUCKET, Key="datasets/evil", Body=b"x")
    with pytest.raises(WriteRefused, match="DeleteObject"):
        s3.api.client("s3").delete_object(Bucket=BUCKET, Key="backups/latest.tar.gz")
    assert s3.list_objects().count == 7  # nothing was written or deleted
    assert "datasets/evil" not in s3.list_objects("datasets/").sample


def test_listing_samples_at_most_list_sample_keys(store):
    listing = client(store).list_objects(max_keys=2)
    assert (listing.count, listing.truncated) == (2, True)
    assert listing.sample == ("backups/data_20250107.tar.gz", "backups/data_20250108.tar.gz")
