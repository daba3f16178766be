"""The backup checks against the sandbox, run as a user runs them: every level green on the
seeded backups; each backup fault turns exactly the level it breaks red, with evidence, and
leaves the other levels green; service-side faults fail their checks; a restore drill
pointed at a non-scratch target is refused before anything starts."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from opsverify.sandbox.postgres import bindir
from tests.conftest import ROOT, HungServer, Project, Result, sandbox_subset

pytestmark = pytest.mark.skipif(bindir() is None,
                                reason="PostgreSQL not found (apt-get install postgresql)")

COMPONENTS = ("postgres", "redis", "sshd", "moto", "backups")
PASSWORD = "sandbox-pw-for-backup-tests-5c2e"
BACKUPS = ("dumps", "erpfts-backups", "chroma-backups", "s3-dumps")
DAILY = ("test_newest_is_recent", "test_newest_size", "test_retention", "test_checksum",
         "test_structure")
CHECKS = sorted(
    [f"{check}[{backup}]" for backup in BACKUPS for check in DAILY]
    + ["test_full_read[dumps:pg_restore]",
       "test_full_read[s3-dumps:pg_restore]", "test_restore_drill[dumps:scratch-db]",
       "test_restore_drill_sqlite[erpfts-backups:tempfile]",
       "test_wal_archiving[db]", "test_wal_archiving[scratch-db]", "test_snapshot[cache:rdb]",
       "test_dynamodb_pitr[cloud]", "test_dynamodb_backup_recent[cloud]",
       "test_versioning[datasets]", "test_replication[datasets]"])


def environment() -> dict[str, Any]:
    """environments/sandbox.yaml, cut down to the servers backups need, and the targets
    those servers provide."""
    return sandbox_subset(COMPONENTS)


def run(project: Project, *faults: str, data: dict[str, Any] | None = None,
        marks: str = "daily or weekly") -> tuple[Result, dict[str, Any]]:
    # Every backup check but the Kubernetes CronJob's: no component here provides a cluster
    # (tests/test_faults_kubernetes.py runs that one).
    for path in (ROOT / "checks" / "backup").glob("test_*.py"):
        if path.name != "test_kubernetes.py":
            project.write(f"checks/backup/{path.name}", path.read_text())
    project.write("environments/sandbox.yaml", yaml.safe_dump(data or environment(),
                                                              sort_keys=False))
    args = [a for f in faults for a in ("--sandbox-fault", f)]
    result = project.run("-m", marks, "-p", "no:xdist", *args, timeout=180,
                         env={"OPSVERIFY_SANDBOX_PASSWORD": PASSWORD})
    written = project.latest() / "summary.json"
    assert written.exists(), f"exit {result.returncode}, no summary.json:\n{result.output[-3000:]}"
    return result, json.loads(written.read_text())


def outcomes(summary: dict[str, Any]) -> dict[str, str]:
    return {c["nodeid"].split("::", 1)[1]: c["outcome"] for c in summary["checks"]}


def off(summary: dict[str, Any]) -> dict[str, str]:
    """The checks that did not pass."""
    return {name: outcome for name, outcome in outcomes(summary).items() if outcome != "PASS"}


def failing(summary: dict[str, Any], check: str) -> list[str]:
    found = next(c for c in summary["checks"] if c["nodeid"].endswith(f"::{check}"))
    return [f"{m['name']} = {m['value']}" for m in found["evidence"] if m["verdict"] == "FAIL"]


def levels(summary: dict[str, Any], backup: str) -> tuple[str, dict[str, str]]:
    entry = summary["backups"][backup]
    return entry["level_proven"], entry["levels"]


ALL_PASS = {"L1": "PASS", "L2": "PASS", "L3": "PASS", "L4": "PASS"}
NO_DRILL = {"L1": "PASS", "L2": "PASS", "L3": "PASS", "L4": "not run"}


def test_seeded_backups_prove_every_level(project: Project) -> None:
    result, summary = run(project)
    assert result.returncode == 0, result.output
    assert sorted(outcomes(summary)) == CHECKS
    assert off(summary) == {}
    assert levels(summary, "dumps") == ("L4", ALL_PASS)
    assert levels(summary, "erpfts-backups") == ("L4", ALL_PASS)
    assert levels(summary, "chroma-backups") == ("L3", NO_DRILL)
    assert levels(summary, "s3-dumps") == ("L3", NO_DRILL)
    facts = summary["backups"]["dumps"]["evidence"]
    assert set(facts) == {"newest backup", "age", "size", "sha256", "archive",
                          "tables restored", "rows restored", "drill duration"}
    assert re.fullmatch(r"full_\d{8}_0200\.dump\.gz", facts["newest backup"])
    assert facts["tables restored"] == "4"
    assert facts["rows restored"] == "2292"  # 12 experiments, 240 runs, 40 models, 2000 logs
    assert "dumps: L4 proven (L1 PASS, L2 PASS, L3 PASS, L4 PASS)" in result.stdout
    assert ("chroma-backups: L3 proven (L1 PASS, L2 PASS, L3 PASS, L4 not run)"
            in result.stdout)
    html = (project.latest() / "report.html").read_text()
    assert "<table id='opsverify-backups'>" in html
    artifacts = [p for p in project.latest().rglob("*") if p.is_file()]
    assert not any(PASSWORD in p.read_text(errors="replace") for p in artifacts)
    assert PASSWORD not in result.output


def test_backup_faults_each_break_their_level_on_their_backup(project: Project) -> None:
    """Four faults on four backups at once: each backup's other levels stay green."""
    result, summary = run(project, "stale-backup", "truncated-backup", "empty-dump",
                          "corrupt-sqlite-backup")
    assert result.returncode == 1, result.output
    assert off(summary) == {
        "test_newest_is_recent[dumps]": "FAIL",
        "test_structure[chroma-backups]": "FAIL",
        "test_newest_size[s3-dumps]": "FAIL",
        "test_structure[erpfts-backups]": "FAIL",
    }
    # stale-backup: the newest dump is 3 days and some hours old; it still restores.
    assert levels(summary, "dumps") == ("none", {**ALL_PASS, "L1": "FAIL"})
    (age,) = failing(summary, "test_newest_is_recent[dumps]")
    assert 72 < float(age.split(" = ")[1]) < 72 + 26
    # truncated-backup: the gzip header is fine, the stream ends early; its checksum matches.
    assert levels(summary, "chroma-backups") == ("L2", {**NO_DRILL, "L3": "FAIL"})
    (cut,) = failing(summary, "test_structure[chroma-backups]")
    assert cut.startswith("gzip stream = ends early after ")
    assert "end-of-stream marker" in cut
    # empty-dump: a valid archive (L3 green) of an empty database, 97 % smaller.
    assert levels(summary, "s3-dumps") == ("none", {**NO_DRILL, "L1": "FAIL"})
    size, drop = failing(summary, "test_newest_size[s3-dumps]")
    assert int(size.split(" = ")[1]) < 10240
    assert float(drop.split(" = ")[1]) > 90
    # corrupt-sqlite-backup: integrity_check fails; the rows still restore (L4 green).
    assert levels(summary, "erpfts-backups") == ("L2", {**ALL_PASS, "L3": "FAIL"})
    # SQLite either stops at the torn page or lists what it found there: both are FAILs.
    (torn,) = failing(summary, "test_structure[erpfts-backups]")
    assert torn == "PRAGMA integrity_check = database disk image is malformed" or (
        torn.startswith("PRAGMA integrity_check = *** in database main ***; On tree page")), torn


