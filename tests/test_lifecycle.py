"""The sandbox's life: started once by the controller and shared by xdist workers; stopped
on exit, after a failure, after Ctrl-C and after SIGKILL of pytest, leaving no process.

A run's processes are found through its sandbox directory (``OPSVERIFY_SANDBOX_DIR``): in
their command line (postgres -D), their working directory (redis-server, postgres' children)
or their environment (the demo app). PostgreSQL and Redis overwrite their own environment
block with the process title, so the environment alone would miss them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsverify.sandbox.runtime import DIR_VAR

ROOT = Path(__file__).resolve().parent.parent




def run_processes(sandbox_dir: Path) -> dict[int, str]:
    """Live processes of the run that uses ``sandbox_dir``: pid -> command line."""
    marker = str(sandbox_dir)
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie has exited; only its exit status is left
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
            cwd = os.readlink(entry / "cwd")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue  # gone meanwhile, or a kernel thread
        if (marker in cmdline or cwd == marker or cwd.startswith(marker + "/")
                or f"{DIR_VAR}={marker}".encode() in environ):
            found[int(entry.name)] = cmdline
    return found


def servers(processes: dict[int, str]) -> dict[str, list[int]]:
    """The sandbox servers among a run's processes, by kind."""
    kinds: dict[str, list[int]] = {"postgres": [], "redis-server": [], "demo_app": []}
    for pid, cmdline in processes.items():
        if re.search(r"(^|/)postgres -D ", cmdline):
            kinds["postgres"].append(pid)
        elif cmdline.startswith(("redis-server", "/usr/bin/redis-server")):
            kinds["redis-server"].append(pid)
        elif "opsverify.sandbox.demo_app" in cmdline:
            kinds["demo_app"].append(pid)
    return kinds


def wait_gone(sandbox_dir: Path, within_s: float = 15) -> dict[int, str]:
    deadline = time.monotonic() + within_s
    left = run_processes(sandbox_dir)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = run_processes(sandbox_dir)
    return left


@pytest.fixture
def sandbox_dir() -> Iterator[Path]:
    """The run's sandbox directory (OPSVERIFY_SANDBOX_DIR): where the servers keep their data
    and logs, kept after the run. Not under tmp_path: PostgreSQL runs as an unprivileged user,
    who must be able to reach it."""
    path = Path(tempfile.mkdtemp(prefix="opsverify-lifecycle-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def environ(extra: dict[str, str]) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPSVERIFY_", "PYTEST_"))}
    return {**clean, **extra}


PROBE = '''
"""Records, from inside an xdist worker, the sandbox servers this run has."""
import json
import os
import time

import pytest


@pytest.mark.daily
@pytest.mark.parametrize("n", range(8))
def test_probe(n):
    time.sleep(0.1)  # long enough for both workers to take some
    with open(os.environ["PROBE_OUT"], "a") as out:
        out.write(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER"),
                              "ps": os.popen("ps -ww -eo pid=,args=").read()}) + "\\n")
'''


def test_xdist_workers_share_one_sandbox_started_by_the_controller(
        project: Any, tmp_path: Path, sandbox_dir: Path) -> None:
    env = project.use_foundation()
    project.write("checks/probe/test_probe.py", PROBE)
    out = tmp_path / "probe.jsonl"
    result = project.run("-m", "daily", "-n", "2", env={DIR_VAR: str(sandbox_dir),
                                                        "PROBE_OUT": str(out)})
    assert result.returncode == 0, result.output
    assert "2 workers [" in result.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["worker"] for r in records} == {"gw0", "gw1"}
    header = re.search(r"opsverify: sandbox (.*) on 127\.0\.0\.1", result.stdout)
    assert header is not None, result.stdout
    ports = dict(re.findall(r"(\w+) :(\d+)", header.group(1)))
    patterns = {
        "postgres": (rf"postgres -D {re.escape(str(sandbox_dir))}/",
                     len([k for k in env["sandbox"] if k.startswith("postgres")])),
        "redis-server": (rf"redis-server 127\.0\.0\.1:{ports['redis']}\b", 1),
        "demo_app": (rf"demo_app --port {ports['app']}\b", 1),
    }
    seen = []
    for record in records:
        lines = record["ps"].splitlines()
        found = {kind: sorted(int(line.split()[0]) for line in lines if re.search(pattern, line))
                 for kind, (pattern, _) in patterns.items()}
        for kind, (_, count) in patterns.items():
            assert len(found[kind]) == count, (kind, record["worker"], found)
        seen.append(found)
    # Both workers saw the very same processes: the controller's, shared.
    assert all(found == seen[0] for found in seen), seen
    assert wait_gone(sandbox_dir) == {}, "servers left behind after the run"


