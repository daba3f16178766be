"""Deleting old files on a host (``remediation: {delete_old_files: {path, pattern,
older_than_days}}``), the runbook's ``find logs/ -mtime +7 -delete``, against real hosts:
this machine (``local``), the sandbox's sshd (``ssh://``) and a busybox container of the
sandbox's private Docker engine (``docker://``, as its unprivileged user). What changed is
read by the test's own hands (``os.walk``; ``docker exec find``), never by the action.

Then the real sandbox with ``--sandbox-fault logs-piling``: the fault turns exactly
test_path_size[localhost:app-logs] red; the three opt-ins; ``--plan`` changing nothing;
apply deleting exactly the planned logs, and a daily run afterwards green; ``--max-actions``
refusing the plan whole; a log that cannot be deleted (immutable) stopping it with exit 1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opsverify.errors import BlastRadiusExceeded, TargetUnavailable
from opsverify.remediation import Remediation
from opsverify.remediation.host import (
    DeleteOldFiles,
    DeleteOldFilesSettings,
    HostFiles,
    declared_under,
)
from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.docker import APP
from opsverify.sandbox.runtime import Sandbox
from opsverify.sandbox.spec import DockerComponent, SandboxSpec, SshdComponent
from opsverify.sandbox.sshd import SshServer
from opsverify.targets.host import HostClient, HostTarget
from opsverify.targets.host_capacity import DeclaredPath
from tests.conftest import Project, running, sandbox_subset

PASSWORD = "old-files-test-pw-4b7e"  # a test value that must never be shown
NOW = datetime.now(UTC)
needs_sshd = pytest.mark.skipif(
    not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) or not shutil.which("ssh"),
    reason="sshd or ssh not found (apt-get install openssh-server openssh-client)")


# -- the settings --------------------------------------------------------------------------
@pytest.mark.parametrize(("keys", "message"), [
    ({"path": "logs"}, "expected an absolute directory"),
    ({"path": "/var/log/../etc"}, "expected a normalised path"),
    ({"path": "/var/log/app/"}, "expected a normalised path"),
    ({"path": "/"}, "refusing the root directory"),
    ({"pattern": "../*.log"}, "no '/', no '..'"),
    ({"pattern": "app/*.log"}, "no '/', no '..'"),
    ({"pattern": ""}, "no '/', no '..'"),
    ({"older_than_days": 0}, "greater than 0"),
])
def test_settings_refuse_what_could_leave_the_directory(keys: dict[str, Any],
                                                        message: str) -> None:
    settings = {"path": "/var/log/app", "pattern": "*.log", "older_than_days": 7, **keys}
    with pytest.raises(ValueError, match=re.escape(message)):
        DeleteOldFilesSettings.model_validate(settings)


def test_the_recheck_is_every_declared_path_the_cleanup_changes() -> None:
    paths = [DeclaredPath(name=n, path=p) for n, p in (
        ("logs", "/srv/app/logs/*.log"), ("all", "/srv/app"), ("any", "/srv/*/logs/*.gz"),
        ("beside", "/srv/app/*.log"), ("other", "/var/log/*.log"))]
    assert [p.label for p in declared_under(paths, "/srv/app/logs")] == ["logs", "all", "any"]
    spec = HostTarget.model_validate({
        "type": "host", "url": "local", "paths": [{"name": "x", "path": "/var/log/*.log"}],
        "remediation": {"delete_old_files": {"path": "/srv/app/logs", "pattern": "*.log",
                                             "older_than_days": 7}}})
    from opsverify.remediation.host import refusal
    assert refusal("app", spec) is not None


# -- real hosts ----------------------------------------------------------------------------
class Tree:
    """A directory of logs on a host, made and read with the test's own hands."""

    kind = ""
    root = ""
    spec: HostTarget

    def sh(self, script: str, *, root: bool = False) -> str:
        raise NotImplementedError

    def put(self, relative: str, days_ago: float, size: int = 100) -> None:
        when = (NOW - timedelta(days=days_ago)).strftime("%Y%m%d%H%M.%S")
        path = f"{self.root}/{relative}"
        self.sh(f"mkdir -p \"$(dirname '{path}')\" && head -c {size} /dev/zero > '{path}' && "
                f"touch -t {when} '{path}'")

    def files(self) -> set[str]:
        """Regular files and links under the root, relative."""
        out = self.sh(f"cd '{self.root}' && find . \\( -type f -o -type l \\) | sort")
        return {line.removeprefix("./") for line in out.splitlines() if line}

    def lock(self, relative: str) -> None:
        raise NotImplementedError

    def unlock(self, relative: str) -> None:
        pass


