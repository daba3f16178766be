"""checks/capacity/test_s3.py against a real moto server: the bucket's size and object count
against its declared ``capacity:`` (PASS under it, WARN and FAIL over it), a bucket that
declares none is not judged, a missing bucket fails, a listing cut at its bound is a lower
bound (a SKIP, unless even that crosses the limit), the days-until-full trend from a seeded
history, and the sandbox's ``datasets`` bucket within its declared limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.moto import OBJECTS, MotoServer
from opsverify.sandbox.spec import MotoComponent
from opsverify.targets.s3 import S3Client, S3Target
from opsverify.targets.s3_capacity import bucket_usage
from tests.conftest import Project, Result, outcomes, running, sandbox_subset

SECRET = "moto-s3-capacity-8e2f41"
CHECK = "checks/capacity/test_s3.py"
BUCKET = "gogooku3-data"
SIZE, COUNT, TREND = "test_bucket_size[datasets]", "test_object_count[datasets]", \
    "test_bucket_trend[datasets]"
SEEDED_BYTES = sum(len(f"{key}\n") for key in OBJECTS)  # opsverify/sandbox/moto.py's objects

TARGET = """
settings: {timeout_s: 3}
targets:
  datasets:
    type: s3
    endpoint_url: ${SANDBOX_AWS_ENDPOINT}
    region: eu-west-1
    bucket: %(bucket)s
    access_key_id: ${SANDBOX_AWS_ACCESS_KEY_ID}
    secret_access_key: ${SANDBOX_AWS_SECRET_ACCESS_KEY}
"""


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One real moto server for the module, seeded like the sandbox's."""
    ctx = SandboxContext(tmp_path_factory.mktemp("moto"), SECRET, frozenset())
    yield from running(MotoServer(MotoComponent(bucket=BUCKET), ctx))


@pytest.fixture
def store(moto: MotoServer) -> MotoServer:
    moto.reset()
    return moto


def env(capacity: str | None = None, bucket: str = BUCKET) -> str:
    text = TARGET % {"bucket": bucket}
    return text + (f"    capacity: {capacity}\n" if capacity else "")


def run(project: Project, server: MotoServer, env_text: str, *args: str,
        ) -> tuple[Result, dict[str, dict[str, Any]]]:
    project.copy_check(CHECK)
    return project.run_checks("store", env_text, *args, env=server.variables())