@pytest.mark.parametrize("fault", ["none", "stuck-run"], ids=["passed", "failed"])
def test_servers_stop_when_the_run_ends(project: Any, sandbox_dir: Path, fault: str) -> None:
    project.use_foundation()
    args = ["--sandbox-fault", fault] if fault != "none" else []
    result = project.run("-m", "daily", *args, env={DIR_VAR: str(sandbox_dir)})
    assert result.returncode == (0 if fault == "none" else 1), result.output
    assert (sandbox_dir / "postgres.log").exists()  # the servers did run here
    assert wait_gone(sandbox_dir, within_s=5) == {}


def test_servers_stop_when_the_sandbox_fails_to_start(project: Any, sandbox_dir: Path) -> None:
    """The demo app cannot open its log: PostgreSQL and Redis, already running, are stopped
    and the run ends with one line, exit 4."""
    project.use_foundation()
    (sandbox_dir / "app.log").mkdir()
    result = project.run("-m", "daily", env={DIR_VAR: str(sandbox_dir)})
    assert result.returncode == 4, result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [
        f"ERROR: sandbox failed to start: [Errno 21] Is a directory: "
        f"'{sandbox_dir / 'app.log'}'"]
    assert "database system is ready to accept connections" in \
        (sandbox_dir / "postgres.log").read_text()
    assert wait_gone(sandbox_dir, within_s=5) == {}


SLEEPER = '''
import os
import pathlib
import time

import pytest


@pytest.mark.daily
def test_sleeps():
    pathlib.Path(os.environ["SLEEP_MARK"]).write_text("sleeping")
    time.sleep(60)
'''


def start_and_wait_for_sleeper(project: Any, tmp_path: Path,
                               sandbox_dir: Path) -> subprocess.Popen[str]:
    project.use_foundation()
    project.write("checks/probe/test_sleeps.py", SLEEPER)
    mark = tmp_path / "sleeping"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-m", "daily"],
        cwd=project.path, env=environ({DIR_VAR: str(sandbox_dir), "SLEEP_MARK": str(mark)}),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # As at a terminal: a background job of a script inherits SIGINT ignored, and
        # Python then installs no KeyboardInterrupt handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not mark.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached the sleeping check: {proc.communicate()[0]}")
        time.sleep(0.05)
    running = servers(run_processes(sandbox_dir))
    assert all(running.values()), running  # the matcher sees every server of the run
    return proc


def test_ctrl_c_stops_the_servers_and_exits_2(project: Any, tmp_path: Path,
                                              sandbox_dir: Path) -> None:
    proc = start_and_wait_for_sleeper(project, tmp_path, sandbox_dir)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert "KeyboardInterrupt" in output
    assert wait_gone(sandbox_dir, within_s=5) == {}


def test_sigterm_writes_a_complete_report_set_marked_interrupted_and_exits_2(
        project: Any, tmp_path: Path, sandbox_dir: Path) -> None:
    """A CI job's timeout or a Kubernetes eviction: SIGTERM is handled as Ctrl-C is."""
    proc = start_and_wait_for_sleeper(project, tmp_path, sandbox_dir)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    assert time.monotonic() - started < 15, "the run did not stop within its deadline"
    assert "stopped by signal SIGTERM" in output
    assert wait_gone(sandbox_dir, within_s=5) == {}
    run = project.latest()
    assert {p.name for p in run.iterdir()} >= {"report.html", "junit.xml", "summary.json"}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["exit_status"] == 2
    assert summary["counts"]["PASS"] > 0  # the checks that ran before it are all there
    assert "Interrupted" in (run / "report.html").read_text()


def test_sigkill_of_pytest_still_stops_the_servers(project: Any, tmp_path: Path,
                                                   sandbox_dir: Path) -> None:
    """Nothing in pytest runs after SIGKILL: the kernel's parent-death signal, set by
    setpriv on each server, is what stops them."""
    proc = start_and_wait_for_sleeper(project, tmp_path, sandbox_dir)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert wait_gone(sandbox_dir, within_s=15) == {}