@pytest.mark.parametrize(("fault", "check", "level", "proven", "reason"), [
    ("checksum-mismatch", "test_checksum[dumps]", "L2", "L1",
     r"sha256 in full_\d{8}_0200\.dump\.gz\.sha256 = [0-9a-f]{64}"),
    ("retention-exceeded", "test_retention[dumps]", "L1", "none", r"backups kept = 12"),
    ("restore-fails", "test_restore_drill[dumps:scratch-db]", "L4", "L3",
     r'restore = role "legacy_etl" does not exist \(in: ALTER TABLE public\.etl_watermarks '
     r"OWNER TO legacy_etl;\)"),
])
def test_dump_faults_break_exactly_one_level(project: Project, fault: str, check: str,
                                            level: str, proven: str, reason: str) -> None:
    result, summary = run(project, fault)
    assert result.returncode == 1, result.output
    assert off(summary) == {check: "FAIL"}
    assert levels(summary, "dumps") == (proven, {**ALL_PASS, level: "FAIL"})
    (line,) = failing(summary, check)
    assert re.fullmatch(reason, line), line
    assert f"FAIL  checks/backup/test_backup.py::{check}: dumps: " in result.stdout


def test_service_side_faults_and_an_unreachable_backup_host(project: Project) -> None:
    data = environment()
    data["targets"]["chroma-backups"].pop("checksum")  # and a backup without a checksum
    result, summary = run(project, "wal-archive-failing", "dynamodb-pitr-off",
                          "redis-bgsave-failed", "ssh-hostkey-changed", data=data, marks="daily")
    assert result.returncode == 1, result.output
    erpfts = {c: "ERROR" for c in CHECKS if "erpfts-backups" in c and "drill" not in c}
    assert off(summary) == {
        "test_wal_archiving[db]": "FAIL", "test_wal_archiving[scratch-db]": "FAIL",
        "test_dynamodb_pitr[cloud]": "FAIL", "test_snapshot[cache:rdb]": "FAIL", **erpfts,
        "test_checksum[chroma-backups]": "SKIP"}
    assert levels(summary, "chroma-backups") == ("L3", {**NO_DRILL, "L2": "n/a"})
    assert failing(summary, "test_wal_archiving[db]") == [
        "last archive attempt = failed (000000010000000000000001)"]
    assert failing(summary, "test_dynamodb_pitr[cloud]") == [
        "t-developer-projects: point-in-time recovery = DISABLED"]
    assert failing(summary, "test_snapshot[cache:rdb]") == ["rdb_last_bgsave_status = err"]
    # The backup host's key changed: one line per check, never accepted.
    errors = [line for line in result.stdout.splitlines()
              if line.startswith("ERROR") and ": erpfts-backups (ssh " in line]
    assert len(errors) == len(erpfts)
    assert all("host key verification failed" in line for line in errors), errors
    assert "Traceback" not in result.output
    assert summary["backups"]["erpfts-backups"]["level_proven"] == "none"


