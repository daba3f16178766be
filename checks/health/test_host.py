"""Host health: the runbooks' ``systemctl status``, ``ss -ltn``, ``ps``, ``ls -l`` and their
own read commands, on the local machine or over verified ssh (testinfra)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from fixtures.probes import probe
from opsverify.evidence import EvidenceLog

if TYPE_CHECKING:
    from opsverify.targets.host import (
        CommandCheck,
        CommandOutcome,
        FileCheck,
        FileState,
        HostClient,
        PortCheck,
        ProcessCheck,
        ProcessInfo,
        ServiceCheck,
        ServiceState,
    )

# Every read here is one declared service, socket, process match, path or command of a host,
# prefetched in the probe pool (the client reads one of them at a time: its process
# listings never count our own commands).


@probe
def host_service_state(host: HostClient, host_service: ServiceCheck) -> ServiceState:
    return host.service(host_service)


@probe
def host_port_listening(host: HostClient, host_port: PortCheck) -> bool:
    return host.listening(host_port.listen)


@probe
def host_processes_found(host: HostClient,
                         host_process: ProcessCheck) -> tuple[ProcessInfo, ...]:
    return tuple(host.processes(comm=host_process.comm, args=host_process.args,
                                user=host_process.user))


@probe
def host_file_state(host: HostClient, host_file: FileCheck) -> FileState:
    return host.file(host_file.path)


@probe
def host_command_outcome(host: HostClient, command_check: CommandCheck) -> CommandOutcome:
    return host.run(command_check.command)


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_service_running(host: HostClient, host_service: ServiceCheck,
                         host_service_state: ServiceState, evidence: EvidenceLog) -> None:
    """A declared service is running, as the host's init system reports it."""
    where = evidence.source_of("targets", host.name, "services",
                               host.spec.services.index(host_service))
    state = host_service_state
    evidence.note("judged by", state.judged_by)
    if not state.known:
        evidence.expect(f"service {state.name} installed", False, equals=True, source=where)
        return
    evidence.expect(f"service {state.name} running", state.running, equals=True, source=where)
    if state.pids:
        evidence.note("pids", ", ".join(map(str, state.pids[:10])))


@pytest.mark.daily
@pytest.mark.deploy_gate
def test_port_listening(host: HostClient, host_port: PortCheck, host_port_listening: bool,
                        evidence: EvidenceLog) -> None:
    """A declared socket is listening on the host (what ``ss -l`` shows)."""
    where = evidence.source_of("targets", host.name, "ports", host.spec.ports.index(host_port))
    evidence.expect(f"{host_port.label} listening", host_port_listening,
                    equals=True, source=where)


@pytest.mark.daily
def test_process_present(host: HostClient, host_process: ProcessCheck,
                         host_processes_found: tuple[ProcessInfo, ...],
                         evidence: EvidenceLog) -> None:
    """At least ``min_count`` processes match the declaration."""
    where = evidence.source_of("targets", host.name, "processes",
                               host.spec.processes.index(host_process))
    found = host_processes_found
    wanted = ", ".join(f"{k}={v!r}" for k, v in (("comm", host_process.comm),
                                                 ("args", host_process.args),
                                                 ("user", host_process.user)) if v)
    evidence.note("matching", wanted)
    evidence.expect(f"processes {host_process.name}", len(found),
                    at_least=host_process.min_count, source=where)
    if found:
        evidence.note("pids", ", ".join(str(p.pid) for p in found[:10]))


@pytest.mark.daily
def test_file_present(host: HostClient, host_file: FileCheck, host_file_state: FileState,
                      evidence: EvidenceLog) -> None:
    """A declared path exists, with the declared kind, mode and ownership."""
    where = evidence.source_of("targets", host.name, "files", host.spec.files.index(host_file))
    state = host_file_state
    evidence.expect(f"{host_file.label} exists", state.exists, equals=True, source=where)
    if not state.exists:
        return
    for what, expected, measured in (("kind", host_file.kind, state.kind),
                                     ("mode", host_file.mode, state.mode),
                                     ("owner", host_file.owner, state.owner),
                                     ("group", host_file.group, state.group)):
        if expected is not None:
            evidence.expect(f"{host_file.label} {what}", measured, equals=expected,
                            source=where)


def test_command_check(host: HostClient, command_check: CommandCheck,
                       host_command_outcome: CommandOutcome, evidence: EvidenceLog) -> None:
    """A read command declared in the environment file exits and prints as declared.

    Cadence and category markers come from the declaration.
    """
    where = evidence.source_of("targets", host.name, "command_checks",
                               host.spec.command_checks.index(command_check))
    result = host_command_outcome
    evidence.note("took", round(result.elapsed_s * 1000), unit="ms")
    evidence.expect(f"{command_check.name} exit status", result.exit_status,
                    equals=command_check.expect_exit, source=where)
    if result.exit_status != command_check.expect_exit and result.stderr.strip():
        evidence.note("stderr", _excerpt(result.stderr))
    if command_check.expect_output is not None:
        evidence.note("stdout", _excerpt(result.stdout))
        matched = re.search(command_check.expect_output, result.stdout) is not None
        evidence.expect(f"{command_check.name} output matches /{command_check.expect_output}/",
                        matched, equals=True, source=where)


def _excerpt(text: str, limit: int = 200) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"
