"""Backup retention (``remediation: {retention: {keep_last, keep_days}}``) against real
servers: a local directory (``file://``), the sandbox's sshd (``ssh://``) and the moto server
(``s3://``, a versioned bucket). Every check of what changed reads the place itself, not the
action's word: ``os.listdir`` (the ssh directory is on this machine) and
ListObjectVersions with the test's own client.

Then the real sandbox with ``--sandbox-fault retention-exceeded``: the three opt-ins,
``--plan`` changing nothing, apply deleting exactly the planned dumps and their sidecars
with the daily backup checks green afterwards, ``--max-actions`` refusing the plan whole,
and a dump that cannot be deleted (immutable) stopping the action with exit 1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.backup.deleters import Deleter, Stored, deleter_for
from opsverify.backup.locations import S3Location
from opsverify.errors import BlastRadiusExceeded, WriteRefused
from opsverify.remediation import Remediation
from opsverify.remediation.backup import Retention, RetentionSettings, to_delete
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.moto import ACCESS_KEY_ID, MotoServer
from opsverify.sandbox.spec import MotoComponent, SshdComponent
from opsverify.sandbox.sshd import SshServer
from opsverify.targets.backup import BackupFile, BackupTarget
from tests.conftest import Project, Result, running, sandbox_subset

PASSWORD = "retention-test-pw-81c3"  # a test value that must never be shown
REGION = "eu-west-1"
NOW = datetime.now(UTC).replace(microsecond=0)
needs_sshd = pytest.mark.skipif(
    not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) or not shutil.which("ssh"),
    reason="sshd or ssh not found (apt-get install openssh-server openssh-client)")


# -- the policy, on its own --------------------------------------------------------------------
def listing(*days_before_newest: float) -> list[Stored]:
    newest = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    return [Stored(BackupFile(f"b{i:02d}", 100, newest - timedelta(days=d)), f"t{i}")
            for i, d in enumerate(days_before_newest)]


@pytest.mark.parametrize(("keep_last", "keep_days", "keep_min", "kept"), [
    (3, 0, 1, 3),     # the newest three
    (1, 2, 1, 3),     # within 2 days of the newest: 0, 1 and 2 days before it
    (1, 0, 4, 4),     # keep_min is the floor
    (2, 5.5, 1, 6),   # the longer of the two runs
    (20, 0, 1, 8),    # more than there are: nothing deleted
])
def test_the_policy_keeps_a_run_from_the_newest(keep_last: int, keep_days: float,
                                                 keep_min: int, kept: int) -> None:
    found = listing(0, 1, 2, 3, 4, 5, 6, 7)
    doomed = to_delete(found, RetentionSettings(keep_last=keep_last, keep_days=keep_days),
                       keep_min)
    assert [s.file.name for s in doomed] == [s.file.name for s in found[kept:]]


def test_a_stopped_job_does_not_turn_retention_into_delete_everything() -> None:
    """keep_days counts from the newest backup, not from now: backups that stopped a month
    ago keep the last week before they stopped."""
    month_old = [Stored(BackupFile(s.file.name, 1, s.file.modified - timedelta(days=30)),
                        s.token) for s in listing(0, 1, 2, 3, 9, 10)]
    doomed = to_delete(month_old, RetentionSettings(keep_last=1, keep_days=7), 1)
    assert [s.file.name for s in doomed] == ["b04", "b05"]


def test_settings_are_both_required_and_bounded() -> None:
    with pytest.raises(ValueError, match="keep_days"):
        RetentionSettings.model_validate({"keep_last": 3})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        RetentionSettings.model_validate({"keep_last": 0, "keep_days": 1})
    spec = BackupTarget.model_validate({
        "type": "backup", "location": "file:///srv/backups", "format": "gzip",
        "max_age_hours": 26, "remediation": {"retention": {"keep_last": 7, "keep_days": 6}}})
    assert spec.remediation.retention == RetentionSettings(keep_last=7, keep_days=6)
    with pytest.raises(ValueError, match="Extra inputs"):
        BackupTarget.model_validate({
            "type": "backup", "location": "file:///srv/backups", "format": "gzip",
            "max_age_hours": 26, "remediation": {"retention": {"keep_last": 7, "keep_days": 6,
                                                               "older_than": 3}}})


# -- the three kinds of location, real --------------------------------------------------------
class Place:
    """Where a test's backups live, written and read with the test's own hands."""

    kind = ""
    spec: BackupTarget

    def put(self, name: str, content: bytes, days_ago: float) -> None:
        raise NotImplementedError

    def names(self) -> set[str]:
        """What is there, every S3 version included."""
        raise NotImplementedError

    def rewrite(self, name: str) -> None:
        self.put(name, b"rewritten after the plan, bigger than before", 0.5)

    def tick(self) -> None:
        """Between two nights."""

    def remove(self, name: str) -> None:
        raise NotImplementedError

    def lock(self, name: str) -> None:
        """Make deleting ``name`` fail for real."""
        raise NotImplementedError

    def unlock(self, name: str) -> None:
        raise NotImplementedError


class Directory(Place):
    """A directory on this machine: file:// reads it, and so does ssh:// through sshd."""

    def __init__(self, kind: str, path: Path, location: str, **keys: Any) -> None:
        self.kind = kind
        self.path = path
        self.spec = target(location=location, **keys)

    def put(self, name: str, content: bytes, days_ago: float) -> None:
        file = self.path / name
        file.write_bytes(content)
        stamp = (NOW - timedelta(days=days_ago)).timestamp()
        os.utime(file, (stamp, stamp))

    def names(self) -> set[str]:
        return set(os.listdir(self.path))

    def remove(self, name: str) -> None:
        (self.path / name).unlink()

    def lock(self, name: str) -> None:
        if subprocess.run(["chattr", "+i", str(self.path / name)],
                          capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not supported here (a file system without it, or no "
                        "CAP_LINUX_IMMUTABLE)")

    def unlock(self, name: str) -> None:
        subprocess.run(["chattr", "-i", str(self.path / name)], capture_output=True)


class Bucket(Place):
    """A prefix in a versioned bucket with object lock (so a legal hold can refuse a
    delete). S3 sets LastModified itself, in seconds: a night is a second here, and
    keep_days (0) keeps only what is as new as the newest."""

    kind = "s3"

    def __init__(self, moto: MotoServer, bucket: str) -> None:
        self.s3 = moto.client("s3")
        self.bucket = bucket
        self.s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True,
                              CreateBucketConfiguration={"LocationConstraint": REGION})
        self.spec = target(location=f"s3://{bucket}/backups/", endpoint_url=moto.endpoint,
                           region=REGION, access_key_id=ACCESS_KEY_ID,
                           secret_access_key=PASSWORD)

    def put(self, name: str, content: bytes, days_ago: float) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=f"backups/{name}", Body=content)

    def tick(self) -> None:
        time.sleep(1.05)

    def names(self) -> set[str]:
        reply = self.s3.list_object_versions(Bucket=self.bucket, Prefix="backups/")
        found = {v["Key"].removeprefix("backups/") for v in reply.get("Versions", [])}
        assert not reply.get("DeleteMarkers"), "a delete marker hides a version: not deleted"
        return found

    def remove(self, name: str) -> None:
        for version in self.s3.list_object_versions(
                Bucket=self.bucket, Prefix=f"backups/{name}").get("Versions", []):
            self.s3.delete_object(Bucket=self.bucket, Key=version["Key"],
                                  VersionId=version["VersionId"])

    def rewrite(self, name: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=f"backups/{name}", Body=b"a new version")

    def lock(self, name: str) -> None:
        self.s3.put_object_legal_hold(Bucket=self.bucket, Key=f"backups/{name}",
                                      LegalHold={"Status": "ON"})

    def unlock(self, name: str) -> None:
        self.s3.put_object_legal_hold(Bucket=self.bucket, Key=f"backups/{name}",
                                      LegalHold={"Status": "OFF"})


