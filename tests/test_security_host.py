"""Host security checks (checks/security/test_host.py) against real sshds — the sandbox's,
hardened, and one configured badly (root login, passwords, CBC, SHA-1) — read both ways:
``sshd -T`` as root, and the handshake as an unprivileged user; ``/etc/shadow`` and
world-writable trees on the local machine and in a real container."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from opsverify.sandbox.docker import IDLE, IMAGE, TAG, DockerEngine, static_busybox
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.targets.host import HostClient, HostTarget
from opsverify.targets.ssh import server_offer
from tests.conftest import HungServer, Project, private_docker_engine

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
needs_root_sshd = pytest.mark.skipif(
    not Path(SSHD).exists() or not shutil.which("ssh") or os.geteuid() != 0,
    reason="needs root, sshd and ssh (apt-get install openssh-server openssh-client)")
# An unprivileged account with a login shell, to read a server as a user who is not root.
UNPRIVILEGED = "postgres"
needs_unprivileged = pytest.mark.skipif(
    UNPRIVILEGED not in {p.pw_name for p in pwd.getpwall()},
    reason=f"needs the {UNPRIVILEGED} account (apt-get install postgresql)")
CHECKS = "checks/security/test_host.py"

BAD_CONFIG = """\
ListenAddress 127.0.0.1:{port}
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
AllowUsers root {unprivileged}
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
# With PAM, a locked account (no password, as postgres is) may log in by key.
UsePAM yes
StrictModes no
Ciphers aes128-ctr,aes256-cbc
MACs hmac-sha2-256,hmac-sha1
"""


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def bad_sshd() -> Iterator[dict[str, str]]:
    """A real sshd that allows root and password logins, a CBC cipher and a SHA-1 MAC; its
    files are readable by the unprivileged account, which may log in with our key."""
    if not Path(SSHD).exists() or os.geteuid() != 0:
        pytest.skip("needs root and sshd (apt-get install openssh-server)")
    base = Path(tempfile.mkdtemp(prefix="ovsec-", dir="/tmp"))
    base.chmod(0o755)
    keygen(base / "host_key")
    keygen(base / "id_client")
    (base / "id_client").chmod(0o600)
    (base / "authorized_keys").write_text((base / "id_client.pub").read_text())
    (base / "authorized_keys").chmod(0o644)
    port = free_port()
    (base / "sshd_config").write_text(BAD_CONFIG.format(port=port, dir=base,
                                                        unprivileged=UNPRIVILEGED))
    kind, blob = (base / "host_key.pub").read_text().split()[:2]
    (base / "known_hosts").write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
    # A tree the unprivileged account cannot enter all of, and one it can.
    (base / "tree" / "private").mkdir(parents=True)
    (base / "tree" / "private").chmod(0o700)
    (base / "tree").chmod(0o755)
    process = spawn([SSHD, "-D", "-e", "-f", str(base / "sshd_config")], log=base / "sshd.log")
    try:
        wait_until(lambda: port_open(port), timeout_s=15, what="bad sshd", process=process,
                   log=base / "sshd.log")
        yield {"port": str(port), "dir": str(base), "key": str(base / "id_client"),
               "known_hosts": str(base / "known_hosts"), "unprivileged": UNPRIVILEGED}
    finally:
        stop(process)
        shutil.rmtree(base, ignore_errors=True)


def failing(check: dict[str, Any]) -> str:
    return "\n".join(f"{m['name']} = {m['value']}" for m in check["evidence"]
                     if m["verdict"] == "FAIL")


def notes(check: dict[str, Any]) -> dict[str, Any]:
    return {m["name"]: m["value"] for m in check["evidence"]}


def run(project: Project, env: str, *args: str) -> tuple[Any, dict[str, dict[str, Any]]]:
    project.copy_check(CHECKS)
    return project.run_checks("hostsec", env, "-m", "security", *args, timeout=120)


# -- schema ------------------------------------------------------------------------------
def test_schema_defaults_relaxations_and_errors() -> None:
    spec = HostTarget(type="host", url="ssh://ops@db1:2222")
    assert spec.security.ssh_root_login
    assert spec.security.shadow
    assert spec.security.permit_root_login == "no"
    assert spec.sshd_port == 2222
    assert HostTarget(type="host", url="local").sshd_port == 22
    assert HostTarget(type="host", url="local", security={"sshd_port": 2200}).sshd_port == 2200
    for bad, error in (({"permit_root_login": "yes"}, "'no', 'forced-commands-only' or"),
                       ({"no_world_writable": ["app"]}, "expected an absolute path"),
                       ({"ssh_root_logn": False}, "Extra inputs are not permitted")):
        with pytest.raises(ValidationError, match=error):
            HostTarget(type="host", url="local", security=bad)


# -- the engine, against real servers -----------------------------------------------------
@needs_root_sshd
def test_the_handshake_shows_what_any_client_sees(bad_sshd: dict[str, str]) -> None:
    offer = server_offer("127.0.0.1", int(bad_sshd["port"]), 3)
    assert offer.banner.startswith("SSH-2.0-OpenSSH_")
    assert offer.ciphers == ("aes128-ctr", "aes256-cbc")
    assert offer.macs == ("hmac-sha2-256", "hmac-sha1")
    assert offer.kex
    assert offer.host_keys == ("ssh-ed25519",)


def test_a_port_that_does_not_speak_ssh_is_one_line(hung_server: HungServer) -> None:
    with pytest.raises(TimeoutError, match=r"no KEXINIT within 0\.5 s"):
        server_offer("127.0.0.1", hung_server.port, 0.5)
    with pytest.raises(ConnectionRefusedError):
        server_offer("127.0.0.1", free_port(), 1)


@needs_root_sshd
@needs_unprivileged
def test_as_a_user_the_client_reads_the_handshake_and_the_methods(
        bad_sshd: dict[str, str]) -> None:
    spec = HostTarget(type="host", url=f"ssh://{UNPRIVILEGED}@127.0.0.1:{bad_sshd['port']}",
                      ssh_identity_file=bad_sshd["key"], known_hosts=bad_sshd["known_hosts"])
    client = HostClient("user-host", spec, 3)
    try:
        client.connect()
        sshd = client.sshd_config()
    finally:
        client.close()
    assert (sshd.found, sshd.settings, sshd.needs_root) == (True, (), True)
    assert sshd.auth_methods == ("publickey", "password")
    assert sshd.ciphers == ("aes128-ctr", "aes256-cbc")
    assert sshd.source.startswith(f"the handshake with 127.0.0.1:{bad_sshd['port']} (SSH-2.0-")


# -- the checks, as a user runs them --------------------------------------------------------
@needs_root_sshd
@needs_unprivileged
def test_checks_pass_on_the_sandbox_and_fail_on_a_bad_sshd(
        project: Project, bad_sshd: dict[str, str], tmp_path: Path) -> None:
    loose = tmp_path / "app"
    (loose / "cache").mkdir(parents=True)
    (loose / "cache" / "model.pkl").write_text("weights")
    (loose / "cache" / "model.pkl").chmod(0o666)
    (loose / "cache").chmod(0o777)
    (loose / "tmp").mkdir()
    (loose / "tmp").chmod(0o1777)  # sticky: anyone may add, none may replace: allowed
    (loose / "link").symlink_to(loose / "cache" / "model.pkl")  # links are 0777: not counted
    clean = tmp_path / "clean"
    clean.mkdir()
    env = f"""
