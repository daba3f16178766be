"""The host target type: schema, the testinfra client's deadlines and host-key verification,
and each check PASS/FAIL/ERROR against a real sshd (Debian's) and the local machine,
started by the sandbox, as a user runs the suite."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.errors import TargetUnavailable
from opsverify.sandbox.process import free_port
from opsverify.sandbox.runtime import Sandbox
from opsverify.sandbox.spec import SandboxSpec, SshdComponent
from opsverify.sandbox.sshd import WORKER
from opsverify.targets.host import HostClient, HostTarget, ServiceCheck
from tests.conftest import HungServer, Project, Result, processes_matching

needs_sshd = pytest.mark.skipif(
    not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()) or not shutil.which("ssh"),
    reason="sshd or ssh not found (apt-get install openssh-server openssh-client)")
ME = pwd.getpwuid(os.geteuid()).pw_name

# One sandbox sshd, viewed as several targets: one whose expectations hold, one whose
# expectations the host does not meet, and ssh targets that cannot be evaluated.
SANDBOX_ENV = """
settings: {timeout_s: 3}
sandbox:
  sshd: {}
targets:
  app-host:
    type: host
    url: ${SANDBOX_SSH_URL}
    ssh_identity_file: ${SANDBOX_SSH_KEY}
    known_hosts: ${SANDBOX_SSH_KNOWN_HOSTS}
    services: [{name: forecast-worker, process: "^${SANDBOX_WORKER} "}]
    ports: [{name: sshd, listen: "tcp://127.0.0.1:${SANDBOX_SSH_PORT}"}]
    processes:
      - {name: worker, comm: forecast-worker, args: "^${SANDBOX_WORKER} "}
      - {name: sshd, comm: sshd, args: "sshd -D -e -f"}
    files:
      - {name: host-key, path: "${SANDBOX_SSH_HOST_KEY}", kind: file, mode: "0600", owner: %(me)s}
      - {name: sshd-dir, path: "${SANDBOX_DIR}/sshd", kind: directory}
    command_checks:
      - {name: sshd_config_valid, command: "/usr/sbin/sshd -t -f ${SANDBOX_SSHD_CONFIG}"}
      - {name: kernel, command: "uname -s", expect_output: "^Linux$", cadence: deploy_gate}
  bad-host:
    type: host
    url: ${SANDBOX_SSH_URL}
    ssh_identity_file: ${SANDBOX_SSH_KEY}
    known_hosts: ${SANDBOX_SSH_KNOWN_HOSTS}
    services: [{name: billing-worker, process: "bin/billing-worker( |$)"}]
    ports: [{name: closed, listen: "tcp://127.0.0.1:${CLOSED_PORT}"}]
    processes: [{name: billing, comm: billing-worker}]
    files:
      - {path: "%(loose_key)s", mode: "0600"}
      - {path: "%(loose_key)s.missing"}
      - {name: host-key, path: "${SANDBOX_SSH_HOST_KEY}", owner: nobody, kind: directory}
    command_checks:
      - {name: exits_3, command: "echo to stderr >&2; exit 3"}
      - {name: wrong_kernel, command: "uname -s", expect_output: "^FreeBSD$"}
  laptop:
    type: host
    url: local
    processes: [{name: worker, comm: forecast-worker, args: "^${SANDBOX_WORKER} ", user: %(me)s}]
    files: [{path: /etc/passwd, kind: file, mode: "0644"}]
    command_checks:
      - {name: uptime_readable, command: "cat /proc/uptime", expect_output: "^[0-9.]+ "}
  laptop-bad:
    type: host
    url: local
    processes: [{name: billing, args: "billing-worker"}]
    files: [{path: /etc/passwd, mode: "0600"}]
  impostor:
    type: host
    url: ${SANDBOX_SSH_URL}
    ssh_identity_file: ${SANDBOX_SSH_KEY}
    known_hosts: "%(other_known_hosts)s"
    ports: [{name: sshd, listen: "tcp://127.0.0.1:${SANDBOX_SSH_PORT}"}]
  unknown-key:
    type: host
    url: ${SANDBOX_SSH_URL}
    ssh_identity_file: ${SANDBOX_SSH_KEY}
    known_hosts: "%(empty_known_hosts)s"
    ports: [{name: sshd, listen: "tcp://127.0.0.1:${SANDBOX_SSH_PORT}"}]
  wrong-key:
    type: host
    url: ${SANDBOX_SSH_URL}
    ssh_identity_file: "%(wrong_key)s"
    known_hosts: ${SANDBOX_SSH_KNOWN_HOSTS}
    ports: [{name: sshd, listen: "tcp://127.0.0.1:${SANDBOX_SSH_PORT}"}]
  refused:
    type: host
    url: ssh://%(me)s@127.0.0.1:${CLOSED_PORT}
    ports: ["tcp://127.0.0.1:1"]
  hung:
    type: host
    url: ssh://%(me)s@127.0.0.1:${HUNG_PORT}
    timeout_s: 1
    ports: ["tcp://127.0.0.1:1"]