class LocalTree(Tree):
    """This machine's file system: local, and ssh:// (the sandbox's sshd runs here)."""

    def __init__(self, kind: str, root: Path, spec: HostTarget) -> None:
        self.kind = kind
        self.root = str(root)
        self.spec = spec

    def sh(self, script: str, *, root: bool = False) -> str:
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                              check=True).stdout

    def lock(self, relative: str) -> None:
        if subprocess.run(["chattr", "+i", f"{self.root}/{relative}"],
                          capture_output=True).returncode != 0:
            pytest.skip("chattr +i is not supported here")

    def unlock(self, relative: str) -> None:
        subprocess.run(["chattr", "-i", f"{self.root}/{relative}"], capture_output=True)


class ContainerTree(Tree):
    """/tmp in the busybox container, written as its user (nobody); ``root`` writes as 0."""

    kind = "docker"

    def __init__(self, engine: str, root: str) -> None:
        self.engine = engine
        self.root = root
        self.spec = HostTarget(type="host", url=f"docker://{APP}", docker_host=engine)

    def sh(self, script: str, *, root: bool = False) -> str:
        user = ["-u", "0"] if root else []
        return subprocess.run(["docker", "exec", *user, APP, "sh", "-c", script],
                              capture_output=True, text=True, check=True,
                              env={**os.environ, "DOCKER_HOST": self.engine}).stdout

    def lock(self, relative: str) -> None:
        """The file's directory becomes root's: nobody may remove what is in it."""
        directory = os.path.dirname(f"{self.root}/{relative}")
        self.sh(f"chown 0:0 '{directory}' && chmod 755 '{directory}'", root=True)

    def unlock(self, relative: str) -> None:
        directory = os.path.dirname(f"{self.root}/{relative}")
        self.sh(f"chown 65534:65534 '{directory}'", root=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    workdir = tmp_path_factory.mktemp("sshd")
    os.chmod(workdir, 0o755)  # noqa: S103 - sshd's StrictModes walks the key's directories
    yield from running(SshServer(SshdComponent(), SandboxContext(workdir, PASSWORD,
                                                                 frozenset())))


@pytest.fixture(scope="module")
def engine() -> Iterator[str]:
    """The sandbox's private Docker engine and its busybox containers: its DOCKER_HOST."""
    box = Sandbox.plan(SandboxSpec(docker=DockerComponent()), frozenset())
    try:
        box.start()
        if "docker" in box.skipped:
            pytest.skip(box.skipped["docker"])
        yield box.variables()["SANDBOX_DOCKER_URL"]
    finally:
        box.stop()


TREES = iter(range(1000))


@pytest.fixture(params=["local", pytest.param("ssh", marks=needs_sshd), "docker"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tree]:
    found: Tree
    if request.param == "docker":
        found = ContainerTree(request.getfixturevalue("engine"), f"/tmp/logs-{next(TREES)}")
        found.sh(f"mkdir -p {found.root}")
    else:
        root = tmp_path / "logs"
        root.mkdir()
        spec = HostTarget(type="host", url="local")
        if request.param == "ssh":
            server: SshServer = request.getfixturevalue("sshd")
            spec = HostTarget(type="host", url=server.url,
                              ssh_identity_file=str(server.client_key),
                              known_hosts=str(server.known_hosts))
        found = LocalTree(request.param, root, spec)
    yield found
    if isinstance(found, LocalTree):
        subprocess.run(["chattr", "-R", "-i", found.root], capture_output=True)


@pytest.fixture
def files(tree: Tree) -> Iterator[HostFiles]:
    made = HostFiles(HostClient("app", tree.spec, 10))
    made.connect()
    yield made
    made.close()


def engine_for(tmp_path: Path, **kwargs: Any) -> Remediation:
    settings: dict[str, Any] = dict(
        env="test", operator="tester", check="test_delete_old_files", run_id="r1",
        audit_path=tmp_path / "audit.jsonl", max_actions=5, plan_only=False, environ={})
    settings.update(kwargs)
    return Remediation(**settings)


def audit(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def action(files: HostFiles, tree: Tree, days: float = 7) -> DeleteOldFiles:
    return DeleteOldFiles(files, DeleteOldFilesSettings(path=tree.root, pattern="*.log",
                                                        older_than_days=days))


def seed(tree: Tree) -> list[str]:
    """Logs of every age at two depths, and what must never be deleted; the old logs,
    oldest first."""
    old = [("app-20.log", 20), ("nightly/batch-15.log", 15), ("app-9.log", 9)]
    for relative, days in old:
        tree.put(relative, days)
    for relative, days in (("app-1.log", 1), ("app-6.log", 6), ("nightly/batch-2.log", 2),
                           ("app-30.log.gz", 30), ("notes.txt", 30), ("a dir.log/x", 1)):
        tree.put(relative, days)
    # An old directory named like a log, and an old link to an old log outside the tree:
    # neither is a regular file in it.
    tree.put("outside/elsewhere.log", 40)
    tree.sh(f"mv '{tree.root}/outside' '{tree.root}-outside' && "
            f"ln -s '{tree.root}-outside/elsewhere.log' '{tree.root}/link.log' && "
            f"ln -s '{tree.root}-outside' '{tree.root}/linked-dir' && "
            f"touch -t 200001010000 '{tree.root}/a dir.log'")
    return [relative for relative, _ in old]


def planned(plan: Any, tree: Tree) -> list[str]:
    return [i.identity.split(" inode ")[0].removeprefix(tree.root + "/") for i in plan.items]


def test_plan_lists_exactly_the_old_regular_files_and_apply_deletes_only_those(
        tree: Tree, files: HostFiles, tmp_path: Path) -> None:
    old = seed(tree)
    before = tree.files()
    fix = engine_for(tmp_path)
    cleanup = action(files, tree)
    plan = fix.plan(cleanup, population=len(cleanup.matching().files))
    assert planned(plan, tree) == old
    assert tree.files() == before, "planning changed the tree"
    assert re.fullmatch(rf"{re.escape(tree.root)}/app-20\.log inode \d+ 100 bytes modified "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", plan.items[0].identity)
    assert re.fullmatch(r"20\.0 days old, 100 B", plan.items[0].before), plan.items[0].before
    outcome = fix.apply(cleanup, plan)
    assert [after for _, after in outcome.applied] == ["deleted"] * 3
    assert tree.files() == before - set(old)
    assert "link.log" in tree.files()
    assert tree.sh(f"ls '{tree.root}-outside'").split() == ["elsewhere.log"]
    lines = audit(tmp_path)
    assert [(e["identity"], e["result"]) for e in lines] == [
        (i.identity, "applied") for i in plan.items]
    assert {e["action"] for e in lines} == {"delete_old_files"}
    assert fix.plan(cleanup).items == ()


def test_a_drifted_file_is_skipped_with_its_reason_and_nothing_new_is_picked_up(
        tree: Tree, files: HostFiles, tmp_path: Path) -> None:
    tree.put("a.log", 30)
    tree.put("b.log", 29)
    tree.put("c.log", 28)
    tree.put("d.log", 27)
    fix = engine_for(tmp_path)
    cleanup = action(files, tree)
    plan = fix.plan(cleanup)
    assert planned(plan, tree) == ["a.log", "b.log", "c.log", "d.log"]
    # Between plan and apply: one is appended to, one deleted by someone else, one replaced
    # by a link (to an old log), and a new old log appears.
    tree.sh(f"echo more >> '{tree.root}/a.log' && rm '{tree.root}/b.log' && "
            f"rm '{tree.root}/c.log' && ln -s '{tree.root}/d.log' '{tree.root}/c.log'")
    tree.put("late.log", 40)
    outcome = fix.apply(cleanup, plan)
    reasons = [why for _, why in outcome.skipped]
    assert len(reasons) == 3
    assert reasons[0].startswith("changed: 105 bytes, modified 20"), reasons
    assert reasons[1:] == ["gone", "a symbolic link now"]
    assert [i.identity for i, _ in outcome.applied] == [plan.items[3].identity]
    assert tree.files() == {"a.log", "c.log", "late.log"}
    assert [e["result"].split(":")[0] for e in audit(tmp_path)] == [
        "skipped", "skipped", "skipped", "applied"]


def test_a_plan_over_the_limit_is_refused_whole(tree: Tree, files: HostFiles,
                                                tmp_path: Path) -> None:
    seed(tree)
    before = tree.files()
    cleanup = action(files, tree)
    with pytest.raises(BlastRadiusExceeded, match=r"^refused whole, nothing changed: plan "
                       r"[0-9a-f]{12} lists 3 items, over --max-actions=2: "):
        engine_for(tmp_path, max_actions=2).plan(cleanup)
    assert tree.files() == before
    assert audit(tmp_path) == []


def test_a_file_that_cannot_be_deleted_stops_the_action_part_way(
        tree: Tree, files: HostFiles, tmp_path: Path) -> None:
    old = seed(tree)
    fix = engine_for(tmp_path)
    cleanup = action(files, tree)
    plan = fix.plan(cleanup)
    tree.lock(old[1])  # immutable; in the container, its directory becomes root's
    try:
        outcome = fix.apply(cleanup, plan)
    finally:
        tree.unlock(old[1])
    assert [i.identity for i, _ in outcome.applied] == [plan.items[0].identity]
    assert outcome.failed is not None
    assert outcome.failed[0] == plan.items[1]
    why = {"docker": "Permission denied"}.get(tree.kind, "Operation not permitted")
    assert re.fullmatch(rf"rm: (can't|cannot) remove .*{re.escape(old[1])}.*{why}",
                        outcome.failed[1]), outcome.failed
    assert outcome.not_attempted == [plan.items[2]]
    assert outcome.report().startswith(f"applied 1 of 3 (plan {plan.plan_id}); applied: ")
    assert {old[1], old[2]} <= tree.files()
    assert old[0] not in tree.files()
    assert [e["result"].split(":")[0] for e in audit(tmp_path)] == [
        "applied", "failed", "not attempted"]


def test_never_outside_the_directory_even_when_it_is_swapped_under_the_plan(
        tmp_path: Path) -> None:
    root = tmp_path / "logs"
    tree = LocalTree("local", root, HostTarget(type="host", url="local"))
    root.mkdir()
    tree.put("sub/old.log", 30)
    files = HostFiles(HostClient("app", tree.spec, 10))
    fix = engine_for(tmp_path)
    cleanup = action(files, tree)
    plan = fix.plan(cleanup)
    assert planned(plan, tree) == ["sub/old.log"]
    # The same file (same inode, size and time), but its directory is now reached
    # through a link that leads out of the tree.
    (root / "sub").rename(tmp_path / "sub")
    (root / "sub").symlink_to(tmp_path / "sub")
    outcome = fix.apply(cleanup, plan)
    assert [why for _, why in outcome.skipped] == [
        "its directory resolves outside the directory now"]
    assert (tmp_path / "sub" / "old.log").exists()
    # A directory that is itself a link is refused before anything is listed.
    link = tmp_path / "link-to-logs"
    link.symlink_to(root)
    with pytest.raises(TargetUnavailable, match="not a directory, or a symbolic link to one"):
        DeleteOldFiles(files, DeleteOldFilesSettings(path=str(link), pattern="*.log",
                                                     older_than_days=7)).select()


# -- the sandbox: logs-piling, as a user runs it --------------------------------------------
COMPONENTS = ("postgres", "logs")
REMEDIATION = "checks/remediation/test_host.py::test_delete_old_files[localhost]"
HOST_CHECKS = ("checks/health/test_host.py", "checks/capacity/test_host.py",
               "checks/security/test_host.py")
PROBE = '''
"""Lists the sandbox's logs/ with its own hands, before and after the remediation; after,
runs the stock daily host checks in a run of their own against this machine."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml


@pytest.mark.daily
def test_probe(env):
    when = os.path.basename(os.path.dirname(__file__))
    logs = Path(env.model.targets["localhost"].remediation.delete_old_files.path)
    found = sorted((p.stat().st_mtime, str(p.relative_to(logs)))
                   for p in logs.rglob("*") if p.is_file())
    seen = {"when": when, "files": sorted(name for _, name in found),
            "old": [name for mtime, name in found if mtime < time.time() - 7 * 86400]}
    if os.environ.get("PROBE_LOCK"):  # the second-oldest log: immutable while it runs
        name = seen["old"][1] if when == "probe_before" else os.environ["PROBE_LOCK"]
        os.environ["PROBE_LOCK"] = name
        subprocess.run(["chattr", "+i" if when == "probe_before" else "-i", str(logs / name)],
                       check=True)
    if when == "probe_zafter" and os.environ.get("PROBE_DAILY"):
        seen["daily"] = daily(env)
    with open(os.environ["PROBE_OUT"], "a") as out:
        out.write(json.dumps(seen) + "\\n")


def daily(env):
    """`pytest -m daily` of the stock host checks, now, against this machine."""
    localhost = env.model.targets["localhost"].model_dump(mode="json", exclude_defaults=True)
    data = {"description": "this machine, after the remediation",
            "targets": {"localhost": localhost}}
    Path("environments/afterwards.yaml").write_text(yaml.safe_dump(data))
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST_", "OPSVERIFY_"))}
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:xdist",
                    "checks/capacity/test_host.py", "-m", "daily", "--env", "afterwards"],
                   env=environ, capture_output=True, timeout=100)
    summary = json.loads(Path("reports/afterwards/latest/summary.json").read_text())
    return {c["nodeid"].split("::", 1)[1]: c["outcome"] for c in summary["checks"]}
'''


@pytest.fixture
def sandbox_project(project: Project) -> Project:
    project.write_env(sandbox_subset(COMPONENTS))
    for check in (*HOST_CHECKS, "checks/remediation/test_host.py"):
        project.copy_check(check)
    project.write("checks/probe_before/test_probe.py", PROBE)
    project.write("checks/probe_zafter/test_probe.py", PROBE)
    return project


def run_cleanup(project: Project, *flags: str, daily: bool = False,
                **env: str) -> tuple[Any, dict[str, Any]]:
    """The probes around the remediation (after the daily host checks, if asked), with
    logs-piling."""
    out = project.path / "probe.jsonl"
    result = project.run(
        *(HOST_CHECKS if daily else ()), "checks/probe_before", "checks/remediation/test_host.py",
        "checks/probe_zafter", "-m", "daily or destructive", "-p", "no:xdist",
        "--target", "localhost", "--sandbox-fault", "logs-piling", *flags, timeout=240,
        env={"PROBE_OUT": str(out), "OPSVERIFY_SANDBOX_PASSWORD": PASSWORD, **env})
    seen = {}
    if out.exists():
        for line in out.read_text().splitlines():
            record = json.loads(line)
            seen[record.pop("when")] = record
    return result, seen


def red(checks: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name, c in checks.items() if c["outcome"] in ("FAIL", "ERROR")}


def test_collected_only_with_all_three_opt_ins_and_only_under_a_declared_path(
        sandbox_project: Project) -> None:
    result = sandbox_project.run("-m", "destructive", "--allow-destructive=sandbox",
                                 "--collect-only", "-q")
    assert result.returncode == 0, result.output
    assert [line for line in result.stdout.splitlines() if "test_host.py::" in line] == [
        REMEDIATION]
    for flags in (["-m", "destructive"], ["--allow-destructive=sandbox"],
                  ["-m", "daily", "--allow-destructive=sandbox"]):
        result = sandbox_project.run("checks/remediation", *flags, "--collect-only", "-q")
        assert REMEDIATION not in result.stdout, (flags, result.stdout)
    data = sandbox_subset(COMPONENTS)
    localhost = data["targets"]["localhost"]
    del localhost["remediation"]
    sandbox_project.write_env(data)
    result = sandbox_project.run("-m", "destructive", "--allow-destructive=sandbox",
                                 "--collect-only", "-q")
    assert REMEDIATION not in result.stdout
    # A cleanup of a directory whose size no declared path checks: refused at load.
    localhost["remediation"] = {"delete_old_files": {"path": "/var/tmp", "pattern": "*.log",
                                                     "older_than_days": 7}}
    sandbox_project.write_env(data)
    result = sandbox_project.run("-m", "destructive", "--allow-destructive=sandbox")
    assert result.returncode == 4, result.output
    assert re.search(r"environments/sandbox\.yaml:\d+ targets\.localhost\.remediation\."
                     r"delete_old_files\.path: the directory holds none of the target's "
                     r"declared paths: declare it", result.stderr), result.output


def test_the_fault_turns_exactly_its_check_red_and_plan_changes_nothing(
        sandbox_project: Project) -> None:
    healthy = sandbox_project.run(*HOST_CHECKS, "-m", "daily", "-p", "no:xdist",
                                  "--target", "localhost", timeout=240)
    baseline = sandbox_project.checks()
    assert baseline["test_path_size[localhost:app-logs]"]["outcome"] == "PASS", healthy.output

    result, seen = run_cleanup(sandbox_project, "--allow-destructive=sandbox", "--plan",
                               daily=True)
    checks = sandbox_project.checks()
    assert red(checks) == red(baseline) | {"test_path_size[localhost:app-logs]"}
    size = next(m for m in checks["test_path_size[localhost:app-logs]"]["evidence"]
                if m["name"] == "host.path_bytes")
    assert size["value"] > 64 * 2**20
    assert size["verdict"] == "FAIL"
    assert result.returncode == 1, result.output  # that FAIL; the plan itself is no failure
    before, after = seen["probe_before"], seen["probe_zafter"]
    assert after == before, "--plan changed the logs"
    assert len(before["old"]) == 5
    assert "nightly/" in before["old"][0]  # the cleanup recurses, as find does
    plan = [line for line in result.stdout.splitlines()
            if line.startswith(f"PLAN  {REMEDIATION}: ")]
    assert [re.search(r"/logs/(\S+) inode", line)[1] for line in plan] == before["old"], (  # type: ignore[index]
        result.stdout)
    assert all(re.search(r": localhost: delete_old_files \S+ inode \d+ \d+ bytes modified "
                         r"\S+Z \(\d+\.\d days old, [\d.]+ (B|KiB|MiB)\) \[plan [0-9a-f]{12}\]$",
                         line) for line in plan), plan
    assert checks["test_delete_old_files[localhost]"]["outcome"] == "PLAN"
    assert not (sandbox_project.reports / "audit.jsonl").exists()


def test_apply_deletes_the_planned_logs_and_the_daily_run_is_green(
        sandbox_project: Project) -> None:
    result, seen = run_cleanup(sandbox_project, "--allow-destructive=sandbox",
                               PROBE_DAILY="1")
    assert result.returncode == 0, result.output
    before, after = seen["probe_before"], seen["probe_zafter"]
    assert set(before["files"]) - set(after["files"]) == set(before["old"])
    assert after["old"] == []
    assert len(after["files"]) == 6  # three days of daily and of nightly logs
    daily = seen["probe_zafter"]["daily"]
    assert daily["test_path_size[localhost:app-logs]"] == "PASS"
    assert not {k for k, v in daily.items() if v in ("FAIL", "ERROR")}, daily
    checks = sandbox_project.checks()
    fixed = checks["test_delete_old_files[localhost]"]
    assert fixed["outcome"] == "PASS", fixed
    sizes = {m["item"]: m for m in fixed["evidence"] if m["name"] == "host.path_bytes"}
    assert set(sizes) == {"app-logs"}  # the sandbox's own logs are not under logs/
    assert sizes["app-logs"]["verdict"] == "PASS"
    assert sizes["app-logs"]["value"] < 1024 * 1024
    lines = [json.loads(line) for line in
             (sandbox_project.reports / "audit.jsonl").read_text().splitlines()]
    assert [(e["action"], e["result"], e["after"]) for e in lines] == [
        ("delete_old_files", "applied", "deleted")] * 5
    assert [re.search(r"/logs/(\S+) inode", e["identity"])[1]  # type: ignore[index]
            for e in lines] == before["old"]


def test_over_max_actions_the_plan_is_refused_whole(sandbox_project: Project) -> None:
    result, seen = run_cleanup(sandbox_project, "--allow-destructive=sandbox",
                               "--max-actions=4")
    assert result.returncode == 1, result.output
    assert seen["probe_zafter"] == seen["probe_before"]
    refused = sandbox_project.checks()["test_delete_old_files[localhost]"]
    assert refused["outcome"] == "FAIL"
    assert re.match(r"localhost: delete_old_files: refused whole, nothing changed: plan "
                    r"[0-9a-f]{12} lists 5 items, over --max-actions=4: ", refused["message"])


def test_a_log_that_cannot_be_deleted_stops_it_and_says_what_was_done(
        sandbox_project: Project) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("chattr not found (apt-get install e2fsprogs)")
    result, seen = run_cleanup(sandbox_project, "--allow-destructive=sandbox",
                               PROBE_LOCK="1")
    assert result.returncode == 1, result.output
    before, after = seen["probe_before"], seen["probe_zafter"]
    assert set(before["files"]) - set(after["files"]) == {before["old"][0]}
    stopped = sandbox_project.checks()["test_delete_old_files[localhost]"]
    assert stopped["outcome"] == "FAIL"
    message = stopped["message"]
    assert message.startswith("localhost: delete_old_files stopped at a failure: applied 1 of "
                              "5 "), message
    assert "Operation not permitted" in message
    assert message.count("not attempted: ") == 3


SNEAKY = '''
def test_sneaky(host_admin, host_delete_old_files, evidence):
    host_admin.client.run("true")
'''


def test_the_write_capable_client_exists_only_in_an_allowed_destructive_check(
        project: Project, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "old.log").write_text("x")
    project.write("checks/capacity/test_sneaky.py", SNEAKY)
    result, checks = project.run_checks("local", f"""
targets:
  app:
    type: host
    url: local
    paths: [{{name: logs, path: "{logs}/*.log"}}]
    remediation: {{delete_old_files: {{path: "{logs}", pattern: "*.log", older_than_days: 7}}}}
""", "--allow-destructive=local")
    assert result.returncode == 1, result.output
    sneaky = checks["test_sneaky[app]"]
    assert sneaky["outcome"] == "ERROR"
    assert sneaky["message"] == ("host_admin is write-capable and exists only inside a "
                                 "destructive check run with --allow-destructive")
    assert (logs / "old.log").exists()