settings: {{timeout_s: 3}}
sandbox: {{sshd: {{}}}}
targets:
  app-host:  # the sandbox's hardened sshd, read with sshd -T over ssh as root
    type: host
    url: ${{SANDBOX_SSH_URL}}
    ssh_identity_file: ${{SANDBOX_SSH_KEY}}
    known_hosts: ${{SANDBOX_SSH_KNOWN_HOSTS}}
    security:
      permit_root_login: prohibit-password
      no_world_writable: ["{clean}", "${{SANDBOX_DIR}}/sshd"]
  bad-local:  # the bad sshd, read with sshd -T on this machine as root
    type: host
    url: local
    security: {{sshd_port: {bad_sshd['port']}, no_world_writable: ["{loose}", "{clean}/gone"]}}
  bad-user:  # the same bad sshd, as a user who is not root: only its handshake
    type: host
    url: ssh://{UNPRIVILEGED}@127.0.0.1:{bad_sshd['port']}
    ssh_identity_file: {bad_sshd['key']}
    known_hosts: {bad_sshd['known_hosts']}
    security: {{no_world_writable: ["{bad_sshd['dir']}/tree"]}}
  no-sshd:
    type: host
    url: local
    security: {{sshd_port: {free_port()}, ssh_password_auth: false}}