"""


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    """A key file with loose permissions, a key the server does not know, and known_hosts
    files that hold another host's key or nothing."""
    loose = tmp_path / "id_loose"
    loose.write_text("not really a key\n")
    loose.chmod(0o644)
    wrong = tmp_path / "id_wrong"
    keygen(wrong)
    other = tmp_path / "other_host_key"
    keygen(other)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    # Any port: the impostor entry names the host the way ssh looks it up, by the port used.
    other_known = tmp_path / "other_known_hosts"
    empty_known = tmp_path / "empty_known_hosts"
    empty_known.write_text("")
    return {"me": ME, "loose_key": str(loose), "wrong_key": str(wrong),
            "other_known_hosts": str(other_known), "empty_known_hosts": str(empty_known),
            "_other_line": f"{kind} {blob}"}


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


def run_checks(project: Project, keys: dict[str, str], hung: HungServer,
               *args: str) -> tuple[Result, dict[str, Any]]:
    """Run the stock host checks in ``project``; outcomes keyed ``test[target:item]``."""
    project.copy_check("checks/health/test_host.py")
    project.write("environments/hosts.yaml", SANDBOX_ENV % keys)
    # The impostor's known_hosts must name the sandbox's port, which the run chooses: a
    # wildcard entry matches any port of 127.0.0.1.
    Path(keys["other_known_hosts"]).write_text(f"[127.0.0.1]:* {keys['_other_line']}\n")
    # A temporary directory of its own, to prove the run leaves nothing running behind it:
    # no sshd, no worker, no ssh master.
    tmp = tempfile.mkdtemp(prefix="ovh-", dir="/tmp")
    try:
        result = project.run("--env", "hosts", "-p", "no:xdist", *args, timeout=120, env={
            "CLOSED_PORT": str(free_port()), "HUNG_PORT": str(hung.port), "TMPDIR": tmp})
        assert not processes_matching(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    checks = project.checks("hosts")
    return result, checks


def of(checks: dict[str, Any], target: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in checks.items() if f"[{target}:" in k}


def failing_lines(check: dict[str, Any]) -> str:
    return "\n".join(f"{m['name']} = {m['value']}" for m in check["evidence"]
                     if m["verdict"] == "FAIL")


def notes(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"]}


# -- schema ------------------------------------------------------------------------------
def test_schema_address_and_shorthands() -> None:
    spec = HostTarget(type="host", url="ssh://ops@db1.example.com:2222",
                      services=["postgresql"], processes=["postgres"],
                      files=[{"path": "/etc/ssh/sshd_config", "mode": "644"}],
                      ports=["tcp://0.0.0.0:22", {"name": "pg", "listen": "tcp://127.0.0.1:5432"}])
    assert [p.label for p in spec.ports] == ["tcp://0.0.0.0:22", "pg"]
    assert spec.files[0].label == "/etc/ssh/sshd_config"
    assert spec.address() == "ops@db1.example.com:2222"
    assert spec.services[0].name == "postgresql"
    assert spec.services[0].process is None
    assert spec.processes[0].comm == "postgres"
    assert spec.files[0].mode == "0644"
    assert HostTarget(type="host", url="local").address() == "local"
    assert HostTarget(type="host", url="ssh://db1").address() == "db1:22"


@pytest.mark.parametrize(("keys", "error"), [
    ({"url": "db1.example.com"}, "expected 'local', ssh://user@host:port or docker://"),
    ({"url": "ssh://ops:hunter2@db1"}, "authenticate with ssh_identity_file"),
    ({"url": "ssh://db1/var"}, "without a path"),
    ({"url": "local", "known_hosts": "/k"}, "apply to ssh:// targets only"),
    ({"url": "local", "ports": ["127.0.0.1:22"]}, "e.g. tcp://127.0.0.1:5432"),
    ({"url": "local", "ports": ["tcp://localhost:22"]}, "Cannot validate ip address"),
    ({"url": "local", "files": [{"path": "etc/x"}]}, "expected an absolute path"),
    ({"url": "local", "files": [{"path": "/x", "mode": 416}]}, "quoted octal string"),
    ({"url": "local", "files": [{"path": "/x", "mode": "rw-r--r--"}]}, "octal mode"),
    ({"url": "local", "files": [{"path": "/x", "mode": ["0640"]}]}, "octal mode"),
    ({"url": "local", "processes": [{"name": "x"}]}, "give comm"),
    ({"url": "local", "processes": [{"name": "x", "args": "("}]}, "not a regular expression"),
    ({"url": "local", "command_checks": [{"name": "x", "command": "true", "cadence": "hourly"}]},
     "Input should be"),
    ({"url": "local", "services": [{"name": "a b"}]}, "String should match pattern"),
    ({"url": "local", "user": "root"}, "Extra inputs are not permitted"),
])
def test_schema_errors(keys: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        HostTarget(type="host", **keys)


# -- the client, against a real sshd -------------------------------------------------------
@pytest.fixture(scope="module")
def sshd() -> Iterator[dict[str, str]]:
    """The sandbox's sshd (and its worker) for this module: its variables."""
    if not (shutil.which("sshd") or Path("/usr/sbin/sshd").exists()):
        pytest.skip("sshd not found (apt-get install openssh-server)")
    box = Sandbox.plan(SandboxSpec(sshd=SshdComponent()), frozenset())
    box.start()
    yield box.variables()
    box.stop()


def ssh_target(variables: dict[str, str], **keys: Any) -> HostTarget:
    fields: dict[str, Any] = {"url": variables["SANDBOX_SSH_URL"],
                              "ssh_identity_file": variables["SANDBOX_SSH_KEY"],
                              "known_hosts": variables["SANDBOX_SSH_KNOWN_HOSTS"]}
    return HostTarget(type="host", **{**fields, **keys})


@needs_sshd
def test_ssh_client_reads_through_one_verified_session(sshd: dict[str, str]) -> None:
    log = Path(sshd["SANDBOX_DIR"]) / "sshd.log"
    accepted = log.read_text().count("Accepted publickey")
    client = HostClient("app-host", ssh_target(sshd), 3)
    try:
        client.connect()
        assert client.run("echo hi; exit 4").exit_status == 4
        key = client.file(sshd["SANDBOX_SSH_HOST_KEY"])
        assert (key.exists, key.kind, key.mode, key.owner) == (True, "file", "0600", ME)
        assert not client.file("/nonexistent/file").exists
        assert client.listening(f"tcp://127.0.0.1:{sshd['SANDBOX_SSH_PORT']}")
        assert not client.listening(f"tcp://127.0.0.1:{free_port()}")
        mine = f"^{sshd['SANDBOX_WORKER']} "  # other sandboxes may run on this machine
        assert [p.comm for p in client.processes(comm=WORKER, args=mine)] == [WORKER]
        service = client.service(ServiceCheck(name=WORKER, process=mine))
        assert service.running
        assert "process match" in service.judged_by
        # Every command went through the one master connection that connect() opened.
        assert processes_matching(str(client.backend.ssh_config))
        assert log.read_text().count("Accepted publickey") == accepted + 1
    finally:
        client.close()
    assert not processes_matching(str(client.backend.ssh_config).rsplit("/", 1)[0])


@needs_sshd
def test_a_changed_host_key_is_refused(sshd: dict[str, str], tmp_path: Path) -> None:
    other = tmp_path / "key"
    keygen(other)
    known = tmp_path / "known_hosts"
    line = f"[127.0.0.1]:{sshd['SANDBOX_SSH_PORT']} " + " ".join(
        other.with_suffix(".pub").read_text().split()[:2]) + "\n"
    known.write_text(line)
    log = Path(sshd["SANDBOX_DIR"]) / "sshd.log"
    accepted = log.read_text().count("Accepted publickey")
    client = HostClient("app-host", ssh_target(sshd, known_hosts=str(known)), 3)
    with pytest.raises(TargetUnavailable, match="does not match the one recorded") as info:
        client.connect()
    assert "not connecting" in str(info.value)
    assert known.read_text() == line  # never "corrected" behind the operator's back
    assert log.read_text().count("Accepted publickey") == accepted  # no key was offered
    client.close()


@needs_sshd
def test_an_unknown_host_key_is_not_accepted(sshd: dict[str, str], tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    client = HostClient("app-host", ssh_target(sshd, known_hosts=str(known)), 3)
    with pytest.raises(TargetUnavailable, match="no key for this host in known_hosts"):
        client.connect()
    assert known.read_text() == ""  # not trust-on-first-use: nothing was added
    client.close()


@needs_sshd
def test_a_wrong_client_key_is_an_authentication_error(sshd: dict[str, str],
                                                        tmp_path: Path) -> None:
    wrong = tmp_path / "id_wrong"
    keygen(wrong)
    client = HostClient("app-host", ssh_target(sshd, ssh_identity_file=str(wrong)), 3)
    with pytest.raises(TargetUnavailable, match=r"authentication failed \(server accepts: "
                                                r"publickey\)"):
        client.connect()
    client.close()


def test_a_missing_sshd_skips_the_component_naming_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("opsverify.sandbox.sshd._sshd", lambda: None)
    box = Sandbox.plan(SandboxSpec(sshd=SshdComponent()), frozenset())
    try:
        box.start()
        # Targets that interpolate its variables (the ssh URL, the key) are skipped so.
        reason = box.unavailable()[box.variables()["SANDBOX_SSH_URL"]]
        assert reason == ("sandbox sshd not available: sshd not found (apt-get install "
                          "openssh-server openssh-client)")
        assert not processes_matching(str(box.workdir))
    finally:
        box.stop()


def test_a_refused_port_is_one_line_at_once() -> None:
    client = HostClient("gone", HostTarget(type="host", url=f"ssh://{ME}@127.0.0.1:"
                                           f"{free_port()}"), 3)
    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match=r"connection refused$"):
        client.connect()
    assert time.monotonic() - started < 2
    client.close()


def test_a_hung_port_costs_one_deadline(hung_server: HungServer) -> None:
    client = HostClient("hung", HostTarget(type="host", url=f"ssh://{ME}@127.0.0.1:"
                                           f"{hung_server.port}"), 1)
    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match="no SSH banner within 1 s") as info:
        client.connect()
    assert time.monotonic() - started < 3
    assert str(info.value).startswith(f"hung (ssh {ME}@127.0.0.1:{hung_server.port}): ")
    client.close()


@needs_sshd
def test_a_command_past_its_deadline_is_ended_on_the_host(sshd: dict[str, str]) -> None:
    client = HostClient("app-host", ssh_target(sshd), 1)
    client.connect()
    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match=r"did not finish within 1 s .*sleep 31"):
        client.run("sleep 31")
    assert time.monotonic() - started < 4
    client.close()
    deadline = time.monotonic() + 3
    while processes_matching("sleep 31") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_matching("sleep 31")


def test_a_local_command_past_its_deadline_is_killed() -> None:
    client = HostClient("laptop", HostTarget(type="host", url="local"), 1)
    client.connect()
    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match=r"laptop \(local\): no answer within 1 s"):
        client.run("sleep 32; true")
    assert time.monotonic() - started < 2
    assert not processes_matching("sleep 32")