def measured(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"]}


def client(server: MotoServer, timeout_s: float = 5.0) -> S3Client:
    variables = server.variables()
    spec = S3Target.model_validate({
        "type": "s3", "bucket": BUCKET, "region": "eu-west-1", "endpoint_url": server.endpoint,
        "access_key_id": variables["SANDBOX_AWS_ACCESS_KEY_ID"],
        "secret_access_key": variables["SANDBOX_AWS_SECRET_ACCESS_KEY"]})
    return S3Client("datasets", spec, timeout_s)


# -- the schema and the listing --------------------------------------------------------------
def test_schema() -> None:
    base = {"type": "s3", "bucket": BUCKET}
    spec = S3Target.model_validate({**base, "capacity": {"max_bytes": 1024}})
    assert spec.capacity is not None
    assert (spec.capacity.max_bytes, spec.capacity.max_objects) == (1024, None)
    assert S3Target.model_validate(base).capacity is None
    with pytest.raises(ValidationError, match="give max_bytes, max_objects or both"):
        S3Target.model_validate({**base, "capacity": {}})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        S3Target.model_validate({**base, "capacity": {"max_objects": 0}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        S3Target.model_validate({**base, "capacity": {"max_size": 1}})


def test_listing_sums_every_page(store: MotoServer) -> None:
    s3 = client(store)
    whole = bucket_usage(s3)
    assert (whole.bytes, whole.objects, whole.pages, whole.truncated) == (
        SEEDED_BYTES, len(OBJECTS), 1, "")
    paged = bucket_usage(s3, page_size=2)
    assert (paged.bytes, paged.objects, paged.pages, paged.complete) == (
        SEEDED_BYTES, len(OBJECTS), 4, True)
    cut = bucket_usage(s3, page_size=2, cap=3)
    assert (cut.objects, cut.pages, cut.complete) == (4, 2, False)
    assert cut.truncated == "listing stopped after 2 pages (4 objects; the bound is 3)"
    assert cut.bytes < SEEDED_BYTES
    s3.close()


# -- the checks -------------------------------------------------------------------------------
def test_within_its_limits_passes(project: Project, store: MotoServer) -> None:
    result, checks = run(project, store, env("{max_bytes: 1048576, max_objects: 1000}"))
    assert outcomes(checks) == {SIZE: "PASS", COUNT: "PASS", TREND: "SKIP"}, result.output
    size = measured(checks[SIZE])
    assert size["s3.bucket_used_pct"] == round(100 * SEEDED_BYTES / 1048576, 2)
    assert size["s3.bucket_bytes"] == SEEDED_BYTES
    assert size["size"] == f"{SEEDED_BYTES} B in {len(OBJECTS)} objects"
    assert size["max_bytes"].startswith("1.0 MiB (environments/store.yaml:")
    assert measured(checks[COUNT])["s3.objects_used_pct"] == 100 * len(OBJECTS) / 1000
    assert checks[TREND]["message"].startswith("insufficient history: 1 samples")
    assert SECRET not in result.output


def test_over_its_limits_fails(project: Project, store: MotoServer) -> None:
    store.client("s3").put_object(Bucket=BUCKET, Key="datasets/prices/2025-03.parquet",
                                  Body=b"\0" * 1024 * 1024)
    result, checks = run(project, store, env("{max_bytes: 1048576, max_objects: 9}"))
    assert result.returncode == 1
    # 8 objects of 9: 88.9 %, past warn (80), short of crit (90).
    assert outcomes(checks) == {SIZE: "FAIL", COUNT: "WARN", TREND: "SKIP"}, result.output
    size = next(m for m in checks[SIZE]["evidence"] if m["name"] == "s3.bucket_used_pct")
    assert (size["verdict"], size["expected"]) == ("FAIL", "≤ 90 %")
    assert size["value"] == round(100 * (SEEDED_BYTES + 1024 * 1024) / 1048576, 2)
    assert measured(checks[COUNT])["s3.objects_used_pct"] == round(100 * 8 / 9, 2)
    assert "FAIL  checks/capacity/test_s3.py::test_bucket_size[datasets]: datasets: " \
           "s3.bucket_used_pct = 100.0 %, expected ≤ 90 %" in result.stdout


def test_without_declared_limits_nothing_is_judged(project: Project, store: MotoServer) -> None:
    result, checks = run(project, store, env())
    assert outcomes(checks) == {"test_bucket_size[no-s3-target]": "SKIP",
                                "test_object_count[no-s3-target]": "SKIP",
                                "test_bucket_trend[no-s3-target]": "SKIP"}, result.output
    assert checks["test_bucket_size[no-s3-target]"]["message"] == (
        "no s3 target declares max_bytes in environment 'store': this check has nothing to "
        "run against")
    # Only one limit declared: only its check.
    result, checks = run(project, store, env("{max_objects: 100}"))
    assert outcomes(checks) == {"test_bucket_size[no-s3-target]": "SKIP", COUNT: "PASS",
                                "test_bucket_trend[no-s3-target]": "SKIP"}, result.output


def test_a_missing_bucket_fails(project: Project, store: MotoServer) -> None:
    result, checks = run(project, store, env("{max_bytes: 1048576}", bucket="no-such-bucket"))
    assert outcomes(checks) == {SIZE: "FAIL", "test_object_count[no-s3-target]": "SKIP",
                                TREND: "SKIP"}, result.output
    assert checks[TREND]["message"] == ("ListObjectsV2 answered NoSuchBucket: no reading to "
                                        "add to the trend")
    assert measured(checks[SIZE])["ListObjectsV2"] == "NoSuchBucket"


LOW_BOUND = """
import opsverify.targets.s3_capacity as capacity

capacity.LISTING_CAP, capacity.PAGE_SIZE = 3, 2  # a bucket of 7 objects is "too big"
"""


def test_a_cut_listing_is_a_lower_bound(project: Project, store: MotoServer) -> None:
    project.write("checks/capacity/conftest.py", LOW_BOUND)
    result, checks = run(project, store, env("{max_bytes: 1048576, max_objects: 4}"))
    # 4 objects listed of 4 allowed: at least 100 %, a FAIL for sure; the size's lower
    # bound is far below its limit: that says nothing, a SKIP.
    assert outcomes(checks) == {SIZE: "SKIP", COUNT: "FAIL", TREND: "SKIP"}, result.output
    assert checks[SIZE]["message"].startswith(
        "listing stopped after 2 pages (4 objects; the bound is 3): at least ")
    assert checks[SIZE]["message"].endswith(
        " % used, a lower bound that cannot show the bucket is within its limit")
    assert measured(checks[COUNT])["lower bound"].startswith(
        "listing stopped after 2 pages (4 objects; the bound is 3): the bucket holds more")
    assert checks[TREND]["message"].endswith(": a lower bound gives no trend")


def seed(project: Project, values: list[float]) -> None:
    now = datetime.now(UTC)
    path = project.path / "reports" / "store" / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({
        "time": (now - timedelta(days=len(values) - i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "target": "datasets", "metric": "s3.bucket_used_pct", "item": "", "value": v,
        "unit": "%", "capacity": 100}) + "\n" for i, v in enumerate(values)))


def test_bucket_trend(project: Project, store: MotoServer) -> None:
    # Declared so that the bucket is at 70 % today: growing 5 %/day, full in 6 days.
    max_bytes = round(SEEDED_BYTES * 100 / 70)
    today = round(100 * SEEDED_BYTES / max_bytes, 2)
    seed(project, [today - 5 * k for k in range(13, 0, -1)])
    result, checks = run(project, store, env(f"{{max_bytes: {max_bytes}}}"), "-k", "trend")
    assert outcomes(checks) == {TREND: "FAIL"}, result.output
    trend = measured(checks[TREND])
    assert abs(trend["s3.bucket.days_left"] - (100 - today) / 5) < 0.2
    assert trend["trend"].endswith("+5.0 %/day, 14 samples over 13 days")

    seed(project, [today] * 13)
    result, checks = run(project, store, env(f"{{max_bytes: {max_bytes}}}"), "-k", "trend")
    assert outcomes(checks) == {TREND: "PASS"}, result.output
    assert measured(checks[TREND])["s3.bucket.days_left"] == "no growth"


def test_sandbox_bucket_is_within_its_declared_limits(project: Project) -> None:
    project.copy_check(CHECK)
    data = sandbox_subset({"moto"})
    assert data["targets"]["datasets"]["capacity"] == {"max_bytes": 1073741824,
                                                       "max_objects": 100000}
    project.write_env(data)
    result = project.run("-m", "daily", timeout=180)
    assert outcomes(project.checks()) == {SIZE: "PASS", COUNT: "PASS", TREND: "SKIP"}, \
        result.output