def target(**keys: Any) -> BackupTarget:
    return BackupTarget.model_validate({
        "type": "backup", "pattern": "full_*.dump.gz", "format": "gzip", "max_age_hours": 26,
        "keep_min": 2, "checksum": "sidecar", **keys})


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    workdir = tmp_path_factory.mktemp("sshd")
    os.chmod(workdir, 0o755)  # noqa: S103 - sshd's StrictModes walks the key's directories
    yield from running(SshServer(SshdComponent(), SandboxContext(workdir, PASSWORD,
                                                                 frozenset())))


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    ctx = SandboxContext(tmp_path_factory.mktemp("moto"), PASSWORD, frozenset())
    yield from running(MotoServer(MotoComponent(region=REGION), ctx))


BUCKETS = iter(range(1000))


@pytest.fixture(params=["file", pytest.param("ssh", marks=needs_sshd), "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """An empty backup location of each kind."""
    found: Place
    if request.param == "s3":
        found = Bucket(request.getfixturevalue("moto"), f"retention-{next(BUCKETS)}")
    else:
        directory = tmp_path / "backups"
        directory.mkdir()
        if request.param == "file":
            found = Directory("file", directory, f"file://{directory}")
        else:
            server: SshServer = request.getfixturevalue("sshd")
            found = Directory("ssh", directory, f"{server.url}{directory}",
                              ssh_identity_file=str(server.client_key),
                              known_hosts=str(server.known_hosts))
    yield found
    if isinstance(found, Directory):
        subprocess.run(["chattr", "-R", "-i", str(found.path)], capture_output=True)


def nightly(place: Place, nights: int) -> list[str]:
    """A dump a night with its sidecar, oldest written first; the names, newest first."""
    names = []
    for night in reversed(range(nights)):
        name = f"full_{(NOW - timedelta(days=night)):%Y%m%d}_0200.dump.gz"
        place.put(name, b"dump of night %d " % night * (night + 1), night + 0.1)
        place.put(name + ".sha256", b"%064x  " % night + name.encode() + b"\n", night + 0.1)
        names.insert(0, name)
        if night:
            place.tick()
    place.put("README", b"not a backup: never touched\n", 40)
    return names


def engine(tmp_path: Path, **kwargs: Any) -> Remediation:
    settings: dict[str, Any] = dict(
        env="test", operator="tester", check="test_retention", run_id="r1",
        audit_path=tmp_path / "audit.jsonl", max_actions=5, plan_only=False, environ={})
    settings.update(kwargs)
    return Remediation(**settings)


def audit(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def deleter(place: Place) -> Iterator[Deleter]:
    made = deleter_for("backups", place.spec, 10)
    made.check()
    yield made
    made.close()


def retention(deleter: Deleter, keep_last: int = 3) -> Retention:
    days = 0 if deleter.spec.scheme == "s3" else 1.5  # in S3, a night is a second
    return Retention(deleter, RetentionSettings(keep_last=keep_last, keep_days=days))


def sidecars(names: list[str]) -> set[str]:
    return {n for name in names for n in (name, name + ".sha256")}


def test_plan_lists_exactly_what_apply_deletes_and_apply_deletes_only_that(
        place: Place, deleter: Deleter, tmp_path: Path) -> None:
    names = nightly(place, 6)
    before = place.names()
    action = retention(deleter)
    fix = engine(tmp_path)
    plan = fix.plan(action, population=len(action.backups()))
    # The newest three are kept (keep_last 3; within 1.5 days: two); the oldest three go,
    # oldest first.
    planned = [re.search(r"full_\d{8}_0200\.dump\.gz", i.identity)[0]  # type: ignore[index]
               for i in plan.items]
    assert planned == names[:2:-1]
    assert place.names() == before, "planning changed the location"
    first = plan.items[0]
    assert first.identity.startswith(deleter.where(names[5]))
    assert re.search(r" \d+ bytes modified \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", first.identity)
    if place.kind == "s3":
        assert " version " in first.identity
    assert first.before.endswith(f", with its sidecar {names[5]}.sha256")
    assert re.match(r"\d+\.\d days old \(\d+\.\d days before the newest\), \d+ B,",
                    first.before), first.before

    outcome = fix.apply(action, plan)
    assert [after for _, after in outcome.applied] == [
        f"deleted, and its sidecar {n}.sha256" for n in names[:2:-1]]
    assert place.names() == before - sidecars(names[3:])
    assert "README" in place.names()
    # The re-check's reading: three kept, listed again from the location.
    assert [s.file.name for s in action.backups()] == names[:3]
    lines = audit(tmp_path)
    assert [e["result"] for e in lines] == ["applied"] * 3
    assert [e["identity"] for e in lines] == [i.identity for i in plan.items]
    for entry in lines:
        assert (entry["action"], entry["target"]) == ("retention", "backups")
        assert entry["plan_id"] == plan.plan_id
        assert entry["before"]
        assert entry["after"]
        assert PASSWORD not in json.dumps(entry)
    # Nothing left to do: the same action plans nothing now.
    assert fix.plan(action).items == ()


def test_a_drifted_backup_is_skipped_with_its_reason_and_nothing_new_is_picked_up(
        place: Place, deleter: Deleter, tmp_path: Path) -> None:
    names = nightly(place, 6)
    action = retention(deleter)
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert len(plan.items) == 3
    # Between plan and apply: one planned dump is rewritten, another deleted by someone
    # else, and an even older dump (outside the policy too) appears: it is not planned.
    place.rewrite(names[5])
    place.remove(names[4])
    place.put("full_20200101_0200.dump.gz", b"found late", 60)
    outcome = fix.apply(action, plan)
    skipped = dict((i.identity, why) for i, why in outcome.skipped)
    assert list(skipped) == [plan.items[0].identity, plan.items[1].identity]
    assert skipped[plan.items[0].identity].startswith("changed: ")
    assert skipped[plan.items[1].identity] == "gone (or no longer a regular file)"
    assert [i.identity for i, _ in outcome.applied] == [plan.items[2].identity]
    left = place.names()
    assert {names[5], names[5] + ".sha256", "full_20200101_0200.dump.gz"} <= left
    assert not {names[3], names[3] + ".sha256"} & left
    assert [e["result"].split(":")[0] for e in audit(tmp_path)] == ["skipped", "skipped",
                                                                     "applied"]


def test_the_floors_hold_when_newer_backups_vanish_between_plan_and_apply(
        place: Place, deleter: Deleter, tmp_path: Path) -> None:
    """Planned as old, but by the time it is its turn the newer backups are gone: it is
    the newest now (or among keep_min) and is kept."""
    names = nightly(place, 4)
    action = retention(deleter, keep_last=1)
    fix = engine(tmp_path)
    plan = fix.plan(action)
    assert len(plan.items) == 2  # the newest two are kept: keep_min
    for name in names[:2]:
        place.remove(name)
        place.remove(name + ".sha256")
    outcome = fix.apply(action, plan)
    # Two are left; keep_min is 2: both are kept, whatever the plan said.
    assert outcome.applied == []
    assert {why for _, why in outcome.skipped} == {
        "now among the backups to keep (the newest, keep_last, keep_days or keep_min)"}
    assert sidecars(names[2:]) <= place.names()


def test_a_plan_over_the_limit_is_refused_whole(place: Place, deleter: Deleter,
                                                tmp_path: Path) -> None:
    nightly(place, 6)
    before = place.names()
    action = retention(deleter, keep_last=2)
    with pytest.raises(BlastRadiusExceeded, match=r"^refused whole, nothing changed: plan "
                       r"[0-9a-f]{12} lists 4 items, over --max-actions=3: "):
        engine(tmp_path, max_actions=3).plan(action)
    with pytest.raises(BlastRadiusExceeded, match=r"lists 4 items, 67 % of 6, over "
                       r"--max-percent=50"):
        engine(tmp_path, max_percent=50).plan(action, population=len(action.backups()))
    assert place.names() == before
    assert audit(tmp_path) == []


def test_a_backup_that_cannot_be_deleted_stops_the_action_part_way(
        place: Place, deleter: Deleter, tmp_path: Path) -> None:
    names = nightly(place, 6)
    action = retention(deleter)
    fix = engine(tmp_path)
    plan = fix.plan(action)
    place.lock(names[4])  # immutable (chattr +i); in S3 a legal hold
    try:
        outcome = fix.apply(action, plan)
    finally:
        place.unlock(names[4])
    assert [i.identity for i, _ in outcome.applied] == [plan.items[0].identity]
    assert outcome.failed is not None
    assert outcome.failed[0] == plan.items[1]
    expected = {"file": f"cannot delete {names[4]}: Operation not permitted",
                "ssh": f"cannot delete {names[4]}: rm: cannot remove",
                "s3": f"cannot delete {names[4]}: DeleteObject refused: AccessDenied"}
    assert outcome.failed[1].startswith(expected[place.kind]), outcome.failed
    assert outcome.not_attempted == [plan.items[2]]
    report = outcome.report()
    assert report.startswith(f"applied 1 of 3 (plan {plan.plan_id}); applied: ")
    assert f"not attempted: {plan.items[2].identity}" in report
    left = place.names()
    assert not {names[5], names[5] + ".sha256"} & left
    assert sidecars(names[3:5]) <= left  # the failed one keeps its sidecar, the last both
    assert [e["result"].split(":")[0] for e in audit(tmp_path)] == [
        "applied", "failed", "not attempted"]


def test_a_symbolic_link_is_never_a_backup_to_delete(tmp_path: Path) -> None:
    directory = tmp_path / "backups"
    directory.mkdir()
    place = Directory("file", directory, f"file://{directory}")
    names = nightly(place, 4)
    outside = tmp_path / "elsewhere.dump.gz"
    outside.write_bytes(b"not in the backup directory")
    old = (NOW - timedelta(days=30)).timestamp()
    os.utime(outside, (old, old))
    (directory / "full_20200101_0200.dump.gz").symlink_to(outside)
    deleter = deleter_for("backups", place.spec, 10)
    plan = engine(tmp_path).plan(retention(deleter, keep_last=2))
    assert [i.identity.split()[0].rsplit("/", 1)[1] for i in plan.items] == names[:1:-1]
    assert outside.exists()


def test_the_readers_stay_read_only(moto: MotoServer) -> None:
    """The reader an ordinary backup check gets refuses a delete before it is sent."""
    bucket = Bucket(moto, "retention-read-only")
    bucket.put("full_20260101_0200.dump.gz", b"x", 0)
    reader = S3Location("backups", bucket.spec, 5)
    with pytest.raises(WriteRefused, match="refusing AWS DeleteObject from a non-destructive"):
        reader.api.call("s3", "delete_object", Bucket=bucket.bucket,
                        Key="backups/full_20260101_0200.dump.gz")
    assert bucket.names() == {"full_20260101_0200.dump.gz"}
    assert not hasattr(reader, "delete")


# -- the sandbox: retention-exceeded, as a user runs it -----------------------------------------
COMPONENTS = ("postgres", "sshd", "moto", "backups")
REMEDIATION = "checks/remediation/test_backup.py::test_retention"
PROBE = '''
"""Reads the backup locations with its own hands, before and after the remediation; after,
runs the stock daily backup checks in a run of their own against the same locations."""
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

BACKUPS = ("dumps", "erpfts-backups", "chroma-backups", "s3-dumps")


@pytest.mark.daily
def test_probe(env):
    when = os.path.basename(os.path.dirname(__file__))
    targets = env.model.targets
    seen = {"when": when}
    for name in ("dumps", "erpfts-backups"):
        seen[name] = sorted(os.listdir(targets[name].directory))
    s3 = targets["s3-dumps"]
    client = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name=s3.region,
                          aws_access_key_id=s3.access_key_id,
                          aws_secret_access_key=s3.secret_access_key)
    reply = client.list_object_versions(Bucket="gogooku3-data", Prefix=s3.directory)
    seen["s3-dumps"] = sorted(v["Key"] for v in reply.get("Versions", []))
    if os.environ.get("PROBE_LOCK"):  # the second-oldest dump: immutable while it runs
        dumps = sorted(n for n in seen["dumps"] if n.endswith(".dump.gz"))
        path = os.path.join(targets["dumps"].directory, dumps[1 if when == "probe_before" else 0])
        flag = "+i" if when == "probe_before" else "-i"
        subprocess.run(["chattr", flag, path], check=True)
    if when == "probe_zafter" and os.environ.get("PROBE_DAILY"):
        seen["daily"] = daily(env)
    with open(os.environ["PROBE_OUT"], "a") as out:
        out.write(json.dumps(seen) + "\\n")


def daily(env):
    """`pytest -m daily` of checks/backup/test_backup.py, now, against these locations."""
    names = (*BACKUPS, "scratch-db")
    data = {"description": "the sandbox's backups, after the remediation",
            "targets": {n: env.model.targets[n].model_dump(mode="json", exclude_defaults=True)
                        for n in names}}
    Path("environments/afterwards.yaml").write_text(yaml.safe_dump(data))
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST_", "OPSVERIFY_"))}
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:xdist",
                    "checks/backup/test_backup.py", "-m", "daily", "--env", "afterwards"],
                   env=environ, capture_output=True, timeout=100)
    summary = json.loads(Path("reports/afterwards/latest/summary.json").read_text())
    return {c["nodeid"].split("::", 1)[1]: c["outcome"] for c in summary["checks"]}
'''


@pytest.fixture
def sandbox_project(project: Project) -> Project:
    project.write_env(sandbox_subset(COMPONENTS))
    project.copy_check("checks/remediation/test_backup.py")
    project.copy_check("checks/backup/test_backup.py")
    project.write("checks/probe_before/test_probe.py", PROBE)
    project.write("checks/probe_zafter/test_probe.py", PROBE)
    return project


def run_retention(project: Project, *flags: str, **env: str,
                  ) -> tuple[Result, dict[str, dict[str, Any]]]:
    """The remediation between two probes, with retention-exceeded; what each probe saw."""
    out = project.path / "probe.jsonl"
    result = project.run(
        "checks/probe_before", "checks/remediation/test_backup.py", "checks/probe_zafter",
        "-m", "daily or destructive", "-p", "no:xdist", "--sandbox-fault",
        "retention-exceeded", *flags, timeout=240,
        env={"PROBE_OUT": str(out), "OPSVERIFY_SANDBOX_PASSWORD": PASSWORD, **env})
    seen = {}
    if out.exists():
        for line in out.read_text().splitlines():
            record = json.loads(line)
            seen[record.pop("when")] = record
    return result, seen


def dumps_of(seen: dict[str, Any]) -> list[str]:
    return [n for n in seen["dumps"] if n.endswith(".dump.gz")]


def test_collected_only_with_all_three_opt_ins(sandbox_project: Project) -> None:
    ids = [f"{REMEDIATION}[{t}]" for t in ("dumps", "erpfts-backups", "s3-dumps")]
    result = sandbox_project.run("-m", "destructive", "--allow-destructive=sandbox",
                                 "--collect-only", "-q")
    assert result.returncode == 0, result.output
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    # chroma-backups enables no retention: its check is not collected.
    assert sorted(c for c in collected if "remediation" in c) == sorted(ids)
    for flags in (["-m", "destructive"], ["--allow-destructive=sandbox"],
                  ["-m", "daily", "--allow-destructive=sandbox"]):
        result = sandbox_project.run("checks/remediation", *flags, "--collect-only", "-q")
        assert not any(i in result.stdout for i in ids), (flags, result.stdout)
    data = sandbox_subset(COMPONENTS)
    del data["targets"]["dumps"]["remediation"]
    sandbox_project.write_env(data)
    result = sandbox_project.run("-m", "destructive", "--allow-destructive=sandbox",
                                 "--collect-only", "-q")
    assert f"{REMEDIATION}[dumps]" not in result.stdout
    assert f"{REMEDIATION}[s3-dumps]" in result.stdout


def test_plan_lists_the_five_oldest_dumps_and_changes_nothing(sandbox_project: Project) -> None:
    result, seen = run_retention(sandbox_project, "--allow-destructive=sandbox", "--plan")
    assert result.returncode == 0, result.output
    before, after = seen["probe_before"], seen["probe_zafter"]
    assert len(dumps_of(before)) == 12
    assert after == before, "--plan changed a backup location"
    doomed = dumps_of(before)[:5]
    plan = [line for line in result.stdout.splitlines()
            if line.startswith(f"PLAN  {REMEDIATION}[dumps]: ")]
    assert [re.search(r"full_\d{8}_\d{4}\.dump\.gz", line)[0]  # type: ignore[index]
            for line in plan] == doomed, result.stdout
    assert all(re.search(r": dumps: retention file://\S+ \d+ bytes modified \S+Z \(\d+\.\d "
                         r"days old \(\d+\.\d days before the newest\), .*, with its sidecar "
                         r"full_\d{8}_\d{4}\.dump\.gz\.sha256\) \[plan [0-9a-f]{12}\]$", line)
               for line in plan), plan
    assert f"PLAN  {REMEDIATION}[s3-dumps]: nothing to change" in result.stdout
    assert not (sandbox_project.reports / "audit.jsonl").exists()
    assert PASSWORD not in result.output


def test_apply_deletes_the_planned_dumps_with_their_sidecars_and_the_daily_run_is_green(
        sandbox_project: Project) -> None:
    result, seen = run_retention(sandbox_project, "--allow-destructive=sandbox",
                                 PROBE_DAILY="1", GITHUB_ACTOR="octocat")
    assert result.returncode == 0, result.output
    before, after = seen["probe_before"], seen["probe_zafter"]
    doomed = dumps_of(before)[:5]
    assert set(before["dumps"]) - set(after["dumps"]) == sidecars(doomed)
    assert set(after["dumps"]) < set(before["dumps"])
    assert after["erpfts-backups"] == before["erpfts-backups"]
    assert after["s3-dumps"] == before["s3-dumps"]
    # A daily run afterwards, of the stock backup checks, in a run of its own: green.
    daily = after["daily"]
    assert daily["test_retention[dumps]"] == "PASS"
    assert set(daily.values()) == {"PASS"}, daily

    lines = [json.loads(line) for line in
             (sandbox_project.reports / "audit.jsonl").read_text().splitlines()]
    assert [re.search(r"full_\d{8}_\d{4}\.dump\.gz", e["identity"])[0]  # type: ignore[index]
            for e in lines] == doomed
    assert len({e["plan_id"] for e in lines}) == 1
    for entry in lines:
        assert (entry["env"], entry["target"], entry["action"]) == ("sandbox", "dumps",
                                                                    "retention")
        assert entry["result"] == "applied"
        assert entry["after"].startswith("deleted, and its sidecar full_")
        assert entry["ci_actor"] == "octocat (GITHUB_ACTOR)"
        assert entry["check"] == f"{REMEDIATION}[dumps]"
    checks = sandbox_project.checks()
    fixed = checks["test_retention[dumps]"]
    assert fixed["outcome"] == "PASS"
    assert [(m["name"], m["value"], m["verdict"]) for m in fixed["evidence"]
            if m["name"] == "backups kept"] == [("backups kept", 7, "PASS")] * 2
    assert checks["test_retention[s3-dumps]"]["outcome"] == "PASS"
    assert re.search(r"^APPLIED \S+\[dumps\]: dumps: retention file://\S+ \d+ bytes modified "
                     r"\S+Z: applied -> deleted, and its sidecar \S+ \[plan [0-9a-f]{12}\]$",
                     result.stdout, re.M), result.stdout
    assert PASSWORD not in result.output


def test_over_max_actions_the_plan_is_refused_whole(sandbox_project: Project) -> None:
    result, seen = run_retention(sandbox_project, "--allow-destructive=sandbox",
                                 "--max-actions=4")
    assert result.returncode == 1, result.output
    assert seen["probe_zafter"] == seen["probe_before"]
    refused = sandbox_project.checks()["test_retention[dumps]"]
    assert refused["outcome"] == "FAIL"
    assert re.match(r"dumps: retention: refused whole, nothing changed: plan [0-9a-f]{12} "
                    r"lists 5 items, over --max-actions=4: ", refused["message"]), refused
    assert not (sandbox_project.reports / "audit.jsonl").exists()


def test_a_dump_that_cannot_be_deleted_stops_it_and_says_what_was_done(
        sandbox_project: Project) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr not found (apt-get install e2fsprogs)")
    result, seen = run_retention(sandbox_project, "--allow-destructive=sandbox",
                                 PROBE_LOCK="1")
    assert result.returncode == 1, result.output
    before, after = seen["probe_before"], seen["probe_zafter"]
    doomed = dumps_of(before)[:5]
    assert set(before["dumps"]) - set(after["dumps"]) == sidecars(doomed[:1])
    stopped = sandbox_project.checks()["test_retention[dumps]"]
    assert stopped["outcome"] == "FAIL"
    message = stopped["message"]
    assert message.startswith("dumps: retention stopped at a failure: applied 1 of 5 "), message
    assert "failed: file://" in message
    assert f"cannot delete {doomed[1]}: Operation not permitted" in message
    assert message.count("not attempted: ") == 3
    lines = [json.loads(line) for line in
             (sandbox_project.reports / "audit.jsonl").read_text().splitlines()]
    assert [e["result"].split(":")[0] for e in lines] == [
        "applied", "failed", "not attempted", "not attempted", "not attempted"]


SNEAKY = '''
def test_sneaky(backup_writer, backup_retention, evidence):
    backup_writer.files()
'''


def test_the_write_capable_location_exists_only_in_an_allowed_destructive_check(
        project: Project, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "full_20200101_0200.dump.gz").write_bytes(b"x")
    project.write("checks/backup/test_sneaky.py", SNEAKY)
    result, checks = project.run_checks("local", f"""
targets:
  dumps:
    type: backup
    location: file://{backups}
    format: gzip
    max_age_hours: 26
    remediation: {{retention: {{keep_last: 1, keep_days: 0}}}}
""", "--allow-destructive=local")
    assert result.returncode == 1, result.output
    sneaky = checks["test_sneaky[dumps]"]
    assert sneaky["outcome"] == "ERROR"
    assert sneaky["message"] == ("backup_writer is write-capable and exists only inside a "
                                 "destructive check run with --allow-destructive")