def test_a_service_no_init_system_knows_cannot_be_judged() -> None:
    client = HostClient("laptop", HostTarget(type="host", url="local"), 3)
    if Path("/run/systemd/system").is_dir():
        state = client.service(ServiceCheck(name="opsverify-no-such-service"))
        assert (state.known, state.running) == (False, False)
        return
    with pytest.raises(TargetUnavailable, match="declare process: for it to be judged"):
        client.service(ServiceCheck(name="opsverify-no-such-service"))


@pytest.mark.skipif(Path("/run/systemd/system").is_dir() or not Path("/etc/init.d/ssh").exists()
                    or subprocess.run(["service", "ssh", "status"], capture_output=True,
                                      check=False).returncode == 0,
                    reason="needs a host without systemd whose system sshd is stopped")
def test_a_service_is_asked_of_its_init_script() -> None:
    client = HostClient("laptop", HostTarget(type="host", url="local"), 3)
    state = client.service(ServiceCheck(name="ssh", process="sshd"))
    # The init script is asked, not the process list (the sandbox's sshd is running).
    assert (state.known, state.running) == (True, False)
    assert state.judged_by == "sysv init script (/etc/init.d/ssh status)"


# -- the checks, as a user runs them --------------------------------------------------------
@needs_sshd
def test_checks_pass_fail_and_error_for_the_right_reasons(
        project: Project, keys: dict[str, str], hung_server: HungServer) -> None:
    result, checks = run_checks(project, keys, hung_server)
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output

    good = of(checks, "app-host") | of(checks, "laptop")
    assert len(good) == 11
    assert "test_file_present[app-host:host-key]" in good
    assert {k: c["outcome"] for k, c in good.items() if c["outcome"] != "PASS"} == {}
    service = checks["test_service_running[app-host:forecast-worker]"]
    assert "process match" in notes(service)["judged by"]
    assert "systemd" in notes(service)["judged by"] or "init" in notes(service)["judged by"]

    bad = of(checks, "bad-host") | of(checks, "laptop-bad")
    assert {c["outcome"] for c in bad.values()} == {"FAIL"}, bad
    expected = {
        "test_service_running[bad-host:billing-worker]": "service billing-worker running = False",
        "test_port_listening[bad-host:closed]": "closed listening = False",
        "test_process_present[bad-host:billing]": "processes billing = 0",
        f"test_file_present[bad-host:{keys['loose_key']}]": "id_loose mode = 0644",
        f"test_file_present[bad-host:{keys['loose_key']}.missing]": "missing exists = False",
        "test_file_present[bad-host:host-key]": "host-key owner = " + ME,
        "test_command_check[bad-host:exits_3]": "exits_3 exit status = 3",
        "test_command_check[bad-host:wrong_kernel]": "output matches /^FreeBSD$/ = False",
        "test_process_present[laptop-bad:billing]": "processes billing = 0",
        "test_file_present[laptop-bad:/etc/passwd]": "/etc/passwd mode = 0644",
    }
    for prefix, line in expected.items():
        found = [c for k, c in bad.items() if k.startswith(prefix) and line in failing_lines(c)]
        assert found, f"{prefix}: no FAIL saying {line!r} in {list(bad)}"
    exits = checks["test_command_check[bad-host:exits_3]"]
    assert notes(exits)["stderr"] == "to stderr"

    errors = {
        "impostor": "host key verification failed: the server's key (ED25519 SHA256:",
        "unknown-key": "no key for this host in known_hosts",
        "wrong-key": "authentication failed",
        "refused": "connection refused",
        "hung": "no SSH banner within 1 s",
    }
    for target, cause in errors.items():
        (check,) = of(checks, target).values()
        assert check["outcome"] == "ERROR", check
        assert cause in check["message"], check["message"]
        assert "\n" not in check["message"].strip()
    assert of(checks, "hung")["test_port_listening[hung:tcp://127.0.0.1:1]"]["duration_s"] < 3


@needs_sshd
def test_service_stopped_fault_turns_the_service_and_process_checks_red(
        project: Project, keys: dict[str, str], hung_server: HungServer) -> None:
    result, checks = run_checks(project, keys, hung_server, "--target", "app-host",
                                "--sandbox-fault", "service-stopped")
    assert result.returncode == 1, result.output
    red = {k: c["outcome"] for k, c in checks.items() if c["outcome"] != "PASS"}
    assert red == {"test_service_running[app-host:forecast-worker]": "FAIL",
                   "test_process_present[app-host:worker]": "FAIL"}
    assert "running = False" in failing_lines(
        checks["test_service_running[app-host:forecast-worker]"])


@needs_sshd
def test_hostkey_changed_fault_errors_every_ssh_check_without_connecting(
        project: Project, keys: dict[str, str], hung_server: HungServer) -> None:
    result, checks = run_checks(project, keys, hung_server, "--target", "app-host",
                                "--sandbox-fault", "ssh-hostkey-changed")
    assert result.returncode == 1, result.output
    assert len(checks) == 8
    assert {c["outcome"] for c in checks.values()} == {"ERROR"}
    assert all("host key verification failed" in c["message"] for c in checks.values())
    assert "Traceback" not in result.output