"""
    result, checks = run(project, env)
    assert result.returncode == 1, result.output
    assert "Traceback" not in result.output
    outcomes = {k: c["outcome"] for k, c in checks.items()}

    good = {k: v for k, v in outcomes.items() if k.endswith("[app-host]")}
    assert good == {f"{t}[app-host]": "PASS" for t in (
        "test_ssh_root_login", "test_ssh_password_auth", "test_ssh_ciphers", "test_ssh_macs",
        "test_shadow_not_world_readable", "test_no_world_writable")}, good
    assert notes(checks["test_ssh_ciphers[app-host]"])["read from"].startswith("sshd -T -f ")
    assert notes(checks["test_ssh_root_login[app-host]"])["PermitRootLogin"] in (
        "no", "prohibit-password")

    # sshd -T, as root: every bad setting is a FAIL that says which.
    expected = {
        "test_ssh_root_login[bad-local]": "PermitRootLogin = yes",
        "test_ssh_password_auth[bad-local]": "PasswordAuthentication = yes",
        "test_ssh_ciphers[bad-local]": "weak ciphers offered = aes256-cbc",
        "test_ssh_macs[bad-local]": "weak MACs offered = hmac-sha1",
        # The handshake, as a user: the same server offers the same algorithms and says it
        # takes passwords.
        "test_ssh_password_auth[bad-user]": "offers password authentication = True",
        "test_ssh_ciphers[bad-user]": "weak ciphers offered = aes256-cbc",
        "test_ssh_macs[bad-user]": "weak MACs offered = hmac-sha1",
        "test_no_world_writable[bad-local]":
            f"world-writable under {loose} = 2\n{clean}/gone exists = False",
    }
    for check, line in expected.items():
        assert outcomes[check] == "FAIL", (check, checks[check])
        assert failing(checks[check]) == line, check
    assert notes(checks["test_ssh_macs[bad-local]"])["read from"] == (
        f"sshd -T -f {bad_sshd['dir']}/sshd_config (pid "
        f"{notes(checks['test_ssh_macs[bad-local]'])['read from'].rsplit(' ', 1)[1]}")
    listed = notes(checks["test_no_world_writable[bad-local]"])[
        f"world-writable under {loose} (first 10)"]
    assert sorted(listed.split(", ")) == [f"{loose}/cache", f"{loose}/cache/model.pkl"]

    # What only root can read is a SKIP naming the grant, never a FAIL.
    for check, what in (("test_ssh_root_login[bad-user]", "PermitRootLogin of the sshd on port "
                         f"{bad_sshd['port']}"),
                        ("test_no_world_writable[bad-user]", f"every directory under "
                         f"{bad_sshd['dir']}/tree (1 refused")):
        assert outcomes[check] == "SKIP", (check, checks[check])
        assert what in checks[check]["message"], checks[check]["message"]
        assert "grant it: read" in checks[check]["message"]
    assert "connect as root" in checks["test_ssh_root_login[bad-user]"]["message"]

    # No sshd: a SKIP saying so; an opt-out: a SKIP saying where.
    assert outcomes["test_ssh_root_login[no-sshd]"] == "SKIP"
    assert "no sshd to check: nothing listens on port" in checks[
        "test_ssh_root_login[no-sshd]"]["message"]
    opted = checks["test_ssh_password_auth[no-sshd]"]
    assert opted["outcome"] == "SKIP"
    assert "opted out: targets.no-sshd.security.ssh_password_auth is false " \
           "(environments/hostsec.yaml:" in opted["message"]
    assert "declares no security.no_world_writable paths" in checks[
        "test_no_world_writable[no-sshd]"]["message"]
    assert outcomes["test_shadow_not_world_readable[bad-local]"] == "PASS"


@needs_root_sshd
def test_ssh_root_login_fault_turns_exactly_its_check_red(project: Project) -> None:
    env = """
settings: {timeout_s: 3}
sandbox: {sshd: {}}
targets:
  app-host:
    type: host
    url: ${SANDBOX_SSH_URL}
    ssh_identity_file: ${SANDBOX_SSH_KEY}
    known_hosts: ${SANDBOX_SSH_KNOWN_HOSTS}
    security: {permit_root_login: prohibit-password}
"""
    result, checks = run(project, env, "--sandbox-fault", "ssh-root-login")
    assert result.returncode == 1, result.output
    red = {k: c["outcome"] for k, c in checks.items() if c["outcome"] not in ("PASS", "SKIP")}
    assert red == {"test_ssh_root_login[app-host]": "FAIL"}
    assert failing(checks["test_ssh_root_login[app-host]"]) == "PermitRootLogin = yes"


# -- /etc/shadow readable by everyone, in a real container -------------------------------
@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    if shutil.which("dockerd") is None or static_busybox() is None or os.geteuid() != 0:
        pytest.skip("a private Docker engine needs root, dockerd and a static busybox "
                    "(apt-get install docker.io busybox-static)")
    yield from private_docker_engine()


def test_a_world_readable_shadow_fails(project: Project, engine: DockerEngine) -> None:
    container = engine.client().containers.run(
        f"{IMAGE}:{TAG}", ["/bin/sh", "-c", IDLE], name="loose-shadow", detach=True,
        network_mode="none")
    container.exec_run(["/bin/sh", "-c", "echo 'root:*:19000:0:99999:7:::' > /etc/shadow && "
                                         "chmod 0644 /etc/shadow"])
    env = f"""
settings: {{timeout_s: 3}}
targets:
  loose:
    type: host
    url: docker://loose-shadow
    docker_host: {engine.url}
  tidy:
    type: host
    url: docker://gogooku3-app
    docker_host: {engine.url}
"""
    result, checks = run(project, env, "-k", "shadow")
    assert result.returncode == 1, result.output
    loose = checks["test_shadow_not_world_readable[loose]"]
    assert loose["outcome"] == "FAIL"
    assert failing(loose) == "/etc/shadow readable by others = True"
    assert notes(loose)["/etc/shadow mode"] == "0644"
    tidy = checks["test_shadow_not_world_readable[tidy]"]
    assert (tidy["outcome"], tidy["message"]) == ("SKIP", "tidy: no /etc/shadow on this host")