def test_a_drill_into_a_non_scratch_target_is_refused_before_anything_starts(
        project: Project, hung_server: HungServer) -> None:
    data = environment()
    data["targets"]["prod-db"] = {"type": "postgres",
                                  "dsn": f"postgresql://app:pw@127.0.0.1:{hung_server.port}/app"}
    data["targets"]["dumps"]["restore_drill"]["into"] = "prod-db"
    project.write("environments/sandbox.yaml", yaml.safe_dump(data, sort_keys=False))
    # Every backup check but the Kubernetes CronJob's: no component here provides a cluster
    # (tests/test_faults_kubernetes.py runs that one).
    for path in (ROOT / "checks" / "backup").glob("test_*.py"):
        if path.name != "test_kubernetes.py":
            project.write(f"checks/backup/{path.name}", path.read_text())
    result = project.run("-m", "weekly", timeout=60)
    assert result.returncode == 4, result.output
    assert re.search(r"environments/sandbox\.yaml:\d+ targets\.dumps\.restore_drill\.into: "
                     r"refusing to restore into 'prod-db': it is not marked scratch: true "
                     r"\(a restore drill writes only into scratch targets\)", result.stderr), \
        result.output
    assert "sandbox" not in result.stdout  # no server was started
    assert hung_server.accepted == []  # and the target was never contacted
    assert not project.reports.exists() or not any(project.reports.rglob("summary.json"))


def test_cadences_keep_the_daily_run_light(project: Project) -> None:
    """Full reads and drills are weekly; presence, checksums and structure are daily."""
    # Every backup check but the Kubernetes CronJob's: no component here provides a cluster
    # (tests/test_faults_kubernetes.py runs that one).
    for path in (ROOT / "checks" / "backup").glob("test_*.py"):
        if path.name != "test_kubernetes.py":
            project.write(f"checks/backup/{path.name}", path.read_text())
    project.write("environments/sandbox.yaml", yaml.safe_dump(environment(), sort_keys=False))

    def collected(marks: str) -> set[str]:
        out = project.run("--collect-only", "-q", "-m", marks, timeout=60).stdout
        return {line.split("::", 1)[1] for line in out.splitlines() if "::" in line}

    daily, weekly = collected("daily"), collected("weekly")
    assert weekly == {"test_full_read[dumps:pg_restore]", "test_full_read[s3-dumps:pg_restore]",
                      "test_restore_drill[dumps:scratch-db]",
                      "test_restore_drill_sqlite[erpfts-backups:tempfile]"}
    assert daily == set(CHECKS) - weekly
    assert collected("weekly and backup") == weekly
