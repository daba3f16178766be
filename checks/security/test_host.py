"""Host security: dev-sec's ssh-baseline and linux-baseline, for every host target.

The sshd on the host's ``sshd_port`` is judged by its effective configuration (``sshd -T``
with the daemon's own options, where we are root on the host) or else by what it offers any
client (its key exchange and the authentication methods it names): no root login, no
password authentication, no CBC cipher, no SHA-1 MAC. A host with no sshd there is a SKIP
that says so, never a PASS; what only root can read is a SKIP naming that grant.
``/etc/shadow`` is not readable by others; the trees listed in
``security.no_world_writable`` hold no world-writable file (ts-forecast's monthly review).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.errors import MissingPrivilege
from opsverify.evidence import EvidenceLog
from opsverify.targets.sshd import ROOT_LOGIN_ORDER

if TYPE_CHECKING:
    from opsverify.targets.host import FileState, HostClient, SshdConfig, WorldWritable

ROOT_GRANT = ("read it as root: connect as root (ssh://root@host), or run the suite as root "
              "for a local host (sshd -T reads the host keys, which only root may)")


# One read of the sshd, shared by its four checks.
@probe
def security_host_sshd(host: HostClient) -> SshdConfig:
    return host.sshd_config()


@probe
def security_host_shadow(host: HostClient) -> FileState:
    return host.file("/etc/shadow")


@probe
def security_host_world_writable(host: HostClient) -> tuple[WorldWritable, ...]:
    return tuple(host.world_writable(path) for path in host.spec.security.no_world_writable)


def _sshd(host: HostClient, sshd: SshdConfig, evidence: EvidenceLog) -> None:
    """SKIP when there is no sshd to judge; otherwise say how it was read."""
    if not sshd.found:
        pytest.skip(f"{host.name}: no sshd to check: {sshd.why_not_found} "
                    f"(security.sshd_port names another)")
    evidence.note("read from", sshd.source)
    if sshd.why_partial:
        evidence.note("not from sshd -T", sshd.why_partial)


def _needs_config(host: HostClient, sshd: SshdConfig, what: str) -> None:
    if sshd.settings:
        return
    if sshd.needs_root:
        raise MissingPrivilege(host.name, f"{what} of the sshd on port {sshd.port}", ROOT_GRANT)
    pytest.skip(f"{host.name}: cannot read {what} of the sshd on port {sshd.port}: "
                f"{sshd.why_partial}")


@pytest.mark.monthly
@pytest.mark.security_check("ssh_root_login")
def test_ssh_root_login(host: HostClient, security_host_sshd: SshdConfig,
                        evidence: EvidenceLog) -> None:
    """``PermitRootLogin no``, or at most what ``security.permit_root_login`` allows."""
    sshd = security_host_sshd
    _sshd(host, sshd, evidence)
    # No client can see PermitRootLogin: only the server's own configuration says it.
    _needs_config(host, sshd, "PermitRootLogin")
    measured = sshd.setting("permitrootlogin") or "yes"
    measured = "prohibit-password" if measured == "without-password" else measured
    allowed = host.spec.security.permit_root_login
    source = (evidence.source_of("targets", host.name, "security", "permit_root_login")
              if "permit_root_login" in host.spec.security.model_fields_set else "check default")
    accepted = [v for v, rank in ROOT_LOGIN_ORDER.items()
                if rank <= ROOT_LOGIN_ORDER[allowed] and v != "without-password"]
    evidence.note("PermitRootLogin accepted", " or ".join(accepted))
    ok = ROOT_LOGIN_ORDER.get(measured, 3) <= ROOT_LOGIN_ORDER[allowed]
    evidence.expect("PermitRootLogin", measured, equals=measured if ok else allowed,
                    source=source)


@pytest.mark.monthly
@pytest.mark.security_check("ssh_password_auth")
def test_ssh_password_auth(host: HostClient, security_host_sshd: SshdConfig,
                           evidence: EvidenceLog) -> None:
    """Passwords are not accepted: ``PasswordAuthentication no`` (and, where PAM prompts,
    ``KbdInteractiveAuthentication no``), or the server does not offer ``password``."""
    sshd = security_host_sshd
    _sshd(host, sshd, evidence)
    if sshd.settings:
        evidence.expect("PasswordAuthentication", sshd.setting("passwordauthentication"),
                        equals="no")
        if sshd.setting("usepam") == "yes":
            evidence.expect("KbdInteractiveAuthentication (PAM may prompt for a password)",
                            sshd.setting("kbdinteractiveauthentication"), equals="no")
        return
    if sshd.auth_methods is None:
        _needs_config(host, sshd, "PasswordAuthentication")
        return
    methods = sshd.auth_methods
    evidence.note("authentication methods offered", ", ".join(methods) or "none")
    evidence.expect("offers authentication without credentials", "none" in methods,
                    equals=False)
    evidence.expect("offers password authentication", "password" in methods, equals=False)


@pytest.mark.monthly
@pytest.mark.security_check("ssh_ciphers")
def test_ssh_ciphers(host: HostClient, security_host_sshd: SshdConfig,
                     evidence: EvidenceLog) -> None:
    """No CBC-mode (or RC4) cipher is offered: only CTR, GCM and ChaCha20-Poly1305."""
    sshd = security_host_sshd
    _sshd(host, sshd, evidence)
    weak = [c for c in sshd.ciphers if c.endswith("-cbc") or "cbc@" in c
            or c.startswith("arcfour")]
    evidence.note("ciphers", ", ".join(sshd.ciphers))
    evidence.expect("weak ciphers offered", ", ".join(weak) or "none", equals="none")


@pytest.mark.monthly
@pytest.mark.security_check("ssh_macs")
def test_ssh_macs(host: HostClient, security_host_sshd: SshdConfig,
                  evidence: EvidenceLog) -> None:
    """No SHA-1 (or MD5) MAC is offered: only SHA-2 and UMAC-128."""
    sshd = security_host_sshd
    _sshd(host, sshd, evidence)
    weak = [m for m in sshd.macs if "-sha1" in m or "-md5" in m]
    evidence.note("MACs", ", ".join(sshd.macs))
    evidence.expect("weak MACs offered", ", ".join(weak) or "none", equals="none")


@pytest.mark.monthly
@pytest.mark.security_check("shadow")
def test_shadow_not_world_readable(host: HostClient, security_host_shadow: FileState,
                                   evidence: EvidenceLog) -> None:
    """``/etc/shadow`` (password hashes) is neither readable nor writable by others."""
    shadow = security_host_shadow
    if not shadow.exists:
        pytest.skip(f"{host.name}: no /etc/shadow on this host")
    evidence.note("/etc/shadow owner", f"{shadow.owner}:{shadow.group}")
    evidence.note("/etc/shadow mode", shadow.mode)
    others = int(shadow.mode, 8) & 0o007
    evidence.expect("/etc/shadow readable by others", bool(others & 0o4), equals=False)
    evidence.expect("/etc/shadow writable by others", bool(others & 0o2), equals=False)


@pytest.mark.monthly
@pytest.mark.security_check("no_world_writable")
def test_no_world_writable(host: HostClient,
                           security_host_world_writable: tuple[WorldWritable, ...],
                           evidence: EvidenceLog) -> None:
    """The trees declared in ``security.no_world_writable`` hold no world-writable file,
    and no world-writable directory without the sticky bit."""
    if not host.spec.security.no_world_writable:
        pytest.skip(f"{host.name}: declares no security.no_world_writable paths")
    for index, found in enumerate(security_host_world_writable):
        where = evidence.source_of("targets", host.name, "security", "no_world_writable", index)
        if not found.exists:
            evidence.expect(f"{found.path} exists", False, equals=True, source=where)
            continue
        count = f"{len(found.entries)}{'+' if found.truncated else ''}"
        evidence.expect(f"world-writable under {found.path}", count, equals="0", source=where)
        if found.entries:
            evidence.note(f"world-writable under {found.path} (first 10)",
                          ", ".join(found.entries[:10]))
        if found.unreadable and not found.entries:
            raise MissingPrivilege(host.name, f"every directory under {found.path} "
                                   f"({len(found.unreadable)} refused, e.g. "
                                   f"{found.unreadable[0]})",
                                   "read as root, or as a user who may enter them")
